package metrics

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// rtFake is a Source with response times, fixed before it is scraped.
type rtFake struct {
	*fakeSource
	rts map[datapath.VIP]map[netip.Addr]map[string]time.Duration
}

func (f rtFake) BackendResponseTimes() map[datapath.VIP]map[netip.Addr]map[string]time.Duration {
	return f.rts
}

// TestBackendResponseSeconds: a series per backend and measured source, in
// seconds; none from a Source without response times.
func TestBackendResponseSeconds(t *testing.T) {
	web := datapath.VIP{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: datapath.TCP}
	m := New(rtFake{fakeSource: newFake(), rts: map[datapath.VIP]map[netip.Addr]map[string]time.Duration{web: {
		netip.MustParseAddr("198.18.0.11"): {"passive": 1500 * time.Microsecond, "active": 20 * time.Millisecond},
		netip.MustParseAddr("198.18.0.12"): {},
	}}}, "v1", "c")
	want := `
# HELP fulcrum_backend_response_seconds A backend's response time, an EWMA folded every 100 ms, by source: passive (the fast path's time from a flow's SYN to the client's first ACK, which includes the backend's SYN-ACK) or active (the health probe's duration). Only VIPs with response_time, and only sources with a sample.
# TYPE fulcrum_backend_response_seconds gauge
fulcrum_backend_response_seconds{backend="198.18.0.11",source="active",vip="tcp/203.0.113.10:80"} 0.02
fulcrum_backend_response_seconds{backend="198.18.0.11",source="passive",vip="tcp/203.0.113.10:80"} 0.0015
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "fulcrum_backend_response_seconds"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(New(newFake(), "v1", "c").Registry(), "fulcrum_backend_response_seconds"); err != nil || n != 0 {
		t.Errorf("a Source without response times: %d series (%v), want none", n, err)
	}
}

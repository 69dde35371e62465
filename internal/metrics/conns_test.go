package metrics

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// connFake is a Source with connection counts.
type connFake struct {
	*fakeSource
	counts map[datapath.VIP]map[netip.Addr]datapath.ConnCount
}

func (f *connFake) BackendConns() map[datapath.VIP]map[netip.Addr]datapath.ConnCount {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts
}

// TestBackendConnections: an active and an inactive series per backend
// counted; none before the first count, and none from a Source without
// counts.
func TestBackendConnections(t *testing.T) {
	web := datapath.VIP{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: datapath.TCP}
	f := &connFake{fakeSource: newFake()}
	m := New(f, "v1", "c")
	if n, err := testutil.GatherAndCount(m.Registry(), "fulcrum_backend_connections"); err != nil || n != 0 {
		t.Errorf("before the first count: %d series (%v), want none", n, err)
	}
	f.set(func(*fakeSource) {
		f.counts = map[datapath.VIP]map[netip.Addr]datapath.ConnCount{web: {
			netip.MustParseAddr("198.18.0.11"): {Active: 300, Inactive: 2},
			netip.MustParseAddr("198.18.0.12"): {Inactive: 7},
		}}
	})
	want := `
# HELP fulcrum_backend_connections Connection entries naming a backend of a VIP, by IPVS's classes: active (established) and inactive (syn, fin, closed). Kept by the fast path as entries come, change state and go, and corrected by a walk of the connection table every 2 s or more for entries that expired in place.
# TYPE fulcrum_backend_connections gauge
fulcrum_backend_connections{backend="198.18.0.11",state="active",vip="tcp/203.0.113.10:80"} 300
fulcrum_backend_connections{backend="198.18.0.11",state="inactive",vip="tcp/203.0.113.10:80"} 2
fulcrum_backend_connections{backend="198.18.0.12",state="active",vip="tcp/203.0.113.10:80"} 0
fulcrum_backend_connections{backend="198.18.0.12",state="inactive",vip="tcp/203.0.113.10:80"} 7
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "fulcrum_backend_connections"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(New(newFake(), "v1", "c").Registry(), "fulcrum_backend_connections"); err != nil || n != 0 {
		t.Errorf("a Source without counts: %d series (%v), want none", n, err)
	}
}

package metrics

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// bgpFake is a Source with BGP.
type bgpFake struct {
	*fakeSource
	up        map[netip.Addr]bool
	announced int
	enabled   bool
}

func (f *bgpFake) BGPSessions() (map[netip.Addr]bool, int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up, f.announced, f.enabled
}

// TestBGP: one session series per peer and the announced count, while
// BGP is configured; none without it, and none from a Source without BGP.
func TestBGP(t *testing.T) {
	f := &bgpFake{fakeSource: newFake(), enabled: true, announced: 3, up: map[netip.Addr]bool{
		netip.MustParseAddr("198.18.0.1"): true, netip.MustParseAddr("2001:db8:2::1"): false,
	}}
	m := New(f, "v1", "c")
	want := `
# HELP fulcrum_bgp_announced_prefixes VIP prefixes this node announces now; the others are withdrawn (GET /v1/bgp says why).
# TYPE fulcrum_bgp_announced_prefixes gauge
fulcrum_bgp_announced_prefixes 3
# HELP fulcrum_bgp_session_up 1 while the BGP session with the peer is established, 0 otherwise.
# TYPE fulcrum_bgp_session_up gauge
fulcrum_bgp_session_up{peer="198.18.0.1"} 1
fulcrum_bgp_session_up{peer="2001:db8:2::1"} 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "fulcrum_bgp_session_up", "fulcrum_bgp_announced_prefixes"); err != nil {
		t.Error(err)
	}
	f.set(func(*fakeSource) { f.enabled = false })
	if n, err := testutil.GatherAndCount(m.Registry(), "fulcrum_bgp_session_up", "fulcrum_bgp_announced_prefixes"); err != nil || n != 0 {
		t.Errorf("without bgp: %d series (%v), want none", n, err)
	}
	if n, err := testutil.GatherAndCount(New(newFake(), "v1", "c").Registry(), "fulcrum_bgp_session_up"); err != nil || n != 0 {
		t.Errorf("a Source without BGP: %d series (%v), want none", n, err)
	}
}

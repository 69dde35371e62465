package daemon

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/reconcile"
)

// TestDesiredRoutes: which VIP addresses are announced, and why the others
// are not.
func TestDesiredRoutes(t *testing.T) {
	a1, a2, a3, a4 := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("203.0.113.3"), netip.MustParseAddr("2001:db8:ffff::4")
	a5 := netip.MustParseAddr("203.0.113.5")
	b1, b2 := netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12")
	check := &config.HealthCheck{Type: "tcp"}
	openCheck := &config.HealthCheck{Type: "tcp", AllDown: config.AllDownFailOpen}
	vip := func(a netip.Addr, port uint16, hc *config.HealthCheck, weights ...uint32) config.VIP {
		v := config.VIP{Address: a, Port: port, Protocol: "tcp", HealthCheck: hc}
		for i, w := range weights {
			v.Backends = append(v.Backends, config.Backend{Address: []netip.Addr{b1, b2}[i], Weight: w, HealthCheck: hc})
		}
		return v
	}
	vips := []config.VIP{
		vip(a1, 80, check, 1, 1),  // b1 down, b2 up: serves
		vip(a1, 443, check, 1),    // b1 down: does not, but :80 keeps a1 up
		vip(a2, 80, check, 1, 0),  // b1 down, b2 weight 0: none
		vip(a3, 80, openCheck, 1), // b1 down, fails open: serves
		vip(a4, 53, nil),          // no backends
		// b1 down, b2 up but weight 0: not all are down, so it does not
		// fail open; its ring holds b2 alone, which takes no new flows.
		vip(a5, 80, openCheck, 1, 0),
	}
	health := map[datapath.VIP]map[netip.Addr]reconcile.Health{}
	for _, v := range vips {
		health[reconcile.Key(v)] = map[netip.Addr]reconcile.Health{b1: reconcile.Down, b2: reconcile.Up}
	}
	med := uint32(7)
	c := &config.BGP{Communities: []config.Community{65000<<16 | 1}, VIPs: []config.BGPVIP{{Address: a3, MED: &med}}}

	prefixes, routes := desiredRoutes(vips, health, c, false, false)
	got := map[netip.Addr]string{}
	for _, p := range prefixes {
		got[p.Prefix.Addr()] = p.Reason
		if p.Announced != (p.Reason == "") {
			t.Errorf("%s: announced %v with reason %q", p.Prefix, p.Announced, p.Reason)
		}
	}
	want := map[netip.Addr]string{a1: "", a2: reasonNoBackend, a3: "", a4: reasonNoBackend, a5: reasonNoBackend}
	if len(got) != len(want) {
		t.Fatalf("prefixes %v, want %v", got, want)
	}
	for a, r := range want {
		if got[a] != r {
			t.Errorf("%s: reason %q, want %q", a, got[a], r)
		}
	}
	if len(routes) != 2 {
		t.Fatalf("routes %v, want a1 and a3", routes)
	}
	for _, r := range routes {
		if r.Prefix.Bits() != 32 || len(r.Communities) != 1 || (r.Prefix.Addr() == a3) != (r.MED != nil) {
			t.Errorf("route %+v", r)
		}
	}
	if prefixes[0].Prefix.Addr() != a1 || len(prefixes[0].VIPs) != 2 {
		t.Errorf("first prefix %+v, want a1 with its two VIPs", prefixes[0])
	}
	if p := prefixes[4]; p.Prefix.Bits() != 128 {
		t.Errorf("IPv6 prefix %s, want a /128", p.Prefix)
	}

	for _, tc := range []struct {
		drained, sick bool
		reason        string
	}{{true, false, reasonDrained}, {false, true, reasonSick}, {true, true, reasonDrained}} {
		prefixes, routes := desiredRoutes(vips, health, c, tc.drained, tc.sick)
		if len(routes) != 0 {
			t.Errorf("drained %v sick %v: routes %v, want none", tc.drained, tc.sick, routes)
		}
		for _, p := range prefixes {
			if p.Reason != tc.reason {
				t.Errorf("drained %v sick %v: %s reason %q, want %q", tc.drained, tc.sick, p.Prefix, p.Reason, tc.reason)
			}
		}
	}
}

// TestBGPReload: a reload may change the path attributes (they are applied
// at once), not the speaker's identity or sessions.
func TestBGPReload(t *testing.T) {
	base := func() *config.Config {
		return &config.Config{Interfaces: []config.Interface{{Name: "eth0"}}, BGP: &config.BGP{
			ASN: 65010, RouterID: netip.MustParseAddr("198.18.0.2"),
			Peers: []config.BGPPeer{{Address: netip.MustParseAddr("198.18.0.1"), ASN: 65000}},
		}}
	}
	med := uint32(5)
	attrs := base()
	attrs.BGP.Communities, attrs.BGP.MED = []config.Community{1}, &med
	attrs.BGP.VIPs = []config.BGPVIP{{Address: netip.MustParseAddr("203.0.113.10"), MED: &med}}
	if err := restartOnly(base(), attrs); err != nil {
		t.Errorf("changing communities, med and vips: %v", err)
	}
	asn := base()
	asn.BGP.ASN = 65011
	peers := base()
	peers.BGP.Peers[0].ASN = 65001
	for name, c := range map[string]*config.Config{"asn": asn, "a peer": peers, "removing bgp": {Interfaces: base().Interfaces}} {
		if err := restartOnly(base(), c); err == nil || !strings.Contains(err.Error(), "bgp (all but its communities, med and vips) cannot change on reload") {
			t.Errorf("changing %s: %v", name, err)
		}
	}
}

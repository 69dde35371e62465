package main

import (
	"net/netip"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func testBGP() api.BGP {
	med := uint32(10)
	return api.BGP{
		Enabled: true, ASN: 65010, RouterID: netip.MustParseAddr("198.18.0.2"),
		Peers: []api.BGPPeer{
			{Address: netip.MustParseAddr("198.18.0.1"), ASN: 65000, State: "established", Since: testNow.Add(-3 * time.Hour),
				HoldTime: 9 * time.Second, Advertised: 1, UpdatesSent: 4, MD5: true},
			{Address: netip.MustParseAddr("2001:db8:2::1"), ASN: 65000, State: "active", Multihop: 2},
		},
		Prefixes: []api.BGPPrefix{
			{Prefix: netip.MustParsePrefix("203.0.113.10/32"), Announced: true, VIPs: []string{"tcp/203.0.113.10:443", "tcp/203.0.113.10:80"},
				Communities: []string{"65000:100", "no-export"}, MED: &med},
			{Prefix: netip.MustParsePrefix("2001:db8:ffff::10/128"), Reason: "no healthy backend", VIPs: []string{"udp/[2001:db8:ffff::10]:53"}},
		},
		Announced: 1, VIPPackets: 1234,
	}
}

func TestBGPShow(t *testing.T) {
	d := startDaemon(t)
	d.fake.update(func(f *fakeController) { f.bgp = testBGP() })
	d.run(t, "bgp").checkGolden(t, "bgp.golden")
	checkJSON(t, d.run(t, "-o", "json", "bgp"), testBGP())

	d.fake.update(func(f *fakeController) {
		f.bgp.Sick = []string{"interface eth0 is down"}
		f.bgp.Prefixes, f.bgp.Announced = nil, 0
		f.bgp.Peers = f.bgp.Peers[:0]
	})
	d.run(t, "bgp").checkGolden(t, "bgp_sick.golden")

	d.fake.update(func(f *fakeController) { f.bgp = api.BGP{} })
	d.run(t, "bgp").check(t, 0, "bgp: not configured (no bgp section)\n", "")
	d.run(t, "bgp", "extra").check(t, 2, "", "fulcrum: bgp: unexpected argument \"extra\" (usage: fulcrum bgp)\n")
}

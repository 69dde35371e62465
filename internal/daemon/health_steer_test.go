package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/health"
	"github.com/fulcrum-lb/fulcrum/internal/healthsteer"
	"github.com/fulcrum-lb/fulcrum/internal/neighbor"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// TestSteeringEntry works out steering entries from the routes and
// neighbours of a namespace "lb" whose VIP route and remote backends go
// via "gw": a dsr backend on the segment gets its own MAC (resolved or
// configured), an ipip backend behind the gateway the gateway's MAC and
// this host's address as outer source; a dsr backend behind a gateway, a
// VIP held by this host and a VIP routed off the configured interfaces
// are refused with errors that say so.
func TestSteeringEntry(t *testing.T) {
	require.Netns(t)
	env := testenv.NewEnv(t)
	lb, err := env.NewNamespace("lb")
	if err != nil {
		t.Fatal(err)
	}
	gw, err := env.NewNamespace("gw")
	if err != nil {
		t.Fatal(err)
	}
	lbMAC := net.HardwareAddr{2, 0xfc, 2, 0, 0, 2}
	gwMAC := net.HardwareAddr{2, 0xfc, 2, 0, 0, 1}
	backMAC := net.HardwareAddr{2, 0xfc, 2, 0, 0, 0x0b}
	if err := testenv.VethPair(lb, gw, "eth0", "eth0", testenv.WithMACs(lbMAC, gwMAC)); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	for _, err := range []error{
		lb.AddAddr("eth0", p("198.18.0.2/24")),
		lb.AddAddr("eth0", p("2001:db8:2::2/64")),
		gw.AddAddr("eth0", p("198.18.0.1/24")),
		gw.AddAddr("eth0", p("2001:db8:2::1/64")),
		lb.AddAddr("lo", p("203.0.113.20/32")), // a VIP this host holds
		lb.AddRoute(p("203.0.113.0/24"), a("198.18.0.1")),
		lb.AddRoute(p("2001:db8:ffff::/64"), a("2001:db8:2::1")),
		lb.AddRoute(p("198.18.2.0/24"), a("198.18.0.1")),
		lb.AddRoute(p("2001:db8:3::/64"), a("2001:db8:2::1")),
		lb.AddNeighbor("eth0", a("198.18.0.1"), gwMAC),
		lb.AddNeighbor("eth0", a("2001:db8:2::1"), gwMAC),
		lb.AddNeighbor("eth0", a("198.18.0.11"), backMAC),
		lb.WaitAddrs(5e9),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	vip := func(addr string) datapath.VIP { return datapath.VIP{Addr: a(addr), Port: 80, Proto: datapath.TCP} }
	configured := net.HardwareAddr{2, 0xaa, 0, 0, 0, 1}
	cases := []struct {
		name   string
		t      health.Target
		noIfc  bool // the steering has no configured interface
		want   healthsteer.Target
		errHas string
	}{
		{name: "dsr, MAC resolved", t: health.Target{VIP: vip("203.0.113.10"), Backend: a("198.18.0.11"), Mode: "dsr"},
			want: healthsteer.Target{Mode: healthsteer.DSR, SrcMAC: lbMAC, DstMAC: backMAC}},
		{name: "dsr, MAC configured", t: health.Target{VIP: vip("203.0.113.10"), Backend: a("198.18.0.11"), Mode: "dsr", MAC: configured},
			want: healthsteer.Target{Mode: healthsteer.DSR, SrcMAC: lbMAC, DstMAC: configured}},
		{name: "ipip v4 behind the gateway", t: health.Target{VIP: vip("203.0.113.10"), Backend: a("198.18.2.11"), Mode: "ipip"},
			want: healthsteer.Target{Mode: healthsteer.IPIP, SrcMAC: lbMAC, DstMAC: gwMAC, Backend: a("198.18.2.11"), Source: a("198.18.0.2")}},
		{name: "ipip v6 behind the gateway", t: health.Target{VIP: vip("2001:db8:ffff::10"), Backend: a("2001:db8:3::11"), Mode: "ipip"},
			want: healthsteer.Target{Mode: healthsteer.IPIP, SrcMAC: lbMAC, DstMAC: gwMAC, Backend: a("2001:db8:3::11"), Source: a("2001:db8:2::2")}},
		{name: "dsr behind a gateway", t: health.Target{VIP: vip("203.0.113.10"), Backend: a("198.18.2.11"), Mode: "dsr"},
			errHas: "not on an attached network"},
		{name: "VIP held by this host", t: health.Target{VIP: vip("203.0.113.20"), Backend: a("198.18.0.11"), Mode: "dsr"},
			errHas: "local address of this host"},
		{name: "VIP routed off the configured interfaces", t: health.Target{VIP: vip("203.0.113.10"), Backend: a("198.18.0.11"), Mode: "dsr"},
			noIfc: true, errHas: "not by a configured interface"},
	}
	if err := lb.Do(func() error {
		res, err := neighbor.New()
		if err != nil {
			return err
		}
		defer res.Close()
		eth0, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		for _, c := range cases {
			s := &steering{log: slog.New(slog.DiscardHandler), res: res, ifindexes: []int{eth0.Index}}
			if c.noIfc {
				s.ifindexes = nil
			}
			got, err := s.entry(context.Background(), c.t)
			if c.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), c.errHas) {
					t.Errorf("%s: got %+v, %v; want an error containing %q", c.name, got, err, c.errHas)
				}
				continue
			}
			c.want.Ifindex = eth0.Index
			if err != nil || got.Mode != c.want.Mode || got.Ifindex != c.want.Ifindex || got.SrcMAC.String() != c.want.SrcMAC.String() ||
				got.DstMAC.String() != c.want.DstMAC.String() || got.Backend != c.want.Backend || got.Source != c.want.Source {
				t.Errorf("%s: got %+v, %v; want %+v", c.name, got, err, c.want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

package testenv

import (
	"strings"
	"testing"
	"time"
)

func TestAddLBRange(t *testing.T) {
	topo := &Topology{}
	for _, n := range []int{0, 1, 2, MaxLBs + 1} {
		if _, err := topo.AddLB(n); err == nil || !strings.Contains(err.Error(), "want 3..8") {
			t.Errorf("AddLB(%d): %v", n, err)
		}
	}
	if got := LBIPv4(3).String() + " " + LBIPv6(3).String(); got != "198.18.0.4 2001:db8:2::4" {
		t.Errorf("lb3's addresses %s", got)
	}
	if last := LBIPv4(MaxLBs); !last.Less(BackendIPv4(1)) {
		t.Errorf("lb%d at %s reaches the backends (%s)", MaxLBs, last, BackendIPv4(1))
	}
}

// TestRouterConfigs: the generated BIRD and FRR configurations carry every
// neighbour in its family, the password and the timers.
func TestRouterConfigs(t *testing.T) {
	cfg := RouterBGP{ASN: 65000, Neighbors: []BGPNeighbor{
		{Addr: LBIPv4(1), ASN: 65010, Password: "pw"}, {Addr: LBIPv6(1), ASN: 65010},
	}, HoldTime: 9 * time.Second}
	data := routerTemplate{RouterBGP: cfg, RouterID: RouterIPv4, Dir: "/d", Hold: 9, Keepalive: 3}
	for name, want := range map[string][]string{
		"bird": {"merge paths on", "neighbor 198.18.0.2 as 65010;", `password "pw";`, "hold time 9;", "neighbor 2001:db8:2::2 as 65010;\n\thold time 9;\n\tconnect retry time 1;\n\terror wait time 1, 5;\n\tipv6 { import all; export none; };"},
		"frr":  {"maximum-paths 16", "neighbor 198.18.0.2 password pw", "neighbor 198.18.0.2 timers 3 9", "address-family ipv6 unicast\n  maximum-paths 16\n  neighbor 2001:db8:2::2 activate", "neighbor 198.18.0.2 route-map NONE out"},
	} {
		tmpl := birdConfig
		if name == "frr" {
			tmpl = frrConfig
		}
		var sb strings.Builder
		if err := tmpl.Execute(&sb, data); err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(sb.String(), w) {
				t.Errorf("%s config lacks %q:\n%s", name, w, sb.String())
			}
		}
	}
}

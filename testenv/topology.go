package testenv

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// Interface names of the canonical topology.
const (
	MainIface         = "eth0" // every host's main interface; the router's on the switch segment
	RouterClientIface = "eth1" // the router's interface towards the client
	BridgeName        = "br0"  // the bridge in namespace sw
	MaxBackends       = 244    // 198.18.0.(10+i) must stay below .255
)

// Addressing plan of the canonical topology (see the package documentation).
var (
	ClientNet4 = netip.MustParsePrefix("198.19.1.0/24")
	ClientNet6 = netip.MustParsePrefix("2001:db8:1::/64")
	SwitchNet4 = netip.MustParsePrefix("198.18.0.0/24")
	SwitchNet6 = netip.MustParsePrefix("2001:db8:2::/64")
	VIPNet4    = netip.MustParsePrefix("203.0.113.0/24")
	VIPNet6    = netip.MustParsePrefix("2001:db8:ffff::/64")

	ClientIPv4       = netip.MustParseAddr("198.19.1.2")
	ClientIPv6       = netip.MustParseAddr("2001:db8:1::2")
	RouterClientIPv4 = netip.MustParseAddr("198.19.1.1")
	RouterClientIPv6 = netip.MustParseAddr("2001:db8:1::1")
	RouterIPv4       = netip.MustParseAddr("198.18.0.1")
	RouterIPv6       = netip.MustParseAddr("2001:db8:2::1")
	LB1IPv4          = netip.MustParseAddr("198.18.0.2")
	LB1IPv6          = netip.MustParseAddr("2001:db8:2::2")
	LB2IPv4          = netip.MustParseAddr("198.18.0.3")
	LB2IPv6          = netip.MustParseAddr("2001:db8:2::3")
)

// BackendIPv4 is backend i's address (i from 1): 198.18.0.(10+i).
func BackendIPv4(i int) netip.Addr { return switchIPv4(10 + i) }

// BackendIPv6 is backend i's address (i from 1): 2001:db8:2::(10+i), the
// decimal digits of 10+i written as the last hex group (backend1 = ::11).
func BackendIPv6(i int) netip.Addr { return switchIPv6(10 + i) }

func switchIPv4(octet int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, 0, byte(octet)})
}

func switchIPv6(octet int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:2::%d", octet))
}

// hostMAC is 02:fc:SS:00:00:HH (SS = segment, HH = IPv4 last octet).
func hostMAC(segment, octet byte) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xfc, segment, 0, 0, octet}
}

// Options shape the canonical topology.
type Options struct {
	Backends int          // number of backends; 0 means 3
	SecondLB bool         // add lb2 (198.18.0.3) on the switch segment
	VIPs     []netip.Addr // put on every backend's lo; must lie in VIPNet4 or VIPNet6
}

// Topology is the canonical topology. Each Host's Iface is "eth0" with the
// addresses of the plan; the router's Host describes its switch side.
type Topology struct {
	Prefix                           string
	Client, Router, Switch, LB1, LB2 *Host // LB2 is nil unless Options.SecondLB
	Backends                         []*Host
	VIPs                             []netip.Addr
	Env                              *Env // the namespaces, for adding more
}

// NewCanonical builds the canonical topology for a test and registers its
// removal with tb.Cleanup before creating anything. It fails the test if the
// topology cannot be built.
func NewCanonical(tb testing.TB, opts Options) *Topology {
	tb.Helper()
	env := NewEnv(tb)
	t, err := buildCanonical(env, opts)
	if err != nil {
		tb.Fatalf("testenv: canonical topology %s: %v", env.Prefix, err)
	}
	return t
}

// Build builds the canonical topology outside of a test, with a random
// prefix. The caller owns it: Close removes it. On error nothing is left.
func Build(opts Options) (*Topology, error) {
	env, err := Open("")
	if err != nil {
		return nil, err
	}
	t, err := buildCanonical(env, opts)
	if err != nil {
		if cerr := env.Close(); cerr != nil {
			err = fmt.Errorf("%w (cleanup: %v)", err, cerr)
		}
		return nil, err
	}
	return t, nil
}

// Close kills the processes started in the topology and deletes its
// namespaces. It is idempotent.
func (t *Topology) Close() error { return t.Env.Close() }

// Hosts returns every host of the topology's Env in creation order: client,
// router, sw, lb1, lb2 (if any), the backends, then any added later.
func (t *Topology) Hosts() []*Host { return t.Env.Hosts() }

// SwitchPort returns the name of the bridge port in namespace sw that leads
// to h (h's role name, e.g. "backend2"), or "" for the client and sw itself.
func (t *Topology) SwitchPort(h *Host) string {
	if h == nil || h == t.Client || h == t.Switch {
		return ""
	}
	return h.role
}

func checkVIPs(vips []netip.Addr) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(vips))
	seen := map[netip.Addr]bool{}
	for _, v := range vips {
		v = v.Unmap()
		if !VIPNet4.Contains(v) && !VIPNet6.Contains(v) {
			return nil, fmt.Errorf("VIP %s outside %s and %s", v, VIPNet4, VIPNet6)
		}
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out, nil
}

func buildCanonical(env *Env, opts Options) (*Topology, error) {
	n := opts.Backends
	if n == 0 {
		n = 3
	}
	if n < 0 || n > MaxBackends {
		return nil, fmt.Errorf("options: backends = %d, want 1..%d", opts.Backends, MaxBackends)
	}
	vips, err := checkVIPs(opts.VIPs)
	if err != nil {
		return nil, err
	}
	t := &Topology{Prefix: env.Prefix, VIPs: vips, Env: env}

	// Namespaces first, so their defaults (no DAD, rp_filter 0) are in place
	// before any interface is created in them.
	mk := func(role string) (*Host, error) { return env.NewNamespace(role) }
	if t.Client, err = mk("client"); err != nil {
		return nil, err
	}
	if t.Router, err = mk("router"); err != nil {
		return nil, err
	}
	if t.Switch, err = mk("sw"); err != nil {
		return nil, err
	}
	if t.LB1, err = mk("lb1"); err != nil {
		return nil, err
	}
	if opts.SecondLB {
		if t.LB2, err = mk("lb2"); err != nil {
			return nil, err
		}
	}
	for i := 1; i <= n; i++ {
		b, err := mk(fmt.Sprintf("backend%d", i))
		if err != nil {
			return nil, err
		}
		t.Backends = append(t.Backends, b)
	}

	// client ── router
	if err := VethPair(t.Client, t.Router, MainIface, RouterClientIface,
		WithMACs(hostMAC(1, 2), hostMAC(1, 1))); err != nil {
		return nil, err
	}
	for _, a := range []struct {
		h   *Host
		ifc string
		p   netip.Prefix
	}{
		{t.Client, MainIface, netip.PrefixFrom(ClientIPv4, 24)},
		{t.Client, MainIface, netip.PrefixFrom(ClientIPv6, 64)},
		{t.Router, RouterClientIface, netip.PrefixFrom(RouterClientIPv4, 24)},
		{t.Router, RouterClientIface, netip.PrefixFrom(RouterClientIPv6, 64)},
	} {
		if err := a.h.AddAddr(a.ifc, a.p); err != nil {
			return nil, err
		}
	}

	// The switch and everything on its segment.
	sw := t.Switch
	if err := sw.AddBridge(BridgeName); err != nil {
		return nil, err
	}
	type member struct {
		h     *Host
		octet int
	}
	members := []member{{t.Router, 1}, {t.LB1, 2}}
	if t.LB2 != nil {
		members = append(members, member{t.LB2, 3})
	}
	for i, b := range t.Backends {
		members = append(members, member{b, 10 + i + 1})
	}
	for _, m := range members {
		port := m.h.role
		if err := VethPair(m.h, sw, MainIface, port,
			WithMACs(hostMAC(2, byte(m.octet)), nil)); err != nil {
			return nil, err
		}
		if err := sw.SetMaster(port, BridgeName); err != nil {
			return nil, err
		}
		if err := sw.AttachPassXDP(port); err != nil {
			return nil, err
		}
		if err := m.h.AddAddr(MainIface, netip.PrefixFrom(switchIPv4(m.octet), 24)); err != nil {
			return nil, err
		}
		if err := m.h.AddAddr(MainIface, netip.PrefixFrom(switchIPv6(m.octet), 64)); err != nil {
			return nil, err
		}
		if err := m.h.SetPrimary(MainIface, switchIPv4(m.octet), switchIPv6(m.octet)); err != nil {
			return nil, err
		}
	}
	if err := t.Client.SetPrimary(MainIface, ClientIPv4, ClientIPv6); err != nil {
		return nil, err
	}
	if err := sw.SetPrimary(BridgeName, netip.Addr{}, netip.Addr{}); err != nil {
		return nil, err
	}

	// TX checksum offload off where the LB's forwarded traffic starts or
	// passes through the kernel's skb path.
	txOff := []struct {
		h   *Host
		ifc string
	}{{t.Client, MainIface}, {t.Router, MainIface}, {t.Router, RouterClientIface}}
	for _, b := range t.Backends {
		txOff = append(txOff, struct {
			h   *Host
			ifc string
		}{b, MainIface})
	}
	for _, x := range txOff {
		if err := x.h.SetTxChecksum(x.ifc, false); err != nil {
			return nil, err
		}
	}

	// Router: forwarding and the VIP routes via lb1.
	if err := t.Router.Sysctls(map[string]string{
		"net.ipv4.ip_forward":          "1",
		"net.ipv6.conf.all.forwarding": "1",
	}); err != nil {
		return nil, err
	}
	if err := t.Router.AddRoute(VIPNet4, LB1IPv4); err != nil {
		return nil, err
	}
	if err := t.Router.AddRoute(VIPNet6, LB1IPv6); err != nil {
		return nil, err
	}

	// Default routes.
	if err := t.Client.AddDefaultRoute(RouterClientIPv4); err != nil {
		return nil, err
	}
	if err := t.Client.AddDefaultRoute(RouterClientIPv6); err != nil {
		return nil, err
	}
	for _, m := range members[1:] {
		if err := m.h.AddDefaultRoute(RouterIPv4); err != nil {
			return nil, err
		}
		if err := m.h.AddDefaultRoute(RouterIPv6); err != nil {
			return nil, err
		}
	}

	// Backends: VIPs on lo, DSR-friendly ARP and reverse-path settings.
	for _, b := range t.Backends {
		for _, v := range vips {
			if err := b.AddAddr("lo", netip.PrefixFrom(v, v.BitLen())); err != nil {
				return nil, err
			}
		}
		kv := map[string]string{
			"net.ipv4.conf.all.arp_ignore":       "1",
			"net.ipv4.conf.all.arp_announce":     "2",
			"net.ipv4.conf.default.arp_ignore":   "1",
			"net.ipv4.conf.default.arp_announce": "2",
			"net.ipv4.conf.all.rp_filter":        "0",
			"net.ipv4.conf.default.rp_filter":    "0",
			"net.ipv4.conf.lo.rp_filter":         "0",
		}
		kv["net.ipv4.conf."+MainIface+".arp_ignore"] = "1"
		kv["net.ipv4.conf."+MainIface+".arp_announce"] = "2"
		kv["net.ipv4.conf."+MainIface+".rp_filter"] = "0"
		if err := b.Sysctls(kv); err != nil {
			return nil, err
		}
	}

	for _, h := range env.Hosts() {
		if err := h.WaitAddrs(5 * time.Second); err != nil {
			return nil, err
		}
	}
	return t, nil
}

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

	// With Options.RemoteBackends:
	RouterBackendIface = "eth2" // the router's interface on the backend segment
	BackendBridgeName  = "br1"  // the bridge in namespace sw2
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

	// The backend segment behind the router (Options.RemoteBackends) and
	// the router's address on it, the remote backends' gateway.
	RemoteBackendNet4 = netip.MustParsePrefix("198.18.2.0/24")
	RemoteBackendNet6 = netip.MustParsePrefix("2001:db8:3::/64")
	RemoteGatewayIPv4 = netip.MustParseAddr("198.18.2.1")
	RemoteGatewayIPv6 = netip.MustParseAddr("2001:db8:3::1")

	// Encapsulation source prefixes: outer source addresses of the load
	// balancer's IP-in-IP packets. They are on no interface; the router
	// routes them via lb1 (so that ICMP errors about encapsulated packets
	// reach it) and does not filter them by reverse path.
	EncapSourceV4 = netip.MustParsePrefix("198.18.1.0/24")
	EncapSourceV6 = netip.MustParsePrefix("2001:db8:4::/64")
)

// BackendIPv4 is backend i's address (i from 1): 198.18.0.(10+i).
func BackendIPv4(i int) netip.Addr { return switchIPv4(10 + i) }

// BackendIPv6 is backend i's address (i from 1): 2001:db8:2::(10+i), the
// decimal digits of 10+i written as the last hex group (backend1 = ::11).
func BackendIPv6(i int) netip.Addr { return switchIPv6(10 + i) }

// RemoteBackendIPv4 is backend i's address (i from 1) with
// Options.RemoteBackends: 198.18.2.(10+i).
func RemoteBackendIPv4(i int) netip.Addr { return remoteIPv4(10 + i) }

// RemoteBackendIPv6 is backend i's address (i from 1) with
// Options.RemoteBackends: 2001:db8:3::(10+i), read as hex like BackendIPv6
// (backend1 = 2001:db8:3::11).
func RemoteBackendIPv6(i int) netip.Addr { return remoteIPv6(10 + i) }

func switchIPv4(octet int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, 0, byte(octet)})
}

func switchIPv6(octet int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:2::%d", octet))
}

func remoteIPv4(octet int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, 2, byte(octet)})
}

func remoteIPv6(octet int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:3::%d", octet))
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

	// RemoteBackends puts the backends on their own segment behind the
	// router (bridge br1 in a second switch namespace "sw2", router eth2),
	// instead of on the LB's segment.
	RemoteBackends bool

	// VIPNextHop, when valid, is the IPv4 address the router routes
	// 203.0.113.0/24 and the encapsulation source prefix 198.18.1.0/24
	// through instead of lb1's: a virtual address that the VRRP master
	// holds, so that traffic follows failover. It must lie in 198.18.0.0/24
	// and be no host's address (198.18.0.100 is a good choice); no host
	// holds it when the topology is built.
	VIPNextHop netip.Addr
	// VIPNextHop6 is the same for 2001:db8:ffff::/64 and 2001:db8:4::/64:
	// an address in 2001:db8:2::/64 (2001:db8:2::100, say).
	VIPNextHop6 netip.Addr
}

// Topology is the canonical topology. Each Host's Iface is "eth0" with the
// addresses of the plan; the router's Host describes its switch side.
type Topology struct {
	Prefix                           string
	Client, Router, Switch, LB1, LB2 *Host // LB2 is nil unless Options.SecondLB
	Backends                         []*Host
	VIPs                             []netip.Addr
	Env                              *Env // the namespaces, for adding more

	// BackendSwitch is the namespace whose bridge the backends hang off:
	// Switch (sw, br0), or with RemoteBackends the namespace sw2 (br1).
	BackendSwitch *Host
	// RemoteBackends is Options.RemoteBackends: the backends are on
	// RemoteBackendNet4/6 behind the router, not on the LB's segment.
	RemoteBackends bool
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
// router, sw, lb1, lb2 (if any), sw2 (with RemoteBackends), the backends,
// then any added later.
func (t *Topology) Hosts() []*Host { return t.Env.Hosts() }

// SwitchPort returns the name of the bridge port that leads to h (h's role
// name, e.g. "backend2"), or "" for the client and the switches themselves.
// The port is in namespace sw, except that with RemoteBackends the
// backends' ports are in BackendSwitch (sw2); the router then has a port
// named "router" in both.
func (t *Topology) SwitchPort(h *Host) string {
	if h == nil || h == t.Client || h == t.Switch || h == t.BackendSwitch {
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

// checkNextHops returns the router's next hops for the VIP and
// encapsulation source prefixes: lb1's addresses unless Options say
// otherwise. n is the number of backends.
func checkNextHops(opts Options, n int) (v4, v6 netip.Addr, err error) {
	v4, v6 = LB1IPv4, LB1IPv6
	taken := map[netip.Addr]bool{RouterIPv4: true, LB1IPv4: true, LB2IPv4: true, RouterIPv6: true, LB1IPv6: true, LB2IPv6: true}
	for i := 1; i <= n && !opts.RemoteBackends; i++ {
		taken[BackendIPv4(i)], taken[BackendIPv6(i)] = true, true
	}
	if a := opts.VIPNextHop.Unmap(); a.IsValid() {
		if !SwitchNet4.Contains(a) || taken[a] || a == SwitchNet4.Addr() {
			return v4, v6, fmt.Errorf("options: VIPNextHop %s must be a free address of %s", a, SwitchNet4)
		}
		v4 = a
	}
	if a := opts.VIPNextHop6; a.IsValid() {
		if !SwitchNet6.Contains(a) || taken[a] || a == SwitchNet6.Addr() {
			return v4, v6, fmt.Errorf("options: VIPNextHop6 %s must be a free address of %s", a, SwitchNet6)
		}
		v6 = a
	}
	return v4, v6, nil
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
	nextHop4, nextHop6, err := checkNextHops(opts, n)
	if err != nil {
		return nil, err
	}
	t := &Topology{Prefix: env.Prefix, VIPs: vips, Env: env, RemoteBackends: opts.RemoteBackends}

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
	t.BackendSwitch = t.Switch
	if opts.RemoteBackends {
		if t.BackendSwitch, err = mk("sw2"); err != nil {
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
	if err := t.Client.SetPrimary(MainIface, ClientIPv4, ClientIPv6); err != nil {
		return nil, err
	}

	// The switch segment (sw, br0) with everything on it, and with
	// RemoteBackends the backend segment (sw2, br1) behind the router.
	// members[0] of each segment is the router, the hosts' gateway.
	type member struct {
		h     *Host
		ifc   string // the host's end
		octet int
	}
	type segment struct {
		sw       *Host
		bridge   string
		mac      byte // SS of hostMAC
		ip4, ip6 func(octet int) netip.Addr
		members  []member
	}
	lan := segment{sw: t.Switch, bridge: BridgeName, mac: 2, ip4: switchIPv4, ip6: switchIPv6,
		members: []member{{t.Router, MainIface, 1}, {t.LB1, MainIface, 2}}}
	if t.LB2 != nil {
		lan.members = append(lan.members, member{t.LB2, MainIface, 3})
	}
	segs := []*segment{&lan}
	backSeg := &lan
	if opts.RemoteBackends {
		backSeg = &segment{sw: t.BackendSwitch, bridge: BackendBridgeName, mac: 3, ip4: remoteIPv4, ip6: remoteIPv6,
			members: []member{{t.Router, RouterBackendIface, 1}}}
		segs = append(segs, backSeg)
	}
	for i, b := range t.Backends {
		backSeg.members = append(backSeg.members, member{b, MainIface, 10 + i + 1})
	}
	for _, seg := range segs {
		sw := seg.sw
		if err := sw.AddBridge(seg.bridge); err != nil {
			return nil, err
		}
		for _, m := range seg.members {
			port := m.h.role
			v4, v6 := seg.ip4(m.octet), seg.ip6(m.octet)
			if err := VethPair(m.h, sw, m.ifc, port,
				WithMACs(hostMAC(seg.mac, byte(m.octet)), nil)); err != nil {
				return nil, err
			}
			if err := sw.SetMaster(port, seg.bridge); err != nil {
				return nil, err
			}
			if err := sw.AttachPassXDP(port); err != nil {
				return nil, err
			}
			if err := m.h.AddAddr(m.ifc, netip.PrefixFrom(v4, 24)); err != nil {
				return nil, err
			}
			if err := m.h.AddAddr(m.ifc, netip.PrefixFrom(v6, 64)); err != nil {
				return nil, err
			}
			if m.h == t.Router && m.ifc != MainIface {
				continue // the router's Host describes its eth0
			}
			if err := m.h.SetPrimary(m.ifc, v4, v6); err != nil {
				return nil, err
			}
		}
		if err := sw.SetPrimary(seg.bridge, netip.Addr{}, netip.Addr{}); err != nil {
			return nil, err
		}
	}

	// TX checksum offload off where the LB's forwarded traffic starts or
	// passes through the kernel's skb path.
	type iface struct {
		h   *Host
		ifc string
	}
	txOff := []iface{{t.Client, MainIface}, {t.Router, MainIface}, {t.Router, RouterClientIface}}
	if opts.RemoteBackends {
		txOff = append(txOff, iface{t.Router, RouterBackendIface})
	}
	for _, b := range t.Backends {
		txOff = append(txOff, iface{b, MainIface})
	}
	for _, x := range txOff {
		if err := x.h.SetTxChecksum(x.ifc, false); err != nil {
			return nil, err
		}
	}

	// Router: forwarding (all interfaces, the backend segment's included),
	// no reverse-path filter (the LB's encapsulated packets come from the
	// encapsulation source prefixes, which are on no interface), and the
	// VIP and encapsulation source routes via lb1.
	rkv := map[string]string{
		"net.ipv4.ip_forward":              "1",
		"net.ipv6.conf.all.forwarding":     "1",
		"net.ipv6.conf.default.forwarding": "1",
		"net.ipv4.conf.all.rp_filter":      "0",
		"net.ipv4.conf.default.rp_filter":  "0",
	}
	routerIfaces := []string{MainIface, RouterClientIface}
	if opts.RemoteBackends {
		routerIfaces = append(routerIfaces, RouterBackendIface)
	}
	for _, ifc := range routerIfaces {
		rkv["net.ipv4.conf."+ifc+".rp_filter"] = "0"
		rkv["net.ipv6.conf."+ifc+".forwarding"] = "1"
	}
	if err := t.Router.Sysctls(rkv); err != nil {
		return nil, err
	}
	for _, r := range []struct {
		dst netip.Prefix
		gw  netip.Addr
	}{
		{VIPNet4, nextHop4}, {VIPNet6, nextHop6},
		{EncapSourceV4, nextHop4}, {EncapSourceV6, nextHop6},
	} {
		if err := t.Router.AddRoute(r.dst, r.gw); err != nil {
			return nil, err
		}
	}

	// Default routes: the client's via the router's client side, every
	// other host's via the router's address on its segment. lb1 and lb2
	// reach the backend segment through theirs.
	if err := t.Client.AddDefaultRoute(RouterClientIPv4); err != nil {
		return nil, err
	}
	if err := t.Client.AddDefaultRoute(RouterClientIPv6); err != nil {
		return nil, err
	}
	for _, seg := range segs {
		gw4, gw6 := seg.ip4(seg.members[0].octet), seg.ip6(seg.members[0].octet)
		for _, m := range seg.members[1:] {
			if err := m.h.AddDefaultRoute(gw4); err != nil {
				return nil, err
			}
			if err := m.h.AddDefaultRoute(gw6); err != nil {
				return nil, err
			}
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

package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

var (
	vip4 = netip.MustParseAddr("203.0.113.10")
	vip6 = netip.MustParseAddr("2001:db8:ffff::10")
)

func TestCanonical(t *testing.T) {
	require.Netns(t)
	require.Tool(t, "ip") // commands run in a namespace through `ip netns exec`
	topo := NewCanonical(t, Options{VIPs: []netip.Addr{vip4, vip6}})
	ctx := context.Background()

	t.Run("Hosts", func(t *testing.T) {
		if !strings.HasPrefix(topo.Client.Name, topo.Prefix+"-") || !prefixRE.MatchString(topo.Prefix) {
			t.Errorf("client namespace %q, prefix %q", topo.Client.Name, topo.Prefix)
		}
		if topo.LB2 != nil {
			t.Errorf("LB2 = %v without SecondLB", topo.LB2)
		}
		if len(topo.Backends) != 3 {
			t.Fatalf("%d backends, want 3", len(topo.Backends))
		}
		b1 := topo.Backends[0]
		if b1.IPv4 != netip.MustParseAddr("198.18.0.11") || b1.IPv6 != netip.MustParseAddr("2001:db8:2::11") {
			t.Errorf("backend1 addresses %s %s", b1.IPv4, b1.IPv6)
		}
		if b1.MAC.String() != "02:fc:02:00:00:0b" || b1.Iface != "eth0" || b1.Ifindex == 0 {
			t.Errorf("backend1 iface %s ifindex %d mac %s", b1.Iface, b1.Ifindex, b1.MAC)
		}
		// Ifindex is the one inside the namespace.
		var idx int
		if err := b1.Do(func() error {
			ifc, err := net.InterfaceByName("eth0")
			if err == nil {
				idx = ifc.Index
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if idx != b1.Ifindex {
			t.Errorf("eth0 ifindex in namespace %d, Host says %d", idx, b1.Ifindex)
		}
		if topo.LB1.IPv4 != LB1IPv4 || topo.Router.IPv4 != RouterIPv4 || topo.Client.IPv6 != ClientIPv6 {
			t.Errorf("lb1 %s router %s client %s", topo.LB1.IPv4, topo.Router.IPv4, topo.Client.IPv6)
		}
	})

	t.Run("Ping", func(t *testing.T) {
		for _, dst := range []netip.Addr{
			RouterClientIPv4, RouterClientIPv6, // directly connected
			RouterIPv4, RouterIPv6, // the router's far side
			BackendIPv4(1), BackendIPv6(1), // through the router and the bridge, and back
			BackendIPv4(3), BackendIPv6(3),
			LB1IPv4, LB1IPv6,
		} {
			ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			if err := topo.Client.Ping(ctx, dst); err != nil {
				t.Errorf("client -> %s: %v", dst, err)
			}
			cancel()
		}
		// And the other way round.
		if err := topo.Backends[1].Ping(ctx, ClientIPv4); err != nil {
			t.Error(err)
		}
		if err := topo.Backends[1].Ping(ctx, ClientIPv6); err != nil {
			t.Error(err)
		}
	})

	t.Run("TCP", func(t *testing.T) {
		// A listener opened inside backend1's namespace and a connection
		// dialled from inside the client's: a full round trip through the
		// router, both families.
		b1 := topo.Backends[0]
		for _, addr := range []netip.Addr{b1.IPv4, b1.IPv6} {
			var ln net.Listener
			if err := b1.Do(func() (err error) {
				ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 8080).String())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "hello from %s\n", b1.Name)
				c.Close()
			}()
			var got []byte
			err := topo.Client.Do(func() error {
				d := net.Dialer{Timeout: 3 * time.Second}
				c, err := d.Dial("tcp", netip.AddrPortFrom(addr, 8080).String())
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(3 * time.Second))
				got = make([]byte, 128)
				n, err := c.Read(got)
				got = got[:n]
				return err
			})
			ln.Close()
			if err != nil {
				t.Errorf("dial %s: %v", addr, err)
			} else if want := "hello from " + b1.Name + "\n"; string(got) != want {
				t.Errorf("read %q, want %q", got, want)
			}
		}
	})

	t.Run("VIPRoutes", func(t *testing.T) {
		for _, c := range []struct {
			dst netip.Addr
			gw  netip.Addr
		}{
			{vip4, LB1IPv4}, {vip6, LB1IPv6}, {netip.MustParseAddr("203.0.113.200"), LB1IPv4},
			// The encapsulation source prefixes, in this variant too.
			{netip.MustParseAddr("198.18.1.7"), LB1IPv4}, {netip.MustParseAddr("2001:db8:4::7"), LB1IPv6},
		} {
			routes, err := topo.Router.Handle().RouteGet(net.IP(c.dst.AsSlice()))
			if err != nil {
				t.Fatalf("route get %s: %v", c.dst, err)
			}
			if len(routes) == 0 || !routes[0].Gw.Equal(net.IP(c.gw.AsSlice())) {
				t.Errorf("router: route to %s = %v, want via %s", c.dst, routes, c.gw)
			}
			if len(routes) > 0 && routes[0].LinkIndex != topo.Router.Ifindex {
				t.Errorf("router: route to %s leaves by ifindex %d, want %d (eth0)", c.dst, routes[0].LinkIndex, topo.Router.Ifindex)
			}
		}
		for _, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			if v, err := topo.Router.ReadSysctl(key); err != nil || v != "1" {
				t.Errorf("router %s = %q, %v", key, v, err)
			}
		}
	})

	t.Run("BackendVIPs", func(t *testing.T) {
		for _, b := range topo.Backends {
			lo, err := b.Link("lo")
			if err != nil {
				t.Fatal(err)
			}
			addrs, err := b.Handle().AddrList(lo, netlink.FAMILY_ALL)
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, a := range addrs {
				have[a.IPNet.String()] = true
			}
			for _, want := range []string{"203.0.113.10/32", "2001:db8:ffff::10/128"} {
				if !have[want] {
					t.Errorf("%s: %s not on lo (have %v)", b.Name, want, addrs)
				}
			}
			for key, want := range map[string]string{
				"net.ipv4.conf.all.arp_ignore":   "1",
				"net.ipv4.conf.all.arp_announce": "2",
				"net.ipv4.conf.all.rp_filter":    "0",
				"net.ipv4.conf.eth0.rp_filter":   "0",
				"net.ipv6.conf.eth0.accept_dad":  "0",
			} {
				if v, err := b.ReadSysctl(key); err != nil || v != want {
					t.Errorf("%s: %s = %q (%v), want %s", b.Name, key, v, err, want)
				}
			}
			// Nothing in the namespace is left tentative.
			all, err := b.Handle().AddrList(nil, netlink.FAMILY_V6)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range all {
				if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
					t.Errorf("%s: %s flags %#x", b.Name, a.IPNet, a.Flags)
				}
			}
		}
	})

	t.Run("PassXDP", func(t *testing.T) {
		prog, err := topo.Env.PassProgram()
		if err != nil {
			t.Fatal(err)
		}
		info, err := prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		progID, _ := info.ID()
		ports := []string{"router", "lb1", "backend1", "backend2", "backend3"}
		for _, h := range append([]*Host{topo.Router, topo.LB1}, topo.Backends...) {
			if p := topo.SwitchPort(h); p == "" {
				t.Errorf("no switch port for %s", h.Name)
			}
		}
		for _, p := range ports {
			l, err := topo.Switch.Link(p)
			if err != nil {
				t.Fatal(err)
			}
			x := l.Attrs().Xdp
			if x == nil || !x.Attached {
				t.Errorf("sw/%s: no XDP program attached (%+v)", p, x)
				continue
			}
			if x.AttachMode != nl.XDP_ATTACHED_DRV {
				t.Errorf("sw/%s: XDP attach mode %d, want native (%d)", p, x.AttachMode, nl.XDP_ATTACHED_DRV)
			}
			if x.ProgId != uint32(progID) {
				t.Errorf("sw/%s: XDP program id %d, want %d", p, x.ProgId, progID)
			}
			if l.Attrs().MasterIndex == 0 {
				t.Errorf("sw/%s: not enslaved to the bridge", p)
			}
		}
		// The switch is not a firewall (br_netfilter, when loaded, would
		// send bridged frames through the IP hooks).
		if v, err := topo.Switch.ReadSysctl("net.bridge.bridge-nf-call-iptables"); err == nil && v != "0" {
			t.Errorf("sw: bridge-nf-call-iptables = %s, want 0", v)
		}
		// The hosts' own ends carry nothing: that is the LB's business.
		l, err := topo.LB1.Link(MainIface)
		if err != nil {
			t.Fatal(err)
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			t.Errorf("lb1/eth0 has an XDP program: %+v", x)
		}
	})

	t.Run("TxOffload", func(t *testing.T) {
		for _, c := range []struct {
			h   *Host
			ifc string
			on  bool
		}{
			{topo.Client, MainIface, false},
			{topo.Router, MainIface, false},
			{topo.Router, RouterClientIface, false},
			{topo.Backends[0], MainIface, false},
			{topo.LB1, MainIface, true}, // untouched
		} {
			on, err := c.h.TxChecksum(c.ifc)
			if err != nil {
				t.Fatal(err)
			}
			if on != c.on {
				t.Errorf("%s/%s: tx checksumming %v, want %v", c.h.Name, c.ifc, on, c.on)
			}
		}
		// Cross-check with ethtool itself, through `ip netns exec`.
		out, err := topo.Client.Run(ctx, require.Tool(t, "ethtool"), "-k", MainIface)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "tx-checksumming: off") {
			t.Errorf("ethtool -k eth0 in client:\n%s", out)
		}
	})

	t.Run("Do", func(t *testing.T) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		before, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer before.Close()
		var inside netns.NsHandle
		wantErr := errors.New("from fn")
		err = topo.Client.Do(func() error {
			var err error
			inside, err = netns.Get()
			if err != nil {
				return err
			}
			return wantErr
		})
		if !errors.Is(err, wantErr) {
			t.Errorf("Do returned %v, want fn's error", err)
		}
		defer inside.Close()
		if !inside.Equal(topo.Client.NsHandle()) {
			t.Errorf("fn ran in %v, not in the client namespace", inside)
		}
		after, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer after.Close()
		if !after.Equal(before) {
			t.Error("Do changed the caller's namespace")
		}
		func() {
			defer func() {
				if r := recover(); r != "boom" {
					t.Errorf("recovered %v, want the panic from fn", r)
				}
			}()
			_ = topo.Client.Do(func() error { panic("boom") })
		}()
	})

	t.Run("Run", func(t *testing.T) {
		out, err := topo.Router.Run(ctx, "ip", "-o", "route", "show", "203.0.113.0/24")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "via 198.18.0.2") {
			t.Errorf("ip route in router: %q", out)
		}
		if _, err := topo.Router.Run(ctx, "ip", "link", "show", "nosuchlink0"); err == nil ||
			!strings.Contains(err.Error(), "nosuchlink0") {
			t.Errorf("failing Run: %v, want the command's output in the error", err)
		}
	})
}

// TestClose builds a topology, starts a process in it, and checks that Close
// kills the process and removes every namespace, and that it is idempotent.
func TestClose(t *testing.T) {
	require.Netns(t)
	require.Tool(t, "ip") // commands run in a namespace through `ip netns exec`
	topo := NewCanonical(t, Options{Backends: 1, SecondLB: true, VIPs: []netip.Addr{vip4}})
	if topo.LB2 == nil || topo.LB2.IPv4 != LB2IPv4 {
		t.Fatalf("LB2 = %+v", topo.LB2)
	}
	names := topo.Env.Namespaces()
	if len(names) != 6 { // client router sw lb1 lb2 backend1
		t.Fatalf("namespaces %v, want 6", names)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", n)); err != nil {
			t.Fatalf("namespace %s: %v", n, err)
		}
	}
	out, err := ipNetnsList(t)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, topo.Prefix+"-backend1") {
		t.Errorf("ip netns list does not show %s-backend1:\n%s", topo.Prefix, out)
	}

	cmd, err := topo.Backends[0].Start(context.Background(), "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	if err := topo.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case err := <-waited:
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("sleep ended with %v, want killed", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("sleep still running after Close")
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still there after Close (%v)", n, err)
		}
	}
	out, err = ipNetnsList(t)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, topo.Prefix) {
		t.Errorf("ip netns list still shows %s:\n%s", topo.Prefix, out)
	}
	if err := topo.Client.Do(func() error { return nil }); err == nil {
		t.Error("Do on a closed host succeeded")
	}
	if _, err := topo.Env.NewNamespace("late"); err == nil {
		t.Error("NewNamespace on a closed Env succeeded")
	}
}

func ipNetnsList(t *testing.T) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ipCommand(), "netns", "list").CombinedOutput()
	return string(out), err
}

// TestParallel builds two topologies at once: their prefixes keep them apart.
func TestParallel(t *testing.T) {
	require.Netns(t)
	for i := range 2 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			topo := NewCanonical(t, Options{Backends: 1, VIPs: []netip.Addr{vip6}})
			if err := topo.Client.Ping(context.Background(), BackendIPv6(1)); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestBuilder uses the lower-level pieces directly: two hosts and one veth.
func TestBuilder(t *testing.T) {
	require.Netns(t)
	env := NewEnv(t)
	a, err := env.NewNamespace("gen")
	if err != nil {
		t.Fatal(err)
	}
	b, err := env.NewNamespace("sink")
	if err != nil {
		t.Fatal(err)
	}
	if err := VethPair(a, b, "eth0", "eth0", WithQueues(2)); err != nil {
		t.Fatal(err)
	}
	pa := netip.MustParsePrefix("198.18.100.1/30")
	pb := netip.MustParsePrefix("198.18.100.2/30")
	if err := a.AddAddr("eth0", pa); err != nil {
		t.Fatal(err)
	}
	if err := b.AddAddr("eth0", pb); err != nil {
		t.Fatal(err)
	}
	if err := b.AttachPassXDP("eth0"); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPrimary("eth0", pa.Addr(), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	l, err := a.Link("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if q := l.Attrs().NumTxQueues; q != 2 {
		t.Errorf("%d TX queues, want 2", q)
	}
	if err := a.Ping(context.Background(), pb.Addr()); err != nil {
		t.Error(err)
	}
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestVIPNextHop routes the VIP and encapsulation source prefixes via a
// VRRP virtual address instead of lb1, and refuses addresses in use.
func TestVIPNextHop(t *testing.T) {
	nh4, nh6 := netip.MustParseAddr("198.18.0.100"), netip.MustParseAddr("2001:db8:2::100")
	for _, bad := range []Options{
		{VIPNextHop: LB2IPv4},
		{VIPNextHop: BackendIPv4(1)},
		{VIPNextHop: netip.MustParseAddr("198.19.1.100")},
		{VIPNextHop: nh6},
		{VIPNextHop6: RouterIPv6},
		{VIPNextHop6: nh4},
	} {
		if _, _, err := checkNextHops(bad, 3); err == nil {
			t.Errorf("checkNextHops(%+v) accepted it", bad)
		}
	}
	require.Netns(t)
	topo := NewCanonical(t, Options{Backends: 1, SecondLB: true, VIPNextHop: nh4, VIPNextHop6: nh6})
	for _, c := range []struct{ dst, gw netip.Addr }{
		{vip4, nh4}, {vip6, nh6},
		{netip.MustParseAddr("198.18.1.7"), nh4}, {netip.MustParseAddr("2001:db8:4::7"), nh6},
	} {
		routes, err := topo.Router.Handle().RouteGet(net.IP(c.dst.AsSlice()))
		if err != nil {
			t.Fatalf("route get %s: %v", c.dst, err)
		}
		if len(routes) == 0 || !routes[0].Gw.Equal(net.IP(c.gw.AsSlice())) {
			t.Errorf("router: route to %s = %v, want via %s", c.dst, routes, c.gw)
		}
	}
}

func TestRemovePrefixRejectsForeignNames(t *testing.T) {
	for _, p := range []string{"", "fc", "other", "fc12345", "fc1234567", "fcABCDEF", "../etc"} {
		if err := RemovePrefix(p); err == nil {
			t.Errorf("RemovePrefix(%q) accepted", p)
		}
	}
}

func TestSysctlPath(t *testing.T) {
	for in, want := range map[string]string{
		"net.ipv4.ip_forward":             "/proc/sys/net/ipv4/ip_forward",
		"net/ipv4/conf/eth0.10/rp_filter": "/proc/sys/net/ipv4/conf/eth0.10/rp_filter",
		"net/../../etc/passwd":            "/proc/sys/etc/passwd",
	} {
		if got := sysctlPath(in); got != want {
			t.Errorf("sysctlPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckVIPs(t *testing.T) {
	if _, err := checkVIPs([]netip.Addr{netip.MustParseAddr("198.18.0.10")}); err == nil {
		t.Error("host address accepted as VIP")
	}
	got, err := checkVIPs([]netip.Addr{vip4, netip.AddrFrom16(vip4.As16()), vip6})
	if err != nil || len(got) != 2 || got[0] != vip4 || got[1] != vip6 {
		t.Errorf("checkVIPs = %v, %v", got, err)
	}
}

// TestRemoteBackends builds the topology with the backends on their own
// segment behind the router and checks that they are reachable from the
// client and from lb1 only through the router, that the router forwards
// IP-in-IP packets whose outer source is in the encapsulation source
// prefixes, and that the backends are set up for DSR as on the LB's segment.
func TestRemoteBackends(t *testing.T) {
	require.Netns(t)
	topo := NewCanonical(t, Options{Backends: 2, SecondLB: true, RemoteBackends: true, VIPs: []netip.Addr{vip4, vip6}})
	ctx := context.Background()
	ipOf := func(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

	t.Run("Hosts", func(t *testing.T) {
		if !topo.RemoteBackends || topo.BackendSwitch == nil || topo.BackendSwitch == topo.Switch ||
			topo.BackendSwitch.Name != topo.Prefix+"-sw2" || topo.BackendSwitch.Iface != BackendBridgeName {
			t.Fatalf("backend switch %+v (remote %v)", topo.BackendSwitch, topo.RemoteBackends)
		}
		var roles []string
		for _, h := range topo.Hosts() {
			roles = append(roles, h.Role())
		}
		if got := strings.Join(roles, " "); got != "client router sw lb1 lb2 sw2 backend1 backend2" {
			t.Errorf("hosts %s", got)
		}
		if len(topo.Backends) != 2 {
			t.Fatalf("%d backends, want 2", len(topo.Backends))
		}
		for i, b := range topo.Backends {
			n := i + 1
			want4 := netip.AddrFrom4([4]byte{198, 18, 2, byte(10 + n)})
			want6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:3::%d", 10+n))
			if b.IPv4 != want4 || b.IPv6 != want6 || RemoteBackendIPv4(n) != want4 || RemoteBackendIPv6(n) != want6 {
				t.Errorf("%s: addresses %s %s (helpers %s %s), want %s %s", b.Name, b.IPv4, b.IPv6,
					RemoteBackendIPv4(n), RemoteBackendIPv6(n), want4, want6)
			}
			if want := fmt.Sprintf("02:fc:03:00:00:%02x", 10+n); b.MAC.String() != want || b.Iface != MainIface || b.Ifindex == 0 {
				t.Errorf("%s: iface %s ifindex %d mac %s, want mac %s", b.Name, b.Iface, b.Ifindex, b.MAC, want)
			}
			if !RemoteBackendNet4.Contains(b.IPv4) || !RemoteBackendNet6.Contains(b.IPv6) {
				t.Errorf("%s: %s %s outside %s %s", b.Name, b.IPv4, b.IPv6, RemoteBackendNet4, RemoteBackendNet6)
			}
		}
		// The router's Host still describes its switch side.
		if topo.Router.Iface != MainIface || topo.Router.IPv4 != RouterIPv4 {
			t.Errorf("router %s %s", topo.Router.Iface, topo.Router.IPv4)
		}
		l, err := topo.Router.Link(RouterBackendIface)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().HardwareAddr.String() != "02:fc:03:00:00:01" {
			t.Errorf("router/%s mac %s", RouterBackendIface, l.Attrs().HardwareAddr)
		}
		addrs, err := topo.Router.Handle().AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, a := range addrs {
			have[a.IPNet.String()] = true
		}
		for _, want := range []string{"198.18.2.1/24", "2001:db8:3::1/64"} {
			if !have[want] {
				t.Errorf("router/%s: %s missing (have %v)", RouterBackendIface, want, addrs)
			}
		}
		if RemoteGatewayIPv4.String() != "198.18.2.1" || RemoteGatewayIPv6.String() != "2001:db8:3::1" {
			t.Errorf("gateways %s %s", RemoteGatewayIPv4, RemoteGatewayIPv6)
		}
	})

	t.Run("Switches", func(t *testing.T) {
		prog, err := topo.Env.PassProgram()
		if err != nil {
			t.Fatal(err)
		}
		info, err := prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		progID, _ := info.ID()
		check := func(sw *Host, bridge string, want []string) {
			t.Helper()
			br, err := sw.Link(bridge)
			if err != nil {
				t.Fatal(err)
			}
			links, err := sw.Handle().LinkList()
			if err != nil {
				t.Fatal(err)
			}
			var ports []string
			for _, l := range links {
				if l.Attrs().MasterIndex != br.Attrs().Index {
					continue
				}
				ports = append(ports, l.Attrs().Name)
				x := l.Attrs().Xdp
				if x == nil || !x.Attached || x.AttachMode != nl.XDP_ATTACHED_DRV || x.ProgId != uint32(progID) {
					t.Errorf("%s/%s: XDP %+v, want program %d in native mode", sw.Role(), l.Attrs().Name, x, progID)
				}
			}
			if got := strings.Join(ports, " "); got != strings.Join(want, " ") {
				t.Errorf("%s/%s ports %q, want %q", sw.Role(), bridge, got, strings.Join(want, " "))
			}
		}
		check(topo.Switch, BridgeName, []string{"router", "lb1", "lb2"})
		check(topo.BackendSwitch, BackendBridgeName, []string{"router", "backend1", "backend2"})
		for _, b := range topo.Backends {
			if _, err := topo.BackendSwitch.Link(topo.SwitchPort(b)); err != nil {
				t.Error(err)
			}
		}
		if p := topo.SwitchPort(topo.BackendSwitch); p != "" {
			t.Errorf("SwitchPort(sw2) = %q", p)
		}
	})

	t.Run("Router", func(t *testing.T) {
		eth2, err := topo.Router.Link(RouterBackendIface)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			dst     netip.Addr
			gw      netip.Addr // zero: connected
			ifindex int
		}{
			{RemoteBackendIPv4(1), netip.Addr{}, eth2.Attrs().Index},
			{RemoteBackendIPv6(2), netip.Addr{}, eth2.Attrs().Index},
			{vip4, LB1IPv4, topo.Router.Ifindex},
			{vip6, LB1IPv6, topo.Router.Ifindex},
			{EncapSourceV4.Addr().Next(), LB1IPv4, topo.Router.Ifindex},
			{netip.MustParseAddr("198.18.1.254"), LB1IPv4, topo.Router.Ifindex},
			{EncapSourceV6.Addr().Next(), LB1IPv6, topo.Router.Ifindex},
			{netip.MustParseAddr("2001:db8:4::ffff:1234"), LB1IPv6, topo.Router.Ifindex},
		} {
			routes, err := topo.Router.Handle().RouteGet(ipOf(c.dst))
			if err != nil {
				t.Fatalf("router: route get %s: %v", c.dst, err)
			}
			if len(routes) == 0 {
				t.Errorf("router: no route to %s", c.dst)
				continue
			}
			r := routes[0]
			gwOK := r.Gw == nil
			if c.gw.IsValid() {
				gwOK = r.Gw.Equal(ipOf(c.gw))
			}
			if !gwOK || r.LinkIndex != c.ifindex {
				t.Errorf("router: route to %s = via %v dev %d, want via %v dev %d", c.dst, r.Gw, r.LinkIndex, c.gw, c.ifindex)
			}
		}
		for key, want := range map[string]string{
			"net.ipv4.ip_forward":           "1",
			"net.ipv6.conf.all.forwarding":  "1",
			"net.ipv6.conf.eth0.forwarding": "1",
			"net.ipv6.conf.eth2.forwarding": "1",
			"net.ipv4.conf.all.rp_filter":   "0",
			"net.ipv4.conf.eth0.rp_filter":  "0",
			"net.ipv4.conf.eth2.rp_filter":  "0",
			"net.ipv6.conf.eth2.accept_dad": "0",
		} {
			if v, err := topo.Router.ReadSysctl(key); err != nil || v != want {
				t.Errorf("router: %s = %q (%v), want %s", key, v, err, want)
			}
		}
		for _, ifc := range []string{MainIface, RouterClientIface, RouterBackendIface} {
			if on, err := topo.Router.TxChecksum(ifc); err != nil || on {
				t.Errorf("router/%s: tx checksumming %v (%v), want off", ifc, on, err)
			}
		}
	})

	t.Run("Backends", func(t *testing.T) {
		for _, b := range topo.Backends {
			lo, err := b.Link("lo")
			if err != nil {
				t.Fatal(err)
			}
			addrs, err := b.Handle().AddrList(lo, netlink.FAMILY_ALL)
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, a := range addrs {
				have[a.IPNet.String()] = true
			}
			for _, want := range []string{"203.0.113.10/32", "2001:db8:ffff::10/128"} {
				if !have[want] {
					t.Errorf("%s: %s not on lo (have %v)", b.Name, want, addrs)
				}
			}
			for key, want := range map[string]string{
				"net.ipv4.conf.all.arp_ignore":    "1",
				"net.ipv4.conf.all.arp_announce":  "2",
				"net.ipv4.conf.eth0.arp_ignore":   "1",
				"net.ipv4.conf.eth0.arp_announce": "2",
				"net.ipv4.conf.all.rp_filter":     "0",
				"net.ipv4.conf.eth0.rp_filter":    "0",
				"net.ipv4.conf.lo.rp_filter":      "0",
			} {
				if v, err := b.ReadSysctl(key); err != nil || v != want {
					t.Errorf("%s: %s = %q (%v), want %s", b.Name, key, v, err, want)
				}
			}
			if on, err := b.TxChecksum(MainIface); err != nil || on {
				t.Errorf("%s: tx checksumming %v (%v), want off", b.Name, on, err)
			}
			// Default routes via the router's backend side.
			for dst, gw := range map[netip.Addr]netip.Addr{ClientIPv4: RemoteGatewayIPv4, ClientIPv6: RemoteGatewayIPv6} {
				routes, err := b.Handle().RouteGet(ipOf(dst))
				if err != nil {
					t.Fatal(err)
				}
				if len(routes) == 0 || !routes[0].Gw.Equal(ipOf(gw)) || routes[0].LinkIndex != b.Ifindex {
					t.Errorf("%s: route to %s = %v, want via %s dev eth0", b.Name, dst, routes, gw)
				}
			}
		}
	})

	t.Run("ClientPing", func(t *testing.T) {
		for _, b := range topo.Backends {
			for _, dst := range []netip.Addr{b.IPv4, b.IPv6} {
				ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				if err := topo.Client.Ping(ctx, dst); err != nil {
					t.Errorf("client -> %s: %v", dst, err)
				}
				cancel()
			}
			for _, dst := range []netip.Addr{ClientIPv4, ClientIPv6} {
				ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				if err := b.Ping(ctx, dst); err != nil {
					t.Errorf("%s -> %s: %v", b.Role(), dst, err)
				}
				cancel()
			}
		}
	})

	t.Run("LBThroughRouter", func(t *testing.T) {
		// lb2's route too; lb1 also pings, then must not know the backends.
		for _, b := range topo.Backends {
			for dst, gw := range map[netip.Addr]netip.Addr{b.IPv4: RouterIPv4, b.IPv6: RouterIPv6} {
				routes, err := topo.LB2.Handle().RouteGet(ipOf(dst))
				if err != nil {
					t.Fatalf("lb2: route get %s: %v", dst, err)
				}
				if len(routes) == 0 || !routes[0].Gw.Equal(ipOf(gw)) || routes[0].LinkIndex != topo.LB2.Ifindex {
					t.Errorf("lb2: route to %s = %v, want via %s dev eth0", dst, routes, gw)
				}
			}
		}
		lb := topo.LB1
		for _, b := range topo.Backends {
			for _, dst := range []netip.Addr{b.IPv4, b.IPv6} {
				ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				if err := lb.Ping(ctx, dst); err != nil {
					t.Errorf("lb1 -> %s: %v", dst, err)
				}
				cancel()
				gw := RouterIPv4
				if dst.Is6() {
					gw = RouterIPv6
				}
				routes, err := lb.Handle().RouteGet(ipOf(dst))
				if err != nil {
					t.Fatalf("lb1: route get %s: %v", dst, err)
				}
				if len(routes) == 0 || !routes[0].Gw.Equal(ipOf(gw)) || routes[0].LinkIndex != lb.Ifindex {
					t.Errorf("lb1: route to %s = %v, want via %s dev eth0", dst, routes, gw)
				}
			}
		}
		// After the pings lb1 knows the router's MAC but no backend's: the
		// backends are not on its segment.
		neighs, err := lb.Handle().NeighList(0, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		known := map[netip.Addr]bool{}
		for _, n := range neighs {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				known[a.Unmap()] = true
			}
		}
		if !known[RouterIPv4] || !known[RouterIPv6] {
			t.Errorf("lb1: no neighbour entry for the router (have %v)", neighs)
		}
		for _, b := range topo.Backends {
			if known[b.IPv4] || known[b.IPv6] {
				t.Errorf("lb1: neighbour entry for %s (%s %s): backend on lb1's segment", b.Role(), b.IPv4, b.IPv6)
			}
		}
	})

	t.Run("EncapForwarding", func(t *testing.T) {
		// lb1 sends IP-in-IP packets (all four family combinations) from an
		// address of the encapsulation source prefixes, on no interface,
		// to backend1; a raw socket there must see them arrive.
		b := topo.Backends[0]
		src4 := netip.MustParseAddr("198.18.1.7")
		src6 := netip.MustParseAddr("2001:db8:4::7")
		for _, c := range []struct {
			name     string
			network  string // outer family and inner protocol
			src, dst netip.Addr
		}{
			{"4in4", "ip4:4", src4, b.IPv4},
			{"6in4", "ip4:41", src4, b.IPv4},
			{"4in6", "ip6:4", src6, b.IPv6},
			{"6in6", "ip6:41", src6, b.IPv6},
		} {
			t.Run(c.name, func(t *testing.T) {
				if !EncapSourceV4.Contains(c.src) && !EncapSourceV6.Contains(c.src) {
					t.Fatalf("%s outside the encapsulation source prefixes", c.src)
				}
				var rx net.PacketConn
				if err := b.Do(func() (err error) {
					rx, err = net.ListenPacket(c.network, "")
					return err
				}); err != nil {
					t.Fatal(err)
				}
				defer rx.Close()
				var tx net.PacketConn
				if err := topo.LB1.Do(func() (err error) {
					lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
						var serr error
						err := rc.Control(func(fd uintptr) {
							if c.src.Is4() {
								serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
							} else {
								serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
							}
						})
						if err != nil {
							return err
						}
						return serr
					}}
					tx, err = lc.ListenPacket(ctx, c.network, c.src.String())
					return err
				}); err != nil {
					t.Fatal(err)
				}
				defer tx.Close()

				inner := innerPacket(strings.HasSuffix(c.network, ":41"), "fulcrum-encap-"+c.name)
				buf := make([]byte, 2048)
				var lastErr error
				for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
					if _, err := tx.WriteTo(inner, &net.IPAddr{IP: ipOf(c.dst)}); err != nil {
						t.Fatalf("send %s -> %s: %v", c.src, c.dst, err)
					}
					rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
					n, from, err := rx.ReadFrom(buf)
					if err != nil {
						lastErr = err
						continue
					}
					// Go strips the outer IPv4 header; IPv6 raw sockets
					// never deliver it.
					if fa, ok := from.(*net.IPAddr); ok && fa.IP.Equal(ipOf(c.src)) && string(buf[:n]) == string(inner) {
						return
					}
				}
				t.Fatalf("%s -> %s did not reach %s: %v", c.src, c.dst, b.Role(), lastErr)
			})
		}
	})
}

// innerPacket is a minimal inner IPv4 or IPv6 header (client -> VIP, UDP,
// no checksums: nobody decapsulates it here) followed by a marker payload.
func innerPacket(v6 bool, marker string) []byte {
	if v6 {
		h := make([]byte, 40)
		h[0] = 0x60
		h[4], h[5] = 0, byte(len(marker))
		h[6], h[7] = 17, 64
		copy(h[8:], ClientIPv6.AsSlice())
		copy(h[24:], vip6.AsSlice())
		return append(h, marker...)
	}
	h := make([]byte, 20)
	h[0] = 0x45
	h[3] = byte(20 + len(marker))
	h[8], h[9] = 64, 17
	copy(h[12:], ClientIPv4.AsSlice())
	copy(h[16:], vip4.AsSlice())
	return append(h, marker...)
}

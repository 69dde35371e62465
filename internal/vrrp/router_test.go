package vrrp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// These tests run Routers in the canonical topology's lb1 and lb2
// namespaces (198.18.0.2 and .3 on the switch segment) and watch the
// results from the router namespace (198.18.0.1).

var (
	vip4 = netip.MustParsePrefix("198.18.0.100/24")
	vip6 = netip.MustParsePrefix("2001:db8:2::100/64")
)

func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name)
}

// running is a Router started by start, with what its OnState hook saw.
type running struct {
	*Router
	name   string
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	seen   [][2]State
}

func (r *running) hookCalls() [][2]State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// start creates a Router in h's namespace, calls the before functions on
// it, and runs it until stop (or the end of the test).
func start(t *testing.T, h *testenv.Host, cfg Config, before ...func(*Router)) *running {
	t.Helper()
	rr := &running{name: h.Role(), done: make(chan error, 1)}
	cfg.OnState = func(old, new State) {
		rr.mu.Lock()
		rr.seen = append(rr.seen, [2]State{old, new})
		rr.mu.Unlock()
	}
	err := h.Do(func() error {
		var err error
		rr.Router, err = New(cfg, Options{Logger: testLogger(t, h.Role())})
		return err
	})
	if err != nil {
		t.Fatalf("%s: New: %v", h.Role(), err)
	}
	for _, f := range before {
		f(rr.Router)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rr.cancel = cancel
	go func() { rr.done <- rr.Run(ctx) }()
	t.Cleanup(func() { rr.stop(t) })
	return rr
}

// stop cancels Run and waits for it; it returns when Run returned.
func (r *running) stop(t *testing.T) time.Time {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
			if err != nil {
				t.Errorf("%s: Run: %v", r.name, err)
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: Run did not return within 5 s of its context ending", r.name)
	}
	return time.Now()
}

// waitState waits until r is in state s and returns when it got there.
func waitState(t *testing.T, r *running, s State, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for r.State() != s {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %s after %v, want %s; stats %+v", r.name, r.State(), timeout, s, r.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	return r.Stats().LastTransition
}

// stays checks that r stays in state s for d.
func stays(t *testing.T, r *running, s State, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if got := r.State(); got != s {
			t.Fatalf("%s became %s, want it to stay %s", r.name, got, s)
		}
	}
}

func holds(t *testing.T, h *testenv.Host, p netip.Prefix) bool {
	t.Helper()
	link, err := h.Link(testenv.MainIface)
	if err != nil {
		t.Fatal(err)
	}
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := h.Handle().AddrList(link, family)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == p.Addr() {
			return true
		}
	}
	return false
}

func checkHolder(t *testing.T, topo *testenv.Topology, holder *testenv.Host, p netip.Prefix) {
	t.Helper()
	// The state flips before the netlink changes land: give them a moment.
	deadline := time.Now().Add(time.Second)
	for _, h := range []*testenv.Host{topo.LB1, topo.LB2} {
		want := h == holder
		for holds(t, h, p) != want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := holds(t, h, p); got != want {
			t.Errorf("%s holds %s: %v, want %v", h.Role(), p, got, want)
		}
	}
}

// neighbour returns the router's neighbour-table MAC for a.
func neighbour(t *testing.T, router *testenv.Host, a netip.Addr) net.HardwareAddr {
	t.Helper()
	family := netlink.FAMILY_V4
	if a.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := router.Handle().NeighList(0, family)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a && len(n.HardwareAddr) == 6 {
			return n.HardwareAddr
		}
	}
	return nil
}

// waitNeighbour waits until the router resolves a to mac without asking:
// only a gratuitous ARP or unsolicited NA changes an entry this fast.
func waitNeighbour(t *testing.T, router *testenv.Host, a netip.Addr, mac net.HardwareAddr, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := neighbour(t, router, a)
		if got.String() == mac.String() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("router's neighbour entry for %s is %v after %v, want %s", a, got, timeout, mac)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func ping(t *testing.T, h *testenv.Host, a netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := h.Ping(ctx, a); err != nil {
		t.Fatalf("ping %s from %s: %v", a, h.Role(), err)
	}
}

// waitReceived waits until r has accepted n advertisements.
func waitReceived(t *testing.T, r *running, n uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for r.Stats().AdvertsReceived < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s accepted %d advertisements after %v, want %d: %+v", r.name, r.Stats().AdvertsReceived, timeout, n, r.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

func checkNoDrops(t *testing.T, r *running) {
	t.Helper()
	checkDrops(t, r, nil)
}

// checkDrops checks the drop counters against want (absent = 0) and that
// nothing failed to send.
func checkDrops(t *testing.T, r *running, want map[string]uint64) {
	t.Helper()
	s := r.Stats()
	for reason, n := range s.Dropped {
		if n != want[reason] {
			t.Errorf("%s dropped %d packets for %s, want %d: %+v", r.name, n, reason, want[reason], s)
		}
	}
	if s.SendErrors != 0 {
		t.Errorf("%s: %d send errors", r.name, s.SendErrors)
	}
}

func baseConfig(priority int, vips ...netip.Prefix) Config {
	return Config{
		Interface: testenv.MainIface, VRID: 51, Priority: priority, AdvertInterval: 10,
		Preempt: true, VirtualAddresses: vips, GratuitousCount: 3,
	}
}

// TestFailover runs lb1 (priority 200) and lb2 (100): lb1 is master, then
// its router stops (priority 0), comes back (preempts), and its link goes
// down and up.
func TestFailover(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	const interval = 100 * time.Millisecond
	downInterval := 3*interval + 60*time.Millisecond // lb2: priority 100

	r1 := start(t, topo.LB1, baseConfig(200, vip4))
	r2 := start(t, topo.LB2, baseConfig(100, vip4))
	waitState(t, r1, Master, 2*time.Second)
	waitState(t, r2, Backup, time.Second)
	stays(t, r2, Backup, 300*time.Millisecond)
	checkHolder(t, topo, topo.LB1, vip4)
	ping(t, topo.Router, vip4.Addr())
	ping(t, topo.Client, vip4.Addr())
	if got := neighbour(t, topo.Router, vip4.Addr()); got.String() != topo.LB1.MAC.String() {
		t.Errorf("router resolves %s to %v, want lb1's %s", vip4.Addr(), got, topo.LB1.MAC)
	}
	if s := r2.Stats(); s.AdvertsReceived == 0 || s.Master != testenv.LB1IPv4 || s.MasterAdvertInterval != 10 {
		t.Errorf("lb2 stats: %+v; want adverts received from master 198.18.0.2 at 10 cs", s)
	}

	// 1. lb1's router stops: it advertises priority 0, lb2 takes over
	// after its skew time.
	stopped := r1.stop(t)
	took := waitState(t, r2, Master, 2*time.Second)
	t.Logf("graceful stop: lb2 master %v after lb1's router stopped (skew 60 ms, master-down interval %v)", took.Sub(stopped), downInterval)
	if d := took.Sub(stopped); d > downInterval {
		t.Errorf("lb2 took %v to take over after a priority-0 advertisement, want under %v", d, downInterval)
	}
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB2.MAC, time.Second)
	checkHolder(t, topo, topo.LB2, vip4)
	ping(t, topo.Router, vip4.Addr())
	if s := r1.Stats(); s.PriorityZeroSent != 1 || s.State != Initialize {
		t.Errorf("lb1 after stop: %+v; want one priority-0 advertisement and state init", s)
	}
	if s := r2.Stats(); s.PriorityZeroReceived != 1 {
		t.Errorf("lb2 received %d priority-0 advertisements, want 1", s.PriorityZeroReceived)
	}
	want := [][2]State{{Initialize, Backup}, {Backup, Master}, {Master, Initialize}}
	if got := r1.hookCalls(); !slices.Equal(got, want) {
		t.Errorf("lb1's OnState calls: %v, want %v", got, want)
	}

	// 2. lb1 comes back and preempts.
	restarted := time.Now()
	r1 = start(t, topo.LB1, baseConfig(200, vip4))
	back := waitState(t, r1, Master, 2*time.Second)
	waitState(t, r2, Backup, time.Second)
	t.Logf("preemption: lb1 master %v after restart (its master-down interval: 320 ms)", back.Sub(restarted))
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB1.MAC, time.Second)
	checkHolder(t, topo, topo.LB1, vip4)
	ping(t, topo.Client, vip4.Addr())

	// 3. lb1's link goes down: lb1 goes to Fault and releases the address,
	// lb2 takes over when its master-down timer runs out.
	link, err := topo.LB1.Link(testenv.MainIface)
	if err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	if err := topo.LB1.Handle().LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	took = waitState(t, r2, Master, 2*time.Second)
	t.Logf("link down: lb2 master %v after lb1's link went down (master-down interval %v)", took.Sub(down), downInterval)
	if d := took.Sub(down); d > downInterval+50*time.Millisecond {
		t.Errorf("lb2 took %v to take over, want at most the master-down interval %v (+50 ms)", d, downInterval)
	}
	waitState(t, r1, Fault, time.Second)
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB2.MAC, time.Second)
	checkHolder(t, topo, topo.LB2, vip4)
	ping(t, topo.Router, vip4.Addr())

	// 4. The link comes back: lb1 starts as backup and preempts. (Setting
	// the link down flushed lb1's routes through it: put its default route
	// back for the client's replies.)
	if err := topo.LB1.Handle().LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	if err := topo.LB1.AddDefaultRoute(testenv.RouterIPv4); err != nil && !errors.Is(err, unix.EEXIST) {
		t.Fatal(err)
	}
	waitState(t, r1, Master, 3*time.Second)
	waitState(t, r2, Backup, time.Second)
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB1.MAC, time.Second)
	checkHolder(t, topo, topo.LB1, vip4)
	ping(t, topo.Client, vip4.Addr())
	checkNoDrops(t, r2)
	t.Logf("lb1: %+v", r1.Stats())
	t.Logf("lb2: %+v", r2.Stats())
}

// TestFailoverIPv6 elects over IPv6 (ff02::12, link-local sources) and
// moves an IPv6 address with unsolicited Neighbor Advertisements.
func TestFailoverIPv6(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	for _, h := range []*testenv.Host{topo.LB1, topo.LB2, topo.Router} {
		if err := h.WaitAddrs(2 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(p int) Config {
		c := baseConfig(p, vip6, vip4)
		c.Family = "ipv6"
		return c
	}
	r1 := start(t, topo.LB1, cfg(200))
	r2 := start(t, topo.LB2, cfg(100))
	waitState(t, r1, Master, 2*time.Second)
	waitState(t, r2, Backup, time.Second)
	checkHolder(t, topo, topo.LB1, vip6)
	checkHolder(t, topo, topo.LB1, vip4) // held, not advertised
	ping(t, topo.Router, vip6.Addr())
	ping(t, topo.Client, vip6.Addr())
	waitReceived(t, r2, 1, time.Second)
	if s := r2.Stats(); !s.Master.IsLinkLocalUnicast() {
		t.Errorf("lb2 stats: %+v; want adverts from lb1's link-local address", s)
	}
	stays(t, r2, Backup, 300*time.Millisecond)

	// A hop limit other than 255 is dropped.
	err := topo.Router.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, Protocol)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 254); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, topo.Router.Ifindex); err != nil {
			return err
		}
		a := Advert{VRID: 51, Priority: 254, MaxAdvertInterval: 10, Addresses: []netip.Addr{vip6.Addr()}}
		b, err := a.Marshal(netip.MustParseAddr("fe80::1"), GroupIPv6)
		if err != nil {
			return err
		}
		return unix.Sendto(fd, b, 0, &unix.SockaddrInet6{Addr: GroupIPv6.As16(), ZoneId: uint32(topo.Router.Ifindex)})
	})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Second); r1.Stats().Dropped["ttl"] == 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("lb1 did not drop an advertisement with hop limit 254: %+v", r1.Stats())
		}
	}
	if s := r1.Stats(); s.State != Master || s.AdvertsReceived != 0 {
		t.Errorf("lb1 after a hop-limit-254 advertisement: %+v; want master, none accepted", s)
	}

	r1.stop(t)
	waitState(t, r2, Master, time.Second)
	waitNeighbour(t, topo.Router, vip6.Addr(), topo.LB2.MAC, time.Second)
	checkHolder(t, topo, topo.LB2, vip6)
	ping(t, topo.Router, vip6.Addr())
	checkDrops(t, r2, map[string]uint64{"ttl": 1})
}

// TestAddressOwner: at priority 255 the router is master at once, and the
// virtual address, its own, stays when it stops.
func TestAddressOwner(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	own := netip.PrefixFrom(testenv.LB1IPv4, 24)
	r2 := start(t, topo.LB2, baseConfig(100, own))
	began := time.Now()
	r1 := start(t, topo.LB1, baseConfig(255, own))
	if d := waitState(t, r1, Master, time.Second).Sub(began); d > 100*time.Millisecond {
		t.Errorf("the address owner became master after %v, want at once", d)
	}
	waitReceived(t, r2, 1, time.Second)
	stays(t, r2, Backup, 500*time.Millisecond)
	if s := r2.Stats(); s.Master != testenv.LB1IPv4 {
		t.Errorf("lb2's master is %s, want 198.18.0.2", s.Master)
	}
	r1.stop(t)
	waitState(t, r2, Master, time.Second)
	if !holds(t, topo.LB1, own) {
		t.Errorf("the owner's own address %s was removed", own)
	}
	if s := r1.Stats(); s.PriorityZeroSent != 1 {
		t.Errorf("owner sent %d priority-0 advertisements on stop, want 1", s.PriorityZeroSent)
	}

	// An owner whose priority is lowered before Run (the daemon found it
	// sick) is no owner: it starts as backup.
	r1 = start(t, topo.LB1, baseConfig(255, own), func(r *Router) { r.SetPriorityOffset(-100) })
	waitState(t, r1, Backup, time.Second)
	stays(t, r1, Backup, 200*time.Millisecond)
	if s := r1.Stats(); s.Priority != 155 {
		t.Errorf("priority %d, want 155", s.Priority)
	}
	waitState(t, r1, Master, time.Second) // preempts lb2 (100)
}

// TestUnicastPeers elects over unicast instead of multicast.
func TestUnicastPeers(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	c1, c2 := baseConfig(200, vip4), baseConfig(100, vip4)
	c1.UnicastPeers = []netip.Addr{testenv.LB2IPv4}
	c2.UnicastPeers = []netip.Addr{testenv.LB1IPv4}
	r1 := start(t, topo.LB1, c1)
	r2 := start(t, topo.LB2, c2)
	waitState(t, r1, Master, 2*time.Second)
	waitState(t, r2, Backup, time.Second)
	stays(t, r2, Backup, 300*time.Millisecond)
	if s := r2.Stats(); s.AdvertsReceived == 0 {
		t.Errorf("lb2 received no unicast advertisements: %+v", s)
	}
	r1.stop(t)
	waitState(t, r2, Master, time.Second)
	checkNoDrops(t, r2)
}

// twentyMillisecondPair starts lb1 (priority 200) and lb2 (100) at a 2 cs
// interval and waits until lb1 is master and lb2 backup.
func twentyMillisecondPair(t *testing.T) (*testenv.Topology, *running, *running) {
	t.Helper()
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	c1, c2 := baseConfig(200, vip4), baseConfig(100, vip4)
	c1.AdvertInterval, c2.AdvertInterval = 2, 2
	r1 := start(t, topo.LB1, c1)
	r2 := start(t, topo.LB2, c2)
	waitState(t, r1, Master, 2*time.Second)
	waitState(t, r2, Backup, time.Second)
	return topo, r1, r2
}

// TestTwentyMilliseconds runs at a 2 cs interval and fails over by link
// down: the master-down interval of lb2 is 3×20 ms + 10 ms.
func TestTwentyMilliseconds(t *testing.T) {
	require.Netns(t)
	topo, r1, r2 := twentyMillisecondPair(t)
	stays(t, r2, Backup, 2*time.Second) // no false failover
	link, err := topo.LB1.Link(testenv.MainIface)
	if err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	if err := topo.LB1.Handle().LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	took := waitState(t, r2, Master, time.Second)
	t.Logf("20 ms interval, link down: lb2 master %v later (master-down interval 70 ms)", took.Sub(down))
	if d := took.Sub(down); d > 120*time.Millisecond {
		t.Errorf("lb2 took %v, want at most 70 ms (+50 ms)", d)
	}
	if s := r1.Stats(); s.Transitions != 3 { // init→backup→master→fault
		t.Errorf("lb1 made %d transitions, want 3: %+v", s.Transitions, s)
	}
}

// TestPriorityOffsetAndHandover: a sick master (priority lowered by the
// tracking offset) is preempted; Handover moves mastership without
// preempting back.
func TestPriorityOffsetAndHandover(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	r1 := start(t, topo.LB1, baseConfig(200, vip4))
	r2 := start(t, topo.LB2, baseConfig(100, vip4))
	waitState(t, r1, Master, 2*time.Second)
	ping(t, topo.Router, vip4.Addr()) // a neighbour entry for the announcements to update

	r1.SetPriorityOffset(-150) // 50: below lb2
	waitState(t, r2, Master, time.Second)
	waitState(t, r1, Backup, time.Second)
	if s := r1.Stats(); s.Priority != 50 {
		t.Errorf("lb1's priority is %d, want 50", s.Priority)
	}
	r1.SetPriorityOffset(0)
	waitState(t, r1, Master, time.Second)
	waitState(t, r2, Backup, time.Second)

	r1.Handover()
	waitState(t, r2, Master, time.Second)
	waitState(t, r1, Backup, time.Second)
	stays(t, r1, Backup, time.Second) // no preemption back
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB2.MAC, time.Second)
	r1.Resume()
	waitState(t, r1, Master, time.Second)
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB1.MAC, time.Second)
}

// TestMalformedDropped sends broken advertisements from the router
// namespace and checks that lb1 counts and ignores each.
func TestMalformedDropped(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{Backends: 1})
	r1 := start(t, topo.LB1, baseConfig(200, vip4))
	waitState(t, r1, Master, 2*time.Second)

	var fd int
	err := topo.Router.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, Protocol); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_HDRINCL, 1); err != nil {
			return err
		}
		return unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, testenv.MainIface)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	src := testenv.RouterIPv4
	// A priority-254 advertisement would make lb1 step down if accepted.
	good := func() []byte {
		a := Advert{VRID: 51, Priority: 254, MaxAdvertInterval: 10, Addresses: []netip.Addr{vip4.Addr()}}
		b, err := a.Append(make([]byte, ipv4HeaderLen), src, GroupIPv4)
		if err != nil {
			t.Fatal(err)
		}
		putIPv4Header(b, src, GroupIPv4)
		return b
	}
	reseal := func(b []byte) []byte {
		m := b[ipv4HeaderLen:]
		m[6], m[7] = 0, 0
		c := checksum(src, GroupIPv4, m)
		m[6], m[7] = byte(c>>8), byte(c)
		return b
	}
	cases := []struct {
		name string
		pkt  []byte
		want DropReason
	}{
		{"ttl 254", func() []byte { b := good(); b[8] = 254; return b }(), DropTTL},
		{"bad checksum", func() []byte { b := good(); b[ipv4HeaderLen+7] ^= 0xff; return b }(), DropChecksum},
		{"version 2", reseal(func() []byte { b := good(); b[ipv4HeaderLen] = 0x21; return b }()), DropVersion},
		{"wrong vrid", reseal(func() []byte { b := good(); b[ipv4HeaderLen+1] = 52; return b }()), DropVRID},
		{"short", func() []byte { b := good()[:ipv4HeaderLen+6]; b[3] = byte(len(b)); return b }(), DropShort},
		{"count mismatch", reseal(func() []byte { b := good(); b[ipv4HeaderLen+3] = 2; return b }()), DropLength},
	}
	sa := &unix.SockaddrInet4{Addr: GroupIPv4.As4()}
	for _, tc := range cases {
		before := r1.Stats().Dropped[tc.want.String()]
		for range 3 {
			if err := unix.Sendto(fd, tc.pkt, 0, sa); err != nil {
				t.Fatalf("%s: send: %v", tc.name, err)
			}
		}
		deadline := time.Now().Add(time.Second)
		for r1.Stats().Dropped[tc.want.String()] < before+3 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: dropped[%s] = %d, want %d; stats %+v", tc.name, tc.want, r1.Stats().Dropped[tc.want.String()], before+3, r1.Stats())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	stays(t, r1, Master, 300*time.Millisecond)
	if s := r1.Stats(); s.AdvertsReceived != 0 {
		t.Errorf("lb1 accepted %d advertisements, want 0: %+v", s.AdvertsReceived, s)
	}
	// The valid one is accepted: lb1 steps down.
	if err := unix.Sendto(fd, good(), 0, sa); err != nil {
		t.Fatal(err)
	}
	waitState(t, r1, Backup, time.Second)
}

// TestSendDoesNotAllocate sends advertisements through a real socket.
func TestSendDoesNotAllocate(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	for _, family := range []string{"ipv4", "ipv6"} {
		cfg := baseConfig(200, vip4, vip6)
		cfg.Family = family
		var r *Router
		err := topo.LB1.Do(func() error {
			var err error
			if r, err = New(cfg, Options{}); err != nil {
				return err
			}
			deadline := time.Now().Add(2 * time.Second)
			for err = r.refresh(); err != nil && time.Now().Before(deadline); err = r.refresh() {
				time.Sleep(10 * time.Millisecond) // the link-local address may come late
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(200, func() { r.advertise(200) })
		if allocs != 0 {
			t.Errorf("%s: %v allocations per advertisement, want 0", family, allocs)
		}
		if s := r.Stats(); s.AdvertsSent < 200 || s.SendErrors != 0 {
			t.Errorf("%s: %+v, want 200 sent and no errors", family, s)
		}
		r.Close()
	}
}

func TestConfigCheck(t *testing.T) {
	good := baseConfig(100, vip4)
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no interface", func(c *Config) { c.Interface = "" }},
		{"vrid 0", func(c *Config) { c.VRID = 0 }},
		{"vrid 256", func(c *Config) { c.VRID = 256 }},
		{"priority 0", func(c *Config) { c.Priority = 0 }},
		{"interval 4096", func(c *Config) { c.AdvertInterval = 4096 }},
		{"family ipx", func(c *Config) { c.Family = "ipx" }},
		{"ipv6 peer for ipv4", func(c *Config) { c.UnicastPeers = []netip.Addr{netip.MustParseAddr("fe80::1")} }},
		{"duplicate address", func(c *Config) { c.VirtualAddresses = []netip.Prefix{vip4, vip4} }},
		{"negative gratuitous count", func(c *Config) { c.GratuitousCount = -1 }},
	} {
		c := good
		tc.mod(&c)
		if _, err := New(c, Options{}); err == nil {
			t.Errorf("%s: New accepted %+v", tc.name, c)
		} else if errors.Is(err, unix.EPERM) {
			t.Errorf("%s: got a socket error, want a config error: %v", tc.name, err)
		}
	}
	if err := good.check(); err != nil {
		t.Errorf("check(%+v): %v", good, err)
	}
}

func TestEffectivePriority(t *testing.T) {
	for _, tc := range []struct{ configured, offset, want int }{
		{100, 0, 100}, {255, 0, 255}, {255, -10, 245}, {200, -150, 50},
		{100, -200, 1}, {100, 200, 254}, {255, 1, 254},
	} {
		if got := effectivePriority(tc.configured, tc.offset); int(got) != tc.want {
			t.Errorf("effectivePriority(%d, %d) = %d, want %d", tc.configured, tc.offset, got, tc.want)
		}
	}
}

// TestMain gives the tests the scheduling headroom docs/vrrp.md asks of the
// daemon: more Ps than CPUs, so that a Router's real-time thread finds an
// idle P when it wakes up.
func TestMain(m *testing.M) {
	runtime.GOMAXPROCS(max(runtime.NumCPU()+2, runtime.GOMAXPROCS(0)))
	os.Exit(m.Run())
}

// TestNoFalseFailoverUnderLoad keeps every CPU busy with processes of
// ordinary priority, twice over, and checks that the backup never takes
// over from a healthy master at the default interval.
func TestNoFalseFailoverUnderLoad(t *testing.T) {
	require.Netns(t)
	if testing.Short() {
		t.Skip("skipped in -short mode: takes 10 s")
	}
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	r1 := start(t, topo.LB1, baseConfig(200, vip4))
	r2 := start(t, topo.LB2, baseConfig(100, vip4))
	waitState(t, r1, Master, 2*time.Second)
	waitState(t, r2, Backup, time.Second)
	for range 2 * runtime.NumCPU() {
		hog := exec.Command("sh", "-c", "while :; do :; done")
		if err := hog.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = hog.Process.Kill()
			_ = hog.Wait()
		})
	}
	// 100 advertisements at the default 100 ms: 10 s under load, with at
	// most 10 late or lost (11 s), as long as lb2 stays backup.
	before := r2.Stats()
	const adverts, within = 100, 11 * time.Second
	took, err := require.Poll(within, func() error {
		s := r2.Stats()
		if s.Transitions != before.Transitions || s.State != Backup {
			return nil // a state change ends the wait; reported below
		}
		if got := s.AdvertsReceived - before.AdvertsReceived; got < adverts {
			return fmt.Errorf("lb2 accepted %d advertisements", got)
		}
		return nil
	})
	after := r2.Stats()
	if after.Transitions != before.Transitions || after.State != Backup {
		t.Errorf("lb2 changed state under load: %d transitions, now %s", after.Transitions-before.Transitions, after.State)
	}
	if err != nil {
		t.Errorf("%v, want %d at one per 100 ms", err, adverts)
	}
	m := r1.Stats()
	t.Logf("under load: lb2 accepted %d advertisements in %s, worst gap %s (%d over 1.5 intervals); lb1 worst send delay %s, send call %s",
		after.AdvertsReceived-before.AdvertsReceived, took.Round(time.Millisecond), after.WorstAdvertGap, after.LateAdverts, m.WorstSendDelay, m.WorstSendCall)
	// The timing statistics: a backup measures the master's cadence (so
	// at least one interval), a master its own lateness.
	if after.WorstAdvertGap < 90*time.Millisecond || after.WorstAdvertGap > 370*time.Millisecond {
		t.Errorf("lb2's worst advertisement gap %s, want from about 100 ms to under the master down interval", after.WorstAdvertGap)
	}
	if m.WorstSendCall <= 0 || m.WorstSendDelay < 0 || m.WorstAdvertGap != 0 {
		t.Errorf("lb1 (master throughout): worst send delay %s, call %s, advert gap %s", m.WorstSendDelay, m.WorstSendCall, m.WorstAdvertGap)
	}
}

// TestRealtimeThread checks that Run's loop and its guards have SCHED_RR
// threads of their own, and that the threads go away with Run.
func TestRealtimeThread(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{Backends: 1})
	rrThreads := func() int {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				continue
			}
			if policy, err := schedPolicy(tid); err == nil && policy == unix.SCHED_RR {
				n++
			}
		}
		return n
	}
	before := rrThreads()
	r1 := start(t, topo.LB1, baseConfig(200, vip4))
	waitState(t, r1, Master, 2*time.Second)
	// The loop's and the guards' (guard.go).
	if got, want := rrThreads(), before+1+len(guardCPUs()); got != want {
		t.Errorf("%d SCHED_RR threads while running, want %d", got, want)
	}
	r1.stop(t)
	deadline := time.Now().Add(time.Second)
	for rrThreads() != before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := rrThreads(); got != before {
		t.Errorf("%d SCHED_RR threads after Run returned, want %d", got, before)
	}
}

// schedPolicy returns a thread's scheduling policy.
func schedPolicy(tid int) (int, error) {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return 0, err
	}
	return int(attr.Policy), nil
}

// TestGuardCoversStall holds the master's protocol thread up for 300 ms,
// four times lb2's master-down interval at 20 ms (as a CPU that does not
// switch to it would): the guards send its advertisements meanwhile, no
// later than a quarter interval, and lb2 stays backup.
func TestGuardCoversStall(t *testing.T) {
	require.Netns(t)
	// One CPU has no guards: a guard on the protocol thread's CPU would
	// stall with it (guardCPUs).
	require.CPUs(t, 2)
	_, r1, r2 := twentyMillisecondPair(t)
	waitReceived(t, r2, 5, time.Second)
	before1, before2 := r1.Stats(), r2.Stats()

	// The loop wakes for a request and waits for the request lock, which
	// this goroutine holds: the thread is held up as by a stalled CPU.
	const stall = 300 * time.Millisecond
	r1.ctl.Lock()
	held := true
	release := func() {
		if held {
			held = false
			r1.ctl.Unlock()
		}
	}
	defer release()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(r1.wake, one[:]); err != nil {
		t.Fatal(err)
	}
	// The stall: lb2 is watched all through it, not slept through.
	stays(t, r2, Backup, stall)
	release()
	stays(t, r2, Backup, 100*time.Millisecond)

	s1, s2 := r1.Stats(), r2.Stats()
	// 300 ms at 20 ms: about 15 advertisements from the guards.
	if got := s1.GuardSent - before1.GuardSent; got < 10 {
		t.Errorf("guards sent %d advertisements during a %s stall, want at least 10", got, stall)
	}
	if s2.Transitions != before2.Transitions {
		t.Errorf("lb2 made %d transitions during lb1's stall, want none", s2.Transitions-before2.Transitions)
	}
	// An interval plus the guards' grace (25 ms) when the machine is
	// quiet; three intervals leave room for a busy one and stay under
	// master down (70 ms). Without the guards the gap is the stall.
	if limit := 3 * 20 * time.Millisecond; s2.WorstAdvertGap > limit {
		t.Errorf("lb2's worst gap between lb1's advertisements %s, want at most %s", s2.WorstAdvertGap, limit)
	}
	t.Logf("a %s stall of lb1's protocol thread: %d advertisements from its guards, lb2's worst gap %s",
		stall, s1.GuardSent-before1.GuardSent, s2.WorstAdvertGap)
}

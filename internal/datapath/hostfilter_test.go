package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

// Addresses of the host itself in these tests: no VIP, and (checked) no
// bit shared with a fixture VIP's address.
var (
	hostAddr4 = addr("203.0.113.1")
	hostAddr6 = addr("2001:db8:5::1")
)

// hostFilterWant returns the bitmap the filter must hold for addrs.
func hostFilterWant(h *hostFilter, addrs ...netip.Addr) map[uint32]uint64 {
	want := make(map[uint32]uint64)
	for _, a := range addrs {
		b := h.bit(a)
		want[b>>6] |= 1 << (b & 63)
	}
	return want
}

// checkHostFilter fails unless the map holds exactly the bits of addrs.
func checkHostFilter(t *testing.T, d *Datapath, addrs ...netip.Addr) {
	t.Helper()
	want := hostFilterWant(d.hosts, addrs...)
	// Read through the map, not through the datapath's own mapping.
	n := d.objs.HostFilter.MaxEntries()
	got := make([]uint64, n)
	keys := make([]uint32, n)
	for i := range keys {
		keys[i] = uint32(i)
	}
	var cursor ebpf.MapBatchCursor
	if c, err := d.objs.HostFilter.BatchLookup(&cursor, keys, got, nil); c != int(n) {
		t.Fatalf("read host_filter: %d of %d words: %v", c, n, err)
	}
	set := 0
	for i, w := range got {
		set += bits.OnesCount64(w)
		if w != want[uint32(i)] {
			t.Errorf("host_filter word %d = %#x, want %#x (addresses %v)", i, w, want[uint32(i)], addrs)
		}
	}
	if set != len(addrsBits(d.hosts, addrs)) {
		t.Errorf("host_filter has %d bits set, want %d", set, len(addrsBits(d.hosts, addrs)))
	}
}

func addrsBits(h *hostFilter, addrs []netip.Addr) map[uint32]bool {
	out := make(map[uint32]bool)
	for _, a := range addrs {
		out[h.bit(a)] = true
	}
	return out
}

// fixtureAddrs are the addresses of the fixture VIPs.
func fixtureAddrs() []netip.Addr {
	seen := make(map[netip.Addr]bool)
	var out []netip.Addr
	for _, p := range fixtureState() {
		if !seen[p.vip.Addr] {
			seen[p.vip.Addr] = true
			out = append(out, p.vip.Addr)
		}
	}
	return out
}

// collide4 returns an address of 203.0.113.0/24 or 192.0.2.0/24 and one
// of 198.18.0.0/15 whose prefilter bits are the same (none of the
// fixture's). The hash is a multiply, so whole ranges either collide
// (a constant difference between their words) or do not: the search spans
// two ranges on the first side.
func collide4(t *testing.T, h *hostFilter) (netip.Addr, netip.Addr) {
	t.Helper()
	taken := make(map[netip.Addr]bool)
	for _, a := range append(fixtureAddrs(), addr(client4)) {
		taken[a] = true
	}
	for _, b := range backends4 {
		taken[b.Addr] = true
	}
	byBit := make(map[uint32]netip.Addr)
	for i := range 1 << 17 {
		a := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
		if !taken[a] {
			byBit[h.bit(a)] = a
		}
	}
	for _, net := range [][3]byte{{203, 0, 113}, {192, 0, 2}} {
		for i := 100; i < 256; i++ {
			x := netip.AddrFrom4([4]byte{net[0], net[1], net[2], byte(i)})
			if y, ok := byBit[h.bit(x)]; ok && !taken[x] {
				return x, y
			}
		}
	}
	t.Fatal("no two IPv4 addresses in the ranges share a prefilter bit")
	return netip.Addr{}, netip.Addr{}
}

// collide6 returns an address whose XOR-fold, and so whose prefilter bit,
// is a's: words 2 and 3 flipped by the same bits.
func collide6(a netip.Addr) netip.Addr {
	b := a.As16()
	b[11] ^= 1
	b[15] ^= 1
	return netip.AddrFrom16(b)
}

// TestHostFilterHostTraffic checks that traffic to the host's own
// addresses, which no VIP has, passes untouched with pass_no_vip alone, and
// that the filter is what passes it: a connection entry planted for the
// flow (pointing at a fixture VIP's backend) is never consulted.
func TestHostFilterHostTraffic(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)
	checkHostFilter(t, d, fixtureAddrs()...)
	for _, a := range fixtureAddrs() {
		for _, h := range []netip.Addr{hostAddr4, hostAddr6} {
			if d.hosts.bit(a) == d.hosts.bit(h) {
				t.Fatalf("host address %s shares the prefilter bit of vip address %s: pick another", h, a)
			}
		}
	}
	web := d.vips[vipWeb4]
	var be *backendEntry
	for _, b := range web.backends {
		be = b
	}
	ack := func(src, dst string, sport, dport uint16) testpacket.Packet { return pkt(src, dst, TCP, sport, dport) }
	syn := func(p testpacket.Packet) testpacket.Packet { p.SYN = true; return p }
	cases := []struct {
		name  string
		in    testpacket.Packet
		plant bool // plant a connection entry for the flow first
	}{
		{name: "v4 tcp ack", in: ack(client4, hostAddr4.String(), 40100, 22)},
		{name: "v4 tcp ack with an entry", in: ack(client4, hostAddr4.String(), 40101, 22), plant: true},
		{name: "v4 tcp syn", in: syn(ack(client4, hostAddr4.String(), 40102, 179))},
		{name: "v4 udp", in: pkt(client4, hostAddr4.String(), UDP, 40103, 53)},
		{name: "v4 udp with an entry", in: pkt(client4, hostAddr4.String(), UDP, 40104, 53), plant: true},
		{name: "v4 tcp ack to port 80 (a vip port elsewhere)", in: ack(client4, hostAddr4.String(), 40105, 80)},
		{name: "v6 tcp ack", in: ack(client6, hostAddr6.String(), 41100, 22)},
		{name: "v6 tcp ack with an entry", in: ack(client6, hostAddr6.String(), 41101, 22), plant: true},
		{name: "v6 tcp syn", in: syn(ack(client6, hostAddr6.String(), 41102, 179))},
		{name: "v6 udp", in: pkt(client6, hostAddr6.String(), UDP, 41103, 53)},
		{name: "v4 fragment", in: func() testpacket.Packet {
			p := pkt(client4, hostAddr4.String(), UDP, 40106, 53)
			p.MoreFragments = true
			return p
		}()},
		{name: "v6 fragment", in: func() testpacket.Packet {
			p := pkt(client6, hostAddr6.String(), UDP, 41104, 53)
			p.IPv6Ext = []testpacket.IPv6Ext{testpacket.Fragment(0, true)}
			return p
		}()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.plant {
				f := Flow{Src: c.in.Src, Dst: c.in.Dst, Sport: c.in.Sport, Dport: c.in.Dport, Proto: Proto(c.in.Proto)}
				buckets, keys := ctTables(f.Dst.Is4(), &d.objs)
				clk, err := d.clock()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := putConntrack(buckets, keys, f, balancerCtValue{Backend: be.id, BackendGen: be.gen, LastSeen: clk.jiffies}); err != nil {
					t.Fatal(err)
				}
			}
			in := c.in.Build()
			verdict, out, moved := runCounted(t, d, in)
			if verdict != xdpPass {
				t.Errorf("verdict = %s, want XDP_PASS", verdictNames[verdict])
			}
			if !bytes.Equal(out[:len(in)], in) {
				t.Errorf("the frame changed:\n%s", hexDiff(out[:len(in)], in))
			}
			if got, want := formatStats(moved), formatStats(map[Stat]uint64{StatPassNoVIP: 1}); got != want {
				t.Errorf("counters moved %s, want %s", got, want)
			}
		})
	}
}

// TestHostFilterCollision checks that an address without a VIP whose bit
// a VIP address sets still gets the normal path's verdict: pass_no_vip
// without an entry, and (the probe that it took the normal path, which
// looks in the connection table first) its planted entry's backend with
// one. The same entry for an address whose bit is clear is never read.
func TestHostFilterCollision(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)
	x4, y4 := collide4(t, d.hosts)
	x6 := addr("2001:db8:ffff::60")
	y6 := collide6(x6)
	vx4 := VIP{Addr: x4, Port: 80, Proto: TCP}
	vx6 := VIP{Addr: x6, Port: 80, Proto: TCP}
	for _, v := range []VIP{vx4, vx6} {
		bs := backends4
		if v.Addr.Is6() {
			bs = backends6
		}
		if err := d.AddVIP(v, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, bs); err != nil {
			t.Fatal(err)
		}
	}
	checkHostFilter(t, d, append(fixtureAddrs(), x4, x6)...)
	if d.hosts.bit(y4) != d.hosts.bit(x4) || d.hosts.bit(y6) != d.hosts.bit(x6) {
		t.Fatal("the colliding addresses do not share their vip address's bit")
	}
	clk, err := d.clock()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		vip  VIP
		dst  netip.Addr
		src  string
		bs   []Backend
		miss bool // the destination's bit is clear
	}{
		{vip: vx4, dst: y4, src: client4, bs: backends4},
		{vip: vx6, dst: y6, src: client6, bs: backends6},
		{vip: vx4, dst: hostAddr4, src: client4, bs: backends4, miss: true},
		{vip: vx6, dst: hostAddr6, src: client6, bs: backends6, miss: true},
	} {
		t.Run(c.dst.String(), func(t *testing.T) {
			p := pkt(c.src, c.dst.String(), TCP, 40200, 80)
			want := map[Stat]uint64{StatPassNoVIP: 1}
			run := func(what string, wantVerdict uint32) []byte {
				v, out, moved := runCounted(t, d, p.Build())
				if v != wantVerdict {
					t.Errorf("%s: verdict %s, want %s", what, verdictNames[v], verdictNames[wantVerdict])
				}
				if got := formatStats(moved); got != formatStats(want) {
					t.Errorf("%s: counters moved %s, want %s", what, got, formatStats(want))
				}
				return out
			}
			run("no entry", xdpPass)
			// Plant an entry for the flow on the colliding VIP's
			// backend: the normal path finds it, the filter skips it.
			var be *backendEntry
			for _, b := range d.vips[c.vip].backends {
				be = b
			}
			buckets, keys := ctTables(c.dst.Is4(), &d.objs)
			f := Flow{Src: addr(c.src), Dst: c.dst, Sport: 40200, Dport: 80, Proto: TCP}
			if _, err := putConntrack(buckets, keys, f, balancerCtValue{Backend: be.id, BackendGen: be.gen, LastSeen: clk.jiffies}); err != nil {
				t.Fatal(err)
			}
			if c.miss {
				run("entry, bit clear", xdpPass)
				return
			}
			want = map[Stat]uint64{StatCtHit: 1, StatTxDSR: 1}
			out := run("entry, bit set", xdpTX)
			if !bytes.Equal(out[0:6], be.MAC) {
				t.Errorf("went to MAC %x, want the entry's backend %s (%s)", out[0:6], be.Addr, be.MAC)
			}
		})
	}
}

// TestHostFilterRefcount checks the bitmap through VIP changes: an address
// keeps its bit while any VIP (every-port ones too) is on it, colliding
// addresses share a bit until the last goes, and nothing is left behind.
func TestHostFilterRefcount(t *testing.T) {
	d := newTestDatapath(t)
	x4, y4 := collide4(t, d.hosts)
	x6 := addr("2001:db8:ffff::70")
	y6 := collide6(x6)
	cfg := VIPConfig{Mode: ModeDSR, RingSize: smallRing}
	add := func(v VIP) {
		t.Helper()
		bs := backends4
		if v.Addr.Is6() {
			bs = backends6
		}
		if err := d.AddVIP(v, cfg, bs); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(v VIP) {
		t.Helper()
		if err := d.RemoveVIP(v); err != nil {
			t.Fatal(err)
		}
	}
	checkHostFilter(t, d)
	steps := []struct {
		do   func()
		want []netip.Addr
	}{
		{func() { add(VIP{Addr: x4, Port: 80, Proto: TCP}) }, []netip.Addr{x4}},
		{func() { add(VIP{Addr: x4, Port: 0, Proto: UDP}) }, []netip.Addr{x4}},
		{func() { add(VIP{Addr: y4, Port: 443, Proto: TCP}) }, []netip.Addr{x4, y4}},
		{func() { remove(VIP{Addr: x4, Port: 80, Proto: TCP}) }, []netip.Addr{x4, y4}},
		{func() { remove(VIP{Addr: x4, Port: 0, Proto: UDP}) }, []netip.Addr{y4}}, // the shared bit stays
		{func() { add(VIP{Addr: x6, Port: 0, Proto: TCP}) }, []netip.Addr{y4, x6}},
		{func() { add(VIP{Addr: y6, Port: 53, Proto: UDP}) }, []netip.Addr{y4, x6, y6}},
		{func() { remove(VIP{Addr: y4, Port: 443, Proto: TCP}) }, []netip.Addr{x6, y6}},
		{func() { remove(VIP{Addr: x6, Port: 0, Proto: TCP}) }, []netip.Addr{y6}},
		{func() { remove(VIP{Addr: y6, Port: 53, Proto: UDP}) }, nil},
	}
	for i, s := range steps {
		s.do()
		if t.Failed() {
			t.Fatalf("step %d", i)
		}
		checkHostFilter(t, d, s.want...)
		if t.Failed() {
			t.Fatalf("after step %d", i)
		}
	}
	if len(d.hosts.held) != 0 || len(d.hosts.refs) != 0 {
		t.Errorf("after removing every vip the filter still counts %d addresses and %d bits", len(d.hosts.held), len(d.hosts.refs))
	}
}

// TestHostFilterAdopt checks that a restarted daemon's filter holds the
// pinned VIPs' addresses, and that a bit the last one left set for no
// address is cleared.
func TestHostFilterAdopt(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	d1 := loadPinned(t, dir)
	provision(t, d1)
	checkHostFilter(t, d1, fixtureAddrs()...)
	stray := d1.hosts.bit(hostAddr4)
	d1.hosts.set(stray, true)
	d1.Close()

	d2 := loadPinned(t, dir)
	if !d2.Adopted() {
		t.Fatal("the second load took no pinned state over")
	}
	checkHostFilter(t, d2, fixtureAddrs()...)
	if _, ok := d2.hosts.held[vipWeb6.Addr]; !ok {
		t.Errorf("the adopted filter does not hold %s", vipWeb6.Addr)
	}
	// The adopted counts go on: removing every VIP clears every bit.
	errs := d2.RemoveVIPs(func() (out []VIP) {
		for _, p := range fixtureState() {
			out = append(out, p.vip)
		}
		return out
	}())
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	checkHostFilter(t, d2)
}

// TestHostFilterHammer runs packets on every CPU while VIPs come and go:
// an address with a VIP throughout (beside a VIP that comes and goes on
// the same address, or on an address that shares its bit) must never be
// passed, and a VIP must forward from the moment AddVIP returns until
// RemoveVIP is called, and not at all after RemoveVIP returns. An address
// whose only VIP comes and goes flips its bit each time.
func TestHostFilterHammer(t *testing.T) {
	d := newTestDatapath(t)
	x4, y4 := collide4(t, d.hosts)
	z4 := addr("203.0.113.61")
	w4 := addr("203.0.113.62")
	x6 := addr("2001:db8:ffff::80")
	y6 := collide6(x6)
	for _, a := range []netip.Addr{z4, w4} {
		if b := d.hosts.bit(a); b == d.hosts.bit(x4) || (a == w4 && b == d.hosts.bit(z4)) {
			t.Fatalf("address %s shares a bit with another of the test: pick another", a)
		}
	}
	cfg := VIPConfig{Mode: ModeDSR, RingSize: smallRing}
	steady := []VIP{
		{Addr: y4, Port: 80, Proto: TCP}, // shares x4's bit
		{Addr: z4, Port: 443, Proto: TCP},
		{Addr: y6, Port: 80, Proto: TCP}, // shares x6's bit
	}
	moving := []VIP{
		{Addr: x4, Port: 80, Proto: TCP},
		{Addr: z4, Port: 80, Proto: TCP}, // z4 keeps its steady VIP
		{Addr: w4, Port: 0, Proto: TCP},  // w4's only VIP, every port
		{Addr: x6, Port: 80, Proto: TCP},
	}
	changes := func(vs []VIP) []VIPChange {
		out := make([]VIPChange, len(vs))
		for i, v := range vs {
			bs := backends4
			if v.Addr.Is6() {
				bs = backends6
			}
			out[i] = VIPChange{VIP: v, Config: cfg, Backends: bs}
		}
		return out
	}
	for _, err := range d.SetVIPs(changes(steady)) {
		if err != nil {
			t.Fatal(err)
		}
	}
	type target struct {
		frame  []byte
		moving bool
	}
	var targets []target
	for i, v := range append(append([]VIP(nil), steady...), moving...) {
		src := client4
		if v.Addr.Is6() {
			src = client6
		}
		targets = append(targets, target{frame: pkt(src, v.Addr.String(), TCP, 40300, 80).Build(), moving: i >= len(steady)})
	}
	// The steady VIPs answer port 443 on z4 only.
	targets[1].frame = pkt(client4, z4.String(), TCP, 40300, 443).Build()

	// phase counts the mover's steps: 0 mod 4 the moving VIPs are out,
	// 1 being added, 2 in, 3 being removed. A packet whose phase is the
	// same before and after it ran saw that state throughout.
	var phase atomic.Uint64
	var stop atomic.Bool
	var inChecked, outChecked atomic.Int64
	errc := make(chan error, runtime.NumCPU())
	var wg sync.WaitGroup
	for cpu := range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- onCPU(cpu, func() error {
				for n := 0; !stop.Load(); n++ {
					tg := targets[n%len(targets)]
					p1 := phase.Load()
					opts := ebpf.RunOptions{Data: bytes.Clone(tg.frame), DataOut: make([]byte, len(tg.frame)+512)}
					v, err := d.Program().Run(&opts)
					if err != nil {
						return err
					}
					if phase.Load() != p1 {
						continue
					}
					switch {
					case !tg.moving && v != xdpTX:
						return fmt.Errorf("steady vip target %d: %s in phase %d", n%len(targets), verdictNames[v], p1%4)
					case tg.moving && p1%4 == 2:
						if v != xdpTX {
							return fmt.Errorf("moving vip target %d, added: %s", n%len(targets), verdictNames[v])
						}
						inChecked.Add(1)
					case tg.moving && p1%4 == 0:
						if v != xdpPass {
							return fmt.Errorf("moving vip target %d, removed: %s", n%len(targets), verdictNames[v])
						}
						outChecked.Add(1)
					}
				}
				return nil
			})
		}()
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	fail := func(err error) {
		stop.Store(true)
		wg.Wait()
		t.Fatal(err)
	}
	// Each state stays until the senders checked perPhase packets in it
	// (or one failed), so every flip is looked at from both sides.
	const flips, perPhase = 100, 20
	settle := func(c *atomic.Int64, flip int, state string) {
		from := c.Load()
		_, err := require.Poll(10*time.Second, func() error {
			select {
			case err := <-errc:
				errc <- err
				return nil
			default:
			}
			if c.Load() < from+perPhase {
				return fmt.Errorf("%d packets checked with the moving vips %s, want %d", c.Load()-from, state, perPhase)
			}
			return nil
		})
		if err != nil {
			fail(fmt.Errorf("flip %d: %w", flip, err))
		}
		select {
		case err := <-errc:
			fail(fmt.Errorf("flip %d: %w", flip, err))
		default:
		}
	}
	for flip := range flips {
		settle(&outChecked, flip, "out")
		phase.Add(1)
		if flip%2 == 0 {
			for _, err := range d.SetVIPs(changes(moving)) {
				if err != nil {
					fail(err)
				}
			}
		} else {
			for _, v := range moving {
				if err := d.AddVIP(v, cfg, backends4And6(v)); err != nil {
					fail(err)
				}
			}
		}
		phase.Add(1)
		if !d.hosts.isSet(d.hosts.bit(w4)) {
			fail(fmt.Errorf("flip %d: w4's bit is clear with its vip in", flip))
		}
		settle(&inChecked, flip, "in")
		phase.Add(1)
		for _, err := range d.RemoveVIPs(moving) {
			if err != nil {
				fail(err)
			}
		}
		phase.Add(1)
		if d.hosts.isSet(d.hosts.bit(w4)) {
			fail(fmt.Errorf("flip %d: w4's bit is set with its vip out", flip))
		}
	}
	settle(&outChecked, flips, "out")
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d flips; %d packets checked with the moving vips in, %d out", flips, inChecked.Load(), outChecked.Load())
}

// isSet reports whether a bit of the map is set, as the program reads it.
func (h *hostFilter) isSet(bit uint32) bool {
	return atomic.LoadUint64(&h.words[bit>>6])&(1<<(bit&63)) != 0
}

func backends4And6(v VIP) []Backend {
	if v.Addr.Is6() {
		return backends6
	}
	return backends4
}

// runCounted runs one frame and returns the verdict, the frame out, and
// the counters it moved.
func runCounted(t *testing.T, d *Datapath, in []byte) (uint32, []byte, map[Stat]uint64) {
	t.Helper()
	before, errBefore := d.Counters()
	v, out := runProg(t, d.Program(), in)
	after, errAfter := d.Counters()
	if err := errors.Join(errBefore, errAfter); err != nil {
		t.Fatal(err)
	}
	return v, out, statsDelta(before, after)
}

// loadPinned loads a datapath with pins in dir, closed at the test's end
// (Close twice is harmless).
func loadPinned(t *testing.T, dir string) *Datapath {
	t.Helper()
	d, err := Load(Options{ConntrackEntries: 8192, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

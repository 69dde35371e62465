package datapath

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// TestArenaExtents walks the extent allocator through first fit, exact
// fit, merging on free with either neighbour or both, claims of adopted
// extents, and the refusals.
func TestArenaExtents(t *testing.T) {
	a := &ringArena{size: 100, free: []extent{{0, 100}}}
	wantFree := func(step string, want ...extent) {
		t.Helper()
		if !slices.Equal(a.free, want) {
			t.Fatalf("%s: free runs %v, want %v", step, a.free, want)
		}
	}
	x, _ := a.take(10)
	y, _ := a.take(20)
	z, _ := a.take(30)
	if x != (extent{0, 10}) || y != (extent{10, 20}) || z != (extent{30, 30}) {
		t.Fatalf("first fits: %v %v %v, want [0 10] [10 20] [30 30]", x, y, z)
	}
	wantFree("three taken", extent{60, 40})
	a.release(y)
	wantFree("middle freed", extent{10, 20}, extent{60, 40})
	if e, _ := a.take(15); e != (extent{10, 15}) {
		t.Fatalf("take 15: %v, want the first run that fits, [10 15]", e)
	}
	if e, _ := a.take(40); e != (extent{60, 40}) {
		t.Fatalf("take 40: %v, want the exact fit [60 40]", e)
	}
	wantFree("exact fit", extent{25, 5})
	if _, ok := a.take(6); ok {
		t.Fatal("took 6 slots where the largest free run is 5")
	}
	a.release(extent{10, 15})
	wantFree("merged after", extent{10, 20})
	a.release(z)
	wantFree("merged before", extent{10, 50})
	a.release(x)
	wantFree("merged both", extent{0, 60})
	a.release(extent{60, 40})
	wantFree("all free", extent{0, 100})

	if err := a.claim(extent{40, 10}); err != nil {
		t.Fatal(err)
	}
	wantFree("claimed inside", extent{0, 40}, extent{50, 50})
	if err := a.claim(extent{0, 40}); err != nil {
		t.Fatal(err)
	}
	wantFree("claimed a whole run", extent{50, 50})
	for _, bad := range []extent{{45, 10}, {90, 20}, {0xfffffff0, 0x20}} {
		if err := a.claim(bad); err == nil || !strings.Contains(err.Error(), "overlapping") {
			t.Fatalf("claim %v: err = %v, want overlap or outside", bad, err)
		}
	}
	wantFree("after refused claims", extent{50, 50})
}

// checkLiveRing fails the test unless the VIP's live ring, read from the
// arena at the extent its key names in the kernel, is the one a build of
// the VIP gives; it returns that build.
func checkLiveRing(tb testing.TB, d *Datapath, e *vipEntry, step string) []uint32 {
	tb.Helper()
	want, err := buildTable(e)
	if err != nil {
		tb.Fatal(err)
	}
	var meta balancerVipMeta
	if err := lookupMeta(d, e.vip, &meta); err != nil {
		tb.Fatalf("%s: meta of %s: %v", step, e.vip, err)
	}
	got, err := d.arena.read(extent{meta.RingOffset, meta.RingSize})
	if err != nil {
		tb.Fatalf("%s: ring of %s: %v", step, e.vip, err)
	}
	if !slices.Equal(got, want) {
		tb.Fatalf("%s: the live ring of %s differs from a build of the vip", step, e.vip)
	}
	return want
}

// TestSharedBuilds sets, in one SetVIPs, VIPs that share a shape (the same
// backend addresses and weights and ring size) and more distinct shapes
// than are shared: every ring, read from the kernel, is the one a build of
// its own VIP gives, with its own backend ids.
func TestSharedBuilds(t *testing.T) {
	d := newTestDatapath(t)
	reweighted := slices.Clone(backends4)
	reweighted[0].Weight = 5
	var changes []VIPChange
	for i := range 4 * maxShapes {
		v := VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)}), Port: 80, Proto: TCP}
		c := VIPChange{VIP: v, Config: VIPConfig{Mode: ModeDSR, RingSize: 251}, Backends: backends4}
		switch i % 4 {
		case 1:
			c.Backends = reweighted
		case 2:
			c.Config.RingSize = 1021
		case 3: // a shape of its own
			c.Backends = slices.Clone(backends4)
			c.Backends[1].Weight = uint32(2 + i)
		}
		changes = append(changes, c)
	}
	for i, err := range d.SetVIPs(changes) {
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
	}
	ids := make(map[uint32]bool)
	for _, c := range changes {
		e := d.vips[c.VIP]
		want := checkLiveRing(t, d, e, "shared builds")
		if e.tableSum != tableSum(want) {
			t.Fatalf("%s: digest %#x, want %#x", c.VIP, e.tableSum, tableSum(want))
		}
		for id := range e.byID {
			if ids[id] {
				t.Fatalf("%s: backend id %d is another VIP's too", c.VIP, id)
			}
			ids[id] = true
		}
	}
}

// TestRingReuse changes two VIPs many times, one by one and in bulk, in an
// arena with room for a few rings only, so that new rings go to extents
// retired rings held: after each change, every live ring is the one a
// build gives; the arena's free slots come back once the grace periods
// pass; and a removed VIP's ring is freed too.
func TestRingReuse(t *testing.T) {
	require.BPF(t)
	const m = 4099
	d, err := Load(Options{ConntrackEntries: 8192, RingSlots: 5 * m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	web := VIP{Addr: netip.MustParseAddr("203.0.113.50"), Port: 80, Proto: TCP}
	other := VIP{Addr: netip.MustParseAddr("203.0.113.51"), Port: 80, Proto: TCP}
	cfg := VIPConfig{Mode: ModeDSR, RingSize: m}
	set := func(step string, cs ...VIPChange) {
		t.Helper()
		for i, err := range d.SetVIPs(cs) {
			if err != nil {
				t.Fatalf("%s: change %d: %v", step, i, err)
			}
		}
		for _, v := range []VIP{web, other} {
			if e := d.vips[v]; e != nil {
				checkLiveRing(t, d, e, step)
			}
		}
	}
	bs := slices.Clone(backends4)
	set("add", VIPChange{VIP: web, Config: cfg, Backends: bs})
	set("add other", VIPChange{VIP: other, Config: cfg, Backends: bs})
	offsets := make(map[uint32]bool)
	for step := range 24 {
		next := slices.Clone(bs)
		switch step % 4 {
		case 0:
			next = next[:len(next)-1]
		case 1:
			next[0].Weight = uint32(2 + step)
		case 2:
			next[1].Weight = uint32(3 + step)
		case 3:
			set(fmt.Sprintf("step %d: other", step), VIPChange{VIP: other, Config: cfg, Backends: next[1:]})
		}
		if step%6 == 5 {
			set(fmt.Sprintf("step %d: bulk", step), VIPChange{VIP: web, Config: cfg, Backends: next}, VIPChange{VIP: other, Config: cfg, Backends: bs})
		} else {
			set(fmt.Sprintf("step %d", step), VIPChange{VIP: web, Config: cfg, Backends: next})
		}
		offsets[d.vips[web].ring.off] = true
	}
	// Five rings' room and 30-odd new rings: extents were reused.
	if len(offsets) > 5 {
		t.Fatalf("web's rings took %d distinct offsets in an arena of five rings", len(offsets))
	}
	settled := func(want uint32) func() error {
		return func() error {
			free, retired := d.arena.freeSlots()
			if free != want || retired != 0 {
				return fmt.Errorf("%d slots free and %d retired, want %d free and none retired", free, retired, want)
			}
			return nil
		}
	}
	require.Eventually(t, 5*time.Second, settled(d.arena.size-2*m))
	if err := d.RemoveVIP(web); err != nil {
		t.Fatal(err)
	}
	require.Eventually(t, 5*time.Second, settled(d.arena.size-m))
}

// TestRingArenaFull fills a small arena: the VIP that does not fit is
// refused with an error naming the option that sizes the arena, and
// nothing of it is written; once a VIP is removed, its ring's room serves
// the next one (the change waits for the grace period itself).
func TestRingArenaFull(t *testing.T) {
	require.BPF(t)
	d, err := Load(Options{ConntrackEntries: 8192, RingSlots: 4 * 257})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	vip := func(i int) VIP {
		return VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(60 + i)}), Port: 80, Proto: TCP}
	}
	cfg := VIPConfig{Mode: ModeDSR, RingSize: 251}
	for i := range 4 {
		if err := d.AddVIP(vip(i), cfg, backends4); err != nil {
			t.Fatalf("vip %d: %v", i, err)
		}
	}
	err = d.AddVIP(vip(4), cfg, backends4)
	if err == nil || !strings.Contains(err.Error(), "ring arena is full") || !strings.Contains(err.Error(), "RingSlots") {
		t.Fatalf("fifth vip: err = %v, want the arena full, naming RingSlots", err)
	}
	if len(d.VIPs()) != 4 {
		t.Fatalf("%d VIPs after a refused add, want 4", len(d.VIPs()))
	}
	if v, _ := runProg(t, d.Program(), pkt(client4, vip(4).Addr.String(), TCP, 40000, 80).Build()); v != xdpPass {
		t.Fatalf("refused vip: verdict %s, want XDP_PASS", verdictNames[v])
	}
	if avail := d.backendID.available(); avail != int(d.backendID.limit)-4*len(backends4) {
		t.Fatalf("%d backend ids free after a refused add, want all but the 4 VIPs' %d", avail, 4*len(backends4))
	}
	if err := d.RemoveVIP(vip(0)); err != nil {
		t.Fatal(err)
	}
	if err := d.AddVIP(vip(4), cfg, backends4); err != nil {
		t.Fatalf("fifth vip after a removal: %v", err)
	}
	want := expectBackend(t, backends4, 251, addr(client4), vip(4).Addr, 40000, 80, TCP, false).Addr
	if got := sendTo(t, d, pkt(client4, vip(4).Addr.String(), TCP, 40000, 80)); got != want {
		t.Fatalf("fifth vip: packet went to %s, want %s", got, want)
	}
}

// TestRingFlipHammer proves that a packet never sees a ring that is half
// written, nor one whose extent was reused too early. A writer flips two
// VIPs' rings as fast as it can, each between "every slot backend A" and
// "every slot backend B" (weights 1/0 and 0/1, so the backend ids stay),
// in an arena with room for few rings: new rings keep landing in extents
// the other VIP's rings held. Meanwhile, on the other CPU:
//   - the real balancer program runs millions of lookups, one BPF_PROG_RUN
//     each, and every one must end at one of its own VIP's two backends (a
//     slot of the other VIP's ring sends it elsewhere, an unwritten one
//     drops it);
//   - between them, a slowed-down reader (bpf/ringscan.c: the balancer's
//     meta lookup and ring_read, then every slot of the ring, many times
//     over) must find
//     one backend in every slot, of its own VIP: it stays inside its RCU
//     read-side section for the whole ring, as a delayed reader may, and
//     so widens the window that a reuse before the grace period would hit.
func TestRingFlipHammer(t *testing.T) {
	require.BPF(t)
	lookups, minFlips := 1_000_000, int64(1000)
	if testing.Short() {
		lookups, minFlips = 100_000, 100
	}
	const scanEvery = 32 // one scan per this many balancer lookups
	// A scan reads the ring scanPasses times, some hundreds of
	// microseconds: longer than the writer takes from one publication to
	// the next ring it writes, so that a reuse without a grace period
	// would write under a scan (the test fails then, as it must).
	const scanPasses = 4
	const m = 4093
	d, err := Load(Options{ConntrackEntries: 8192, RingSlots: 32 * m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	scan := loadRingScan(t, d)
	type flipped struct {
		vip      VIP
		a, b     Backend
		aID, bID uint32
	}
	be := func(last byte) Backend {
		return Backend{Addr: netip.AddrFrom4([4]byte{198, 18, 0, last}), MAC: []byte{2, 0, 0, 0, 0x0c, last}, Weight: 1}
	}
	vips := []*flipped{
		{vip: VIP{Addr: addr("203.0.113.80"), Port: 80, Proto: UDP}, a: be(21), b: be(22)},
		{vip: VIP{Addr: addr("203.0.113.81"), Port: 80, Proto: UDP}, a: be(23), b: be(24)},
	}
	cfg := VIPConfig{Mode: ModeDSR, RingSize: m, NoConntrack: true}
	backendsOf := func(f *flipped, toB bool) []Backend {
		a, b := f.a, f.b
		a.Weight, b.Weight = 1, 0
		if toB {
			a.Weight, b.Weight = 0, 1
		}
		return []Backend{a, b}
	}
	for _, f := range vips {
		if err := d.AddVIP(f.vip, cfg, backendsOf(f, false)); err != nil {
			t.Fatal(err)
		}
		e := d.vips[f.vip]
		f.aID, f.bID = e.backends[f.a.Addr].id, e.backends[f.b.Addr].id
	}

	stop := make(chan struct{})
	writerDone := make(chan struct{})
	var flips atomic.Int64
	var writerErr error
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f := vips[i%2]
			if err := d.SetVIP(f.vip, cfg, backendsOf(f, (i/2)%2 == 0)); err != nil {
				writerErr = err
				return
			}
			flips.Add(1)
		}
	}()

	var n, scans, seenA, seenB int
	var slotsRead uint64
	var bad []string
	frames := make([][]byte, 256)
	for i := range frames {
		frames[i] = pkt(client4, vips[i%2].vip.Addr.String(), UDP, uint16(1024+i*211), 80).Build()
	}
	out := make([]byte, len(frames[0])+512)
	keys := make([][]byte, len(vips))
	for i, f := range vips {
		k := vipKey4(f.vip)
		// struct scan_args: the key, then the passes.
		keys[i] = append(slotBytes([]uint32{k.Addr}), byte(k.Port), byte(k.Port>>8), k.Proto, 0)
		keys[i] = append(keys[i], slotBytes([]uint32{scanPasses})...)
		keys[i] = append(keys[i], make([]byte, 64-len(keys[i]))...)
	}
	scanOut := make([]byte, 64+512)
	for i := 0; i < lookups && len(bad) < 10; i++ {
		f := vips[i%2]
		opts := ebpf.RunOptions{Data: frames[i%len(frames)], DataOut: out}
		v, err := d.Program().Run(&opts)
		n++
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("run: %v", err))
		case v != xdpTX:
			bad = append(bad, fmt.Sprintf("%s: verdict %s", f.vip, verdictNames[v]))
		case bytes.Equal(out[:6], f.a.MAC):
			seenA++
		case bytes.Equal(out[:6], f.b.MAC):
			seenB++
		default:
			bad = append(bad, fmt.Sprintf("%s: sent to MAC %x, neither of its backends", f.vip, out[:6]))
		}
		if i%scanEvery != 0 {
			continue
		}
		f = vips[(i/scanEvery)%2]
		opts = ebpf.RunOptions{Data: keys[(i/scanEvery)%2], DataOut: scanOut}
		if _, err := scan.Run(&opts); err != nil {
			bad = append(bad, fmt.Sprintf("scan: %v", err))
			continue
		}
		var r [4]uint32 // struct scan_result
		copy(slotBytes(r[:]), scanOut)
		first, mixed, size, found := r[0], r[1], r[2], r[3]
		scans++
		slotsRead += uint64(size) * scanPasses
		if found != 1 || size != m || mixed != 0 || (first != f.aID && first != f.bID) {
			bad = append(bad, fmt.Sprintf("%s: scan found=%d, ring of %d slots, slot 0 backend %d (want %d or %d), %d slot reads differ from it",
				f.vip, found, size, first, f.aID, f.bID, mixed))
		}
	}
	close(stop)
	<-writerDone
	if writerErr != nil {
		t.Fatalf("writer: %v", writerErr)
	}
	for _, b := range bad {
		t.Error(b)
	}
	t.Logf("%d balancer lookups and %d ring scans (%d slot reads) against %d ring flips: %d lookups on the A rings, %d on the B rings",
		n, scans, slotsRead, flips.Load(), seenA, seenB)
	if n < lookups {
		t.Fatalf("%d lookups, want %d", n, lookups)
	}
	// The test proves something only if the rings flipped under the
	// lookups, many times, and both rings were seen.
	if flips.Load() < minFlips || seenA == 0 || seenB == 0 {
		t.Fatalf("%d flips, %d lookups on A and %d on B: want at least %d flips and both rings seen", flips.Load(), seenA, seenB, minFlips)
	}
}

// loadRingScan loads the slowed-down ring reader with d's maps.
func loadRingScan(tb testing.TB, d *Datapath) *ebpf.Program {
	ring, _ := loadScans(tb, d)
	return ring
}

// loadScans loads the programs of testprogs/ringscan.o over d's maps:
// fulcrum_ring_scan and fulcrum_pool_scan.
func loadScans(tb testing.TB, d *Datapath) (ring, pool *ebpf.Program) {
	tb.Helper()
	spec, err := ebpf.LoadCollectionSpec("testprogs/ringscan.o")
	if err != nil {
		tb.Fatal(err)
	}
	spec.Maps[balancerMapRingArena].MaxEntries = d.objs.RingArena.MaxEntries()
	spec.Maps[balancerMapPoolRings].MaxEntries = d.objs.PoolRings.MaxEntries()
	var objs struct {
		Ring *ebpf.Program `ebpf:"fulcrum_ring_scan"`
		Pool *ebpf.Program `ebpf:"fulcrum_pool_scan"`
	}
	opts := ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		balancerMapVipsV4: d.objs.VipsV4, balancerMapVipMetas: d.objs.VipMetas,
		balancerMapRingArena: d.objs.RingArena, balancerMapPoolRings: d.objs.PoolRings}}
	if err := spec.LoadAndAssign(&objs, &opts); err != nil {
		tb.Fatalf("load ring scans: %v", err)
	}
	tb.Cleanup(func() {
		objs.Ring.Close()
		objs.Pool.Close()
	})
	return objs.Ring, objs.Pool
}

// TestReadRingsFromPins reads the rings from the pins alone, as `fulcrum`
// tools and tests do without the daemon: each VIP's ring, slot by slot,
// is the one the datapath reports, and a VIP without backends reads as a
// ring of empty slots.
func TestReadRingsFromPins(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	d, err := Load(Options{ConntrackEntries: 8192, PinDir: dir, RingSlots: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	provision(t, d)
	empty := VIP{Addr: addr("203.0.113.90"), Port: 80, Proto: TCP}
	if err := d.AddVIP(empty, VIPConfig{Mode: ModeDSR, RingSize: 251}, nil); err != nil {
		t.Fatal(err)
	}
	rings, err := ReadRings(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(rings) != len(d.VIPs()) {
		t.Fatalf("read %d rings, want one for each of %d VIPs", len(rings), len(d.VIPs()))
	}
	for _, s := range d.VIPs() {
		want, err := d.RingDigest(s.VIP)
		if err != nil {
			t.Fatal(err)
		}
		if got := RingDigest(rings[s.VIP]); got != want || uint32(len(rings[s.VIP])) != s.Config.RingSize {
			t.Fatalf("%s: read %d slots with digest %#x, want %d with %#x", s.VIP, len(rings[s.VIP]), got, s.Config.RingSize, want)
		}
	}
	for i, a := range rings[empty] {
		if a.IsValid() {
			t.Fatalf("%s without backends: slot %d names %s", empty, i, a)
		}
	}
}

// BenchmarkArenaWrite writes a ring of the default size into the arena:
// a map of its pages, a copy and an unmap.
func BenchmarkArenaWrite(b *testing.B) {
	d := newTestDatapath(b)
	table := make([]uint32, 65537)
	for i := range table {
		table[i] = uint32(i % 100)
	}
	e, err := d.arena.alloc(uint32(len(table)))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := d.arena.write(e, table); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRingArenaStats: RingArena counts the capacity as Load rounds it, the
// slots of live rings as used, and a replaced or removed ring's as retired
// until the grace period frees them; the three always sum to the capacity.
func TestRingArenaStats(t *testing.T) {
	require.BPF(t)
	d, err := Load(Options{ConntrackEntries: 8192, RingSlots: 4*257 + 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	const size = 1040 // 1029 rounded up to whole elements of 16
	if got := ArenaCapacity(4*257 + 1); got != size {
		t.Fatalf("ArenaCapacity(1029) = %d, want %d", got, size)
	}
	check := func(step string, used uint32) {
		t.Helper()
		s := d.RingArena()
		if s.Slots != size || s.Used != used || s.Used+s.Retired+s.Free != size {
			t.Fatalf("%s: %+v, want %d slots, %d used, the three summing to the slots", step, s, size, used)
		}
		require.Eventually(t, 5*time.Second, func() error {
			if s := d.RingArena(); s.Retired != 0 || s.Free != size-used || s.Used != used {
				return fmt.Errorf("%s: %+v, want %d used, none retired, %d free", step, s, used, size-used)
			}
			return nil
		})
	}
	check("empty", 0)
	web := VIP{Addr: netip.MustParseAddr("203.0.113.70"), Port: 80, Proto: TCP}
	other := VIP{Addr: netip.MustParseAddr("203.0.113.71"), Port: 80, Proto: TCP}
	for _, v := range []VIP{web, other} {
		if err := d.AddVIP(v, VIPConfig{Mode: ModeDSR, RingSize: 251}, backends4); err != nil {
			t.Fatal(err)
		}
	}
	check("two rings of 251", 502)
	if errs := d.SetVIPs([]VIPChange{{VIP: web, Config: VIPConfig{Mode: ModeDSR, RingSize: 257}, Backends: backends4}}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	check("one ring replaced by one of 257", 508)
	if err := d.RemoveVIP(other); err != nil {
		t.Fatal(err)
	}
	check("one ring removed", 257)
}

// TestVIPMetaHammer proves that a packet never reads another VIP's meta,
// nor a half-written one, while Go republishes metas and VIPs come and go
// (docs/datapath.md, "VIP publication"). The kernel reuses a freed element
// of a hash map for the next insert on the same CPU at once
// (kernel/bpf/memalloc.c: bpf_mem_cache_free links it into the CPU's free
// list, unit_alloc takes it from there), so a meta read through a hash
// map's value pointer, as layout 4 read it, could turn into another VIP's
// under a reader; a vip_metas slot reused before a grace period would do
// the same. A writer repeats: remove a VIP Y, flip VIP X's ring (a new
// meta: X's new element takes the one Y's removal freed, and X's old
// element and slot are freed or retired), add Y back (its element takes
// X's old one, its meta the first free slot). Meanwhile, on every CPU:
//   - the balancer forwards packets to X, each one BPF_PROG_RUN, and every
//     one must go to one of X's two backends;
//   - between them, the slowed-down reader of TestRingFlipHammer
//     (bpf/ringscan.c: the balancer's meta lookup, then the whole ring
//     many times over, inside its RCU read-side section) must read X's
//     meta before and after its scan, and one backend of X in every slot:
//     the scan is longer than the writer's round, so a reuse of a meta
//     (or of a ring) before a grace period would show there.
func TestVIPMetaHammer(t *testing.T) {
	require.BPF(t)
	// The hammer runs until the writer did minRounds rounds and the
	// readers minHolds holds (a few seconds here): freeing retired slots
	// at once made some 1 hold in 65 see another VIP's meta.
	minRounds, minHolds := int64(3000), int64(1500)
	if testing.Short() {
		minRounds, minHolds = 1000, 500
	}
	// A hold reads the ring holdPasses times, some hundreds of
	// microseconds: several writer rounds.
	const holdPasses = 800
	const holdEvery = 16 // one hold per this many balancer packets
	d, err := Load(Options{ConntrackEntries: 8192, RingSlots: 64 * smallRing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	hold := loadRingScan(t, d)

	be := func(last byte) Backend {
		return Backend{Addr: netip.AddrFrom4([4]byte{198, 18, 0, last}), MAC: []byte{2, 0, 0, 0, 0x0d, last}, Weight: 1}
	}
	x := VIP{Addr: addr("203.0.113.80"), Port: 80, Proto: UDP}
	xa, xb := be(21), be(22)
	xBackends := func(toB bool) []Backend {
		a, b := xa, xb
		a.Weight, b.Weight = 1, 0
		if toB {
			a.Weight, b.Weight = 0, 1
		}
		return []Backend{a, b}
	}
	cfg := VIPConfig{Mode: ModeDSR, RingSize: smallRing, NoConntrack: true}
	if err := d.AddVIP(x, cfg, xBackends(false)); err != nil {
		t.Fatal(err)
	}
	xIndex := uint32(d.vips[x].index)
	xIDs := []uint32{d.vips[x].backends[xa.Addr].id, d.vips[x].backends[xb.Addr].id}
	// The others: their own backends, so a packet that took one of their
	// rings leaves with a MAC that is not X's.
	var others []VIP
	for i := range 4 {
		y := VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}), Port: 80, Proto: UDP}
		if err := d.AddVIP(y, cfg, []Backend{be(byte(40 + i))}); err != nil {
			t.Fatal(err)
		}
		others = append(others, y)
	}

	write := func(i int) error {
		y := others[i%len(others)]
		err := d.RemoveVIP(y)
		if err == nil {
			err = d.SetVIP(x, cfg, xBackends(i%2 == 0))
		}
		if err == nil {
			err = d.AddVIP(y, cfg, []Backend{be(byte(40 + i%len(others)))})
		}
		return err
	}

	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = pkt(client4, x.Addr.String(), UDP, uint16(1024+i*211), 80).Build()
	}
	k := vipKey4(x)
	// struct scan_args: the key, then the passes.
	holdArgs := append(slotBytes([]uint32{k.Addr}), byte(k.Port), byte(k.Port>>8), k.Proto, 0)
	holdArgs = append(holdArgs, slotBytes([]uint32{holdPasses})...)
	holdArgs = append(holdArgs, make([]byte, 64-len(holdArgs))...)

	var holds, wrongHolds atomic.Int64
	packets := newWays(xa.MAC, xb.MAC)
	what := "packet to " + x.String()
	reader := func(cpu int, bad *failures) func(n int) error {
		out := make([]byte, len(frames[0])+512)
		holdOut := make([]byte, 64+512)
		return func(n int) error {
			if err := packets.send(d, frames[n%len(frames)], out, cpu, what, bad); err != nil {
				return err
			}
			if n%holdEvery != 0 {
				return nil
			}
			opts := ebpf.RunOptions{Data: holdArgs, DataOut: holdOut}
			if _, err := hold.Run(&opts); err != nil {
				return err
			}
			holds.Add(1)
			var r [6]uint32 // struct scan_result
			copy(slotBytes(r[:]), holdOut)
			first, mixed, size, found, before, after := r[0], r[1], r[2], r[3], r[4], r[5]
			if found != 1 || before != xIndex || after != xIndex || size != smallRing || mixed != 0 || !slices.Contains(xIDs, first) {
				wrongHolds.Add(1)
				bad.add(fmt.Sprintf("cpu %d: held meta of %s (index %d): found=%d, index %d before the scan, %d after; ring of %d slots, slot 0 backend %d (want one of %v), %d slot reads differ from it",
					cpu, x, xIndex, found, before, after, size, first, xIDs, mixed))
			}
			return nil
		}
	}
	rounds, enough := hammer(t, write, reader, func(r int64) error {
		if h := holds.Load(); r < minRounds || h < minHolds {
			return fmt.Errorf("%d writer rounds and %d holds, want %d and %d", r, h, minRounds, minHolds)
		}
		return nil
	})
	t.Logf("%d writer rounds; %d packets (%d to backend A, %d to B, %d wrong) and %d holds (%d wrong) on %d CPUs",
		rounds, packets.packets.Load(), packets.seen[0].Load(), packets.seen[1].Load(), packets.wrong.Load(), holds.Load(), wrongHolds.Load(), runtime.NumCPU())
	// The test proves something only if the metas changed under the
	// readers many times, and both of X's rings were seen.
	if enough != nil {
		t.Fatal(enough)
	}
	if a, b := packets.seen[0].Load(), packets.seen[1].Load(); a == 0 || b == 0 {
		t.Fatalf("%d packets to A and %d to B: want both rings seen", a, b)
	}
}

// lookupMeta reads the meta vip's key names, as a packet would.
func lookupMeta(d *Datapath, vip VIP, m *balancerVipMeta) error {
	var slot uint32
	var err error
	if vip.Addr.Is4() {
		err = d.objs.VipsV4.Lookup(vipKey4(vip), &slot)
	} else {
		err = d.objs.VipsV6.Lookup(vipKey6(vip), &slot)
	}
	if err != nil {
		return err
	}
	var v balancerVipSlot
	if err := d.objs.VipMetas.Lookup(slot, &v); err != nil {
		return err
	}
	if v != vipSlotValue(vip, v.Meta) {
		return fmt.Errorf("vip %s names meta slot %d, which holds another vip's key", vip, slot)
	}
	*m = v.Meta
	return nil
}

// TestVIPSlotKeyChecked proves the fast path's check of a slot's key: a
// VIP key whose element names another VIP's slot (what a packet reads
// from an element the kernel reused for the other VIP between its lookup
// and its read) is not taken for the other VIP. The packet then falls to
// the address's every-port VIP if there is one, else passes, as if the
// key were not there; on the second lookup a real packet would find the
// key's own slot.
func TestVIPSlotKeyChecked(t *testing.T) {
	d := newTestDatapath(t)
	cfg := VIPConfig{Mode: ModeDSR, RingSize: smallRing, NoConntrack: true}
	for _, fam := range []struct {
		name         string
		x, y, any    VIP
		client       string
		xb, yb, anyb []Backend
	}{
		{"v4", VIP{Addr: addr("203.0.113.80"), Port: 80, Proto: UDP}, VIP{Addr: addr("203.0.113.81"), Port: 80, Proto: UDP},
			VIP{Addr: addr("203.0.113.80"), Port: 0, Proto: UDP}, client4, backends4[:1], backends4[1:2], backends4[2:3]},
		{"v6", VIP{Addr: addr("2001:db8:ffff::80"), Port: 80, Proto: UDP}, VIP{Addr: addr("2001:db8:ffff::81"), Port: 80, Proto: UDP},
			VIP{Addr: addr("2001:db8:ffff::80"), Port: 0, Proto: UDP}, client6, backends6[:1], backends6[1:2], backends6[2:3]},
	} {
		t.Run(fam.name, func(t *testing.T) {
			for _, v := range []struct {
				vip VIP
				bs  []Backend
			}{{fam.x, fam.xb}, {fam.y, fam.yb}} {
				if err := d.AddVIP(v.vip, cfg, v.bs); err != nil {
					t.Fatal(err)
				}
			}
			toX := pkt(fam.client, fam.x.Addr.String(), UDP, 40000, 80)
			if got := sendTo(t, d, toX); got != fam.xb[0].Addr {
				t.Fatalf("before: packet to %s went to %s, want %s", fam.x, got, fam.xb[0].Addr)
			}
			// X's key names Y's slot, as a reused element would.
			put := func(slot uint32) {
				t.Helper()
				var err error
				if fam.x.Addr.Is4() {
					err = d.objs.VipsV4.Put(vipKey4(fam.x), slot)
				} else {
					err = d.objs.VipsV6.Put(vipKey6(fam.x), slot)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			put(d.vips[fam.y].slot)
			if v, _ := runProg(t, d.Program(), toX.Build()); v != xdpPass {
				t.Fatalf("key of %s naming %s's slot: verdict %s, want XDP_PASS (no vip)", fam.x, fam.y, verdictNames[v])
			}
			if err := d.AddVIP(fam.any, cfg, fam.anyb); err != nil {
				t.Fatal(err)
			}
			if got := sendTo(t, d, toX); got != fam.anyb[0].Addr {
				t.Fatalf("key of %s naming %s's slot, with %s there: packet went to %s, want %s", fam.x, fam.y, fam.any, got, fam.anyb[0].Addr)
			}
			put(d.vips[fam.x].slot)
			if got := sendTo(t, d, toX); got != fam.xb[0].Addr {
				t.Fatalf("after: packet to %s went to %s, want %s", fam.x, got, fam.xb[0].Addr)
			}
			for _, err := range d.RemoveVIPs([]VIP{fam.x, fam.y, fam.any}) {
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestMetaSlotsAdopt: adopted pins' slots are used, every other slot is
// retired (the last daemon may have retired it just before it stopped),
// not free, until a reclaim; a slot past the map's end is refused.
func TestMetaSlotsAdopt(t *testing.T) {
	s := newMetaSlots(4)
	if err := s.adopt(map[uint32]VIP{4: vipWeb4}); err == nil {
		t.Fatal("adopted slot 4 of a map of 4")
	}
	if len(s.free) != 4 {
		t.Fatalf("a refused adoption changed the slots: %d free, want 4", len(s.free))
	}
	if err := s.adopt(map[uint32]VIP{1: vipWeb4, 3: vipDNS6}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.take(); ok {
		t.Fatal("a slot was free right after the adoption, before a grace period")
	}
	if got := s.takeRetired(); !slices.Equal(got, []uint32{2, 0}) {
		t.Fatalf("retired after the adoption: %v, want [2 0]", got)
	} else {
		s.putBack(got, true)
	}
	for _, want := range []uint32{0, 2} {
		if got, ok := s.take(); !ok || got != want {
			t.Fatalf("take after the reclaim = %d, %v; want %d", got, ok, want)
		}
	}
	if _, ok := s.take(); ok {
		t.Fatal("took a slot an adopted vip names")
	}
}

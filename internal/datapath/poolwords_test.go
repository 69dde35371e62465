package datapath

import (
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// TestPoolWordPacking: a pool word carries its extent and flags through
// pack and unpack, up to the largest offset the arena can have and the
// largest ring, and 0 is no pool.
func TestPoolWordPacking(t *testing.T) {
	// The arena's capacity is a uint32 (the config caps it at 2^30), so
	// an extent's offset fits the word's 32 bits whatever Load is asked.
	top := ArenaCapacity(math.MaxUint32)
	if maglev.MaxSize > poolSizeMask {
		t.Fatalf("maglev.MaxSize %d: a ring size no longer fits the word's 24 bits", maglev.MaxSize)
	}
	drop := uint8(balancerFulcrumPoolFlagsPOOL_F_DROP)
	fallback := uint8(balancerFulcrumPoolFlagsPOOL_F_FALLBACK_VIP)
	cases := []struct {
		ring  extent
		flags uint8
		want  uint64
	}{
		{extent{0, 0}, 0, 0x04 << 56},
		{extent{16, 251}, 0, 0x04<<56 | 251<<32 | 16},
		{extent{top - maglev.MaxSize, maglev.MaxSize}, 0, 0x04<<56 | uint64(maglev.MaxSize)<<32 | uint64(top-maglev.MaxSize)},
		{extent{1<<32 - 1, poolSizeMask}, 0, 0x04<<56 | 0xffffff<<32 | 0xffffffff},
		{extent{}, drop, 0x06 << 56},
		{extent{}, fallback, 0x05 << 56},
	}
	for _, c := range cases {
		w := poolWord(c.ring, c.flags)
		if w != c.want {
			t.Errorf("poolWord(%+v, %#x) = %#x, want %#x", c.ring, c.flags, w, c.want)
		}
		ring, flags, present := unpackPool(w)
		if ring != c.ring || flags != c.flags || !present {
			t.Errorf("unpackPool(%#x) = %+v, %#x, %v; want %+v, %#x, true", w, ring, flags, present, c.ring, c.flags)
		}
	}
	if ring, flags, present := unpackPool(0); present || ring != (extent{}) || flags != 0 {
		t.Errorf("unpackPool(0) = %+v, %#x, %v; want no pool", ring, flags, present)
	}
}

// TestPoolRingHammer: Go moves pool x's ring through three backends and
// removes and re-adds pool w (other backends, other clients) in a loop
// while x's clients' packets run on every CPU: each must reach one of x's
// backends, never w's or the VIP's others; and holds (a reader slowed
// down after its one load of x's word) must find x's word before and after
// and a ring of one backend throughout. A hash map pool_rings could hand
// x's freed element to w's insert under a reader; an extent reused before
// its grace period shows as a ring of two backends (freeing replaced pool
// extents at once, in place of retiring them, fails here: some hundreds of
// wrong holds a run).
func TestPoolRingHammer(t *testing.T) {
	require.BPF(t)
	minRounds, minPackets, minHolds := int64(2000), int64(20000), int64(1000)
	if testing.Short() {
		minRounds, minPackets, minHolds = 500, 5000, 300
	}
	d, err := Load(Options{ConntrackEntries: 8192, RingSlots: 64 * smallRing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	be := func(last byte) Backend {
		return Backend{Addr: netip.AddrFrom4([4]byte{198, 18, 0, last}), MAC: []byte{2, 0, 0, 0, 0x0d, last}, Weight: 1}
	}
	backends := []Backend{be(21), be(22), be(23), be(24), be(25)}
	vip := VIP{Addr: addr("203.0.113.81"), Port: 80, Proto: UDP}
	xNet, yNet := netip.MustParsePrefix("198.19.1.0/24"), netip.MustParsePrefix("198.19.7.0/24")
	// x cycles through three rings (of backends 0, 1, 4: its clients may
	// reach those) while w comes and goes at another period: the extents
	// the arena reuses then get other contents than they held.
	xs := []int{0, 1, 4}
	config := func(i int) VIPConfig {
		ps := []Pool{{Name: "x", Prefixes: []netip.Prefix{xNet}, Backends: []netip.Addr{backends[xs[i%3]].Addr}}}
		if i%2 == 0 {
			ps = append(ps, Pool{Name: "w", Prefixes: []netip.Prefix{yNet}, Backends: []netip.Addr{backends[2].Addr, backends[3].Addr}})
		}
		pools, err := NewPools(ps)
		if err != nil {
			t.Fatal(err)
		}
		return VIPConfig{Mode: ModeDSR, RingSize: smallRing, NoConntrack: true, Pools: pools}
	}
	cfgs := []VIPConfig{config(0), config(1), config(2), config(3), config(4), config(5)}
	if err := d.AddVIP(vip, cfgs[1], backends); err != nil {
		t.Fatal(err)
	}

	write := func(i int) error { return d.SetVIP(vip, cfgs[(i+2)%len(cfgs)], backends) }

	frames := make([][]byte, 64)
	for i := range frames {
		src := netip.AddrFrom4([4]byte{198, 19, 1, byte(1 + i)})
		frames[i] = pkt(src.String(), vip.Addr.String(), UDP, uint16(1024+i*211), 80).Build()
	}
	packets := newWays(backends[0].MAC, backends[1].MAC, backends[4].MAC)
	// Every holdEvery packets, a hold: x's ring read holdPasses times
	// through one load of its word (testprogs fulcrum_pool_scan), a reader
	// slowed down inside its read-side section.
	const holdEvery, holdPasses = 16, 800
	_, scan := loadScans(t, d)
	e := d.vips[vip]
	xID := e.pools[slices.IndexFunc(e.pools, func(p *poolEntry) bool { return p.name == "x" })].id
	var xIDs []uint32
	for _, i := range xs {
		xIDs = append(xIDs, e.backends[backends[i].Addr].id)
	}
	holdArgs := append(slotBytes([]uint32{xID, holdPasses}), make([]byte, 56)...)
	var holds, wrongHolds atomic.Int64
	xWord := func(w uint64) bool {
		ring, flags, present := unpackPool(w)
		return present && flags == 0 && ring.size == smallRing
	}
	reader := func(cpu int, bad *failures) func(n int) error {
		out := make([]byte, len(frames[0])+512)
		holdOut := make([]byte, 64+512)
		return func(n int) error {
			if err := packets.send(d, frames[n%len(frames)], out, cpu, "packet of pool x", bad); err != nil {
				return err
			}
			if n%holdEvery != 0 {
				return nil
			}
			opts := ebpf.RunOptions{Data: holdArgs, DataOut: holdOut}
			if _, err := scan.Run(&opts); err != nil {
				return err
			}
			holds.Add(1)
			var r [6]uint32 // struct pool_scan_result
			copy(slotBytes(r[:]), holdOut)
			first, mixed := r[0], r[1]
			before, after := uint64(r[2])|uint64(r[3])<<32, uint64(r[4])|uint64(r[5])<<32
			if !xWord(before) || !xWord(after) || mixed != 0 || !slices.Contains(xIDs, first) {
				wrongHolds.Add(1)
				bad.add(fmt.Sprintf("cpu %d: held pool x (id %d): word %#x before the scan, %#x after (want x's, ring of %d); slot 0 backend %d (want one of %v), %d slot reads differ from it",
					cpu, xID, before, after, smallRing, first, xIDs, mixed))
			}
			return nil
		}
	}
	rounds, enough := hammer(t, write, reader, func(r int64) error {
		if p, h := packets.packets.Load(), holds.Load(); r < minRounds || p < minPackets || h < minHolds {
			return fmt.Errorf("%d writer rounds, %d packets and %d holds, want %d, %d and %d", r, p, h, minRounds, minPackets, minHolds)
		}
		return nil
	})
	t.Logf("%d writer rounds; %d packets (%d, %d and %d to x's three backends, %d wrong) and %d holds (%d wrong) on %d CPUs",
		rounds, packets.packets.Load(), packets.seen[0].Load(), packets.seen[1].Load(), packets.seen[2].Load(), packets.wrong.Load(), holds.Load(), wrongHolds.Load(), runtime.NumCPU())
	if n := packets.wrong.Load() + wrongHolds.Load(); n != 0 {
		t.Errorf("%d packets and holds of pool x went wrong", n)
	}
	if enough != nil {
		t.Fatal(enough)
	}
	// It proves something only if x's ring changed under the readers and
	// both of its rings were seen.
	for i := range xs {
		if n := packets.seen[i].Load(); n == 0 {
			t.Fatalf("no packet reached x's backend %d: want all three rings seen", i)
		}
	}
}

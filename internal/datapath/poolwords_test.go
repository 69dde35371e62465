package datapath

import (
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"testing"

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

// TestPoolRingHammer: Go flips pool x's ring between two backends and
// removes and re-adds pool y (other backends, other clients) in a loop
// while x's clients' packets run on every CPU: each must reach one of x's
// two backends, never y's or the VIP's others. A hash map pool_rings
// reused x's freed element for y's insert under a reader.
func TestPoolRingHammer(t *testing.T) {
	require.BPF(t)
	minRounds, minPackets := int64(2000), int64(200000)
	if testing.Short() {
		minRounds, minPackets = 500, 50000
	}
	d, err := Load(Options{ConntrackEntries: 8192, RingSlots: 64 * smallRing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	be := func(last byte) Backend {
		return Backend{Addr: netip.AddrFrom4([4]byte{198, 18, 0, last}), MAC: []byte{2, 0, 0, 0, 0x0d, last}, Weight: 1}
	}
	backends := []Backend{be(21), be(22), be(23), be(24)}
	vip := VIP{Addr: addr("203.0.113.81"), Port: 80, Proto: UDP}
	xNet, yNet := netip.MustParsePrefix("198.19.1.0/24"), netip.MustParsePrefix("198.19.7.0/24")
	config := func(i int) VIPConfig {
		ps := []Pool{{Name: "x", Prefixes: []netip.Prefix{xNet}, Backends: []netip.Addr{backends[i%2].Addr}}}
		if i%3 != 0 {
			ps = append(ps, Pool{Name: "y", Prefixes: []netip.Prefix{yNet}, Backends: []netip.Addr{backends[2].Addr, backends[3].Addr}})
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
	packets := &twoWays{macs: [2][]byte{backends[0].MAC, backends[1].MAC}}
	reader := func(cpu int, bad *failures) func(n int) error {
		out := make([]byte, len(frames[0])+512)
		return func(n int) error { return packets.send(d, frames[n%len(frames)], out, cpu, "packet of pool x", bad) }
	}
	rounds, enough := hammer(t, write, reader, func(r int64) error {
		if p := packets.packets.Load(); r < minRounds || p < minPackets {
			return fmt.Errorf("%d writer rounds and %d packets, want %d and %d", r, p, minRounds, minPackets)
		}
		return nil
	})
	t.Logf("%d writer rounds; %d packets (%d to x's first backend, %d to its second, %d wrong) on %d CPUs",
		rounds, packets.packets.Load(), packets.seen[0].Load(), packets.seen[1].Load(), packets.wrong.Load(), runtime.NumCPU())
	if n := packets.wrong.Load(); n != 0 {
		t.Errorf("%d packets of pool x went wrong", n)
	}
	if enough != nil {
		t.Fatal(enough)
	}
	// It proves something only if x's ring changed under the readers and
	// both of its rings were seen.
	if a, b := packets.seen[0].Load(), packets.seen[1].Load(); a == 0 || b == 0 {
		t.Fatalf("%d packets to x's first backend and %d to its second: want both rings seen", a, b)
	}
}

package datapath

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// TestWriteRing writes rings of several sizes (below and above the size the
// program takes over, a multiple of the chunk and not) and reads every slot
// back.
func TestWriteRing(t *testing.T) {
	d := newTestDatapath(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, m := range []uint32{251, 4093, 4096 + chunkSlots, 65537, 131071} {
		table := make([]uint32, m)
		for i := range table {
			table[i] = rng.Uint32N(1 << 20)
		}
		start := time.Now()
		ring, err := d.newRing(VIP{}, table)
		if err != nil {
			t.Fatalf("M=%d: %v", m, err)
		}
		t.Logf("M=%d: written in %v (program refused: %v)", m, time.Since(start), writerRefusedErr())
		got := readRing(t, ring)
		ring.Close()
		for i := range table {
			if got[i] != table[i] {
				t.Fatalf("M=%d: slot %d holds %d, want %d", m, i, got[i], table[i])
			}
		}
	}
	if err := writerRefusedErr(); err != nil {
		t.Fatalf("the kernel refused the ring writer: %v", err)
	}
}

// checkLiveRing fails the test unless the VIP's live ring, read from the
// kernel, is the one a build of the VIP gives; it returns that build.
func checkLiveRing(tb testing.TB, d *Datapath, e *vipEntry, step string) []uint32 {
	tb.Helper()
	want, err := buildTable(e)
	if err != nil {
		tb.Fatal(err)
	}
	var ring *ebpf.Map
	if err := d.objs.Rings.Lookup(uint32(e.index), &ring); err != nil {
		tb.Fatalf("%s: ring of %s: %v", step, e.vip, err)
	}
	got := readRing(tb, ring)
	ring.Close()
	if !slices.Equal(got, want) {
		tb.Fatalf("%s: the live ring of %s differs from a build of the vip", step, e.vip)
	}
	return want
}

func readRing(tb testing.TB, ring *ebpf.Map) []uint32 {
	tb.Helper()
	n := int(ring.MaxEntries())
	keys := make([]uint32, n)
	vals := make([]uint32, n)
	var cursor ebpf.MapBatchCursor
	got, err := ring.BatchLookup(&cursor, keys, vals, nil)
	if got != n {
		tb.Fatalf("read %d of %d slots: %v", got, n, err)
	}
	out := make([]uint32, n)
	for i := range got {
		out[keys[i]] = vals[i]
	}
	return out
}

func BenchmarkWriteRing(b *testing.B) {
	d := newTestDatapath(b)
	table := make([]uint32, 65537)
	for i := range table {
		table[i] = uint32(i % 100)
	}
	for b.Loop() {
		ring, err := d.newRing(VIP{}, table)
		if err != nil {
			b.Fatal(err)
		}
		ring.Close()
	}
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

// TestRecycledRings changes one VIP many times (backends added, removed,
// reweighted, and back), so that its changes rewrite retired rings in
// place, with another VIP's changes and a bulk change between some: after
// each, the live ring read from the kernel is the one a build gives, and
// so is the other VIP's.
func TestRecycledRings(t *testing.T) {
	d := newTestDatapath(t)
	web := VIP{Addr: netip.MustParseAddr("203.0.113.50"), Port: 80, Proto: TCP}
	other := VIP{Addr: netip.MustParseAddr("203.0.113.51"), Port: 80, Proto: TCP}
	cfg := VIPConfig{Mode: ModeDSR, RingSize: 4099}
	check := func(step string) {
		t.Helper()
		for _, v := range []VIP{web, other} {
			if e := d.vips[v]; e != nil {
				checkLiveRing(t, d, e, step)
			}
		}
	}
	set := func(step string, cs ...VIPChange) {
		t.Helper()
		for i, err := range d.SetVIPs(cs) {
			if err != nil {
				t.Fatalf("%s: change %d: %v", step, i, err)
			}
		}
		check(step)
	}
	bs := slices.Clone(backends4)
	set("add", VIPChange{VIP: web, Config: cfg, Backends: bs})
	set("add other", VIPChange{VIP: other, Config: cfg, Backends: bs})
	rewritten := 0
	for step := range 12 {
		next := slices.Clone(bs)
		switch step % 4 {
		case 0:
			next = next[:len(next)-1]
		case 1:
			next[0].Weight = uint32(2 + step)
		case 2:
			next = append(next[:0:0], bs...)
		case 3:
			set(fmt.Sprintf("step %d: other", step), VIPChange{VIP: other, Config: cfg, Backends: next[1:]})
		}
		if step == 6 {
			set("bulk", VIPChange{VIP: web, Config: cfg, Backends: next}, VIPChange{VIP: other, Config: cfg, Backends: bs})
			continue
		}
		if r := d.cache.recycled.Load(); r != nil && r.vip == web {
			rewritten++
		}
		set(fmt.Sprintf("step %d", step), VIPChange{VIP: web, Config: cfg, Backends: next})
	}
	if rewritten == 0 {
		t.Fatal("no change found a recycled ring of its VIP: the test proves nothing")
	}
	if err := d.RemoveVIP(web); err != nil {
		t.Fatal(err)
	}
	if r := d.cache.recycled.Load(); r != nil && r.vip == web {
		t.Fatal("a removed VIP's recycled ring is kept")
	}
}

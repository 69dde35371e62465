package datapath

import (
	"encoding/binary"
	"hash/fnv"
	"math/rand/v2"
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
		ring, err := d.newRing(table)
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
		ring, err := d.newRing(table)
		if err != nil {
			b.Fatal(err)
		}
		ring.Close()
	}
}

// TestTableSum holds tableSum to FNV-1a over the slots' little-endian
// bytes, the digest that rings written by earlier versions were given.
func TestTableSum(t *testing.T) {
	table := []uint32{0, 1, 0xdeadbeef, 65536, 0xffffffff}
	h := fnv.New64a()
	for _, id := range table {
		h.Write(binary.LittleEndian.AppendUint32(nil, id))
	}
	if got, want := tableSum(table), h.Sum64(); got != want {
		t.Fatalf("tableSum = %#x, want %#x", got, want)
	}
}

package flowhash

import (
	"net/netip"
	"testing"
)

func TestVectors(t *testing.T) {
	vs, err := LoadVectors("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if got := Flow(v.Src, v.Dst, v.Sport, v.Dport, v.Proto); got != v.Hash {
			t.Errorf("vector %d %v:%d -> %v:%d/%d: Flow = %#08x, want %#08x", i, v.Src, v.Sport, v.Dst, v.Dport, v.Proto, got, v.Hash)
		}
		if got := Source(v.Src, v.Proto); got != v.Source {
			t.Errorf("vector %d %v/%d: Source = %#08x, want %#08x", i, v.Src, v.Proto, got, v.Source)
		}
	}
}

func TestSlotRange(t *testing.T) {
	for _, size := range []uint32{251, 65537, 131071} {
		for _, h := range []uint32{0, 1, 0x7fffffff, 0x80000000, 0xffffffff} {
			if got := Slot(h, size); got >= size {
				t.Errorf("Slot(%#x, %d) = %d, want < %d", h, size, got, size)
			}
		}
		if got := Slot(0xffffffff, size); got != size-1 {
			t.Errorf("Slot(max, %d) = %d, want %d", size, got, size-1)
		}
	}
}

// TestSpread checks that the hash spreads flows that differ only in the
// source port evenly over a ring: a poor mix would skew backend shares.
func TestSpread(t *testing.T) {
	const size, flows = 251, 251 * 200
	src := netip.MustParseAddr("198.18.0.100")
	dst := netip.MustParseAddr("203.0.113.10")
	counts := make([]int, size)
	for p := 0; p < flows; p++ {
		counts[Slot(Flow(src, dst, uint16(1024+p), 80, 6), size)]++
	}
	for i, c := range counts {
		if c < 100 || c > 300 {
			t.Fatalf("slot %d got %d flows, want about 200 (100..300)", i, c)
		}
	}
}

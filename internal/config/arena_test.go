package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/ringsize"
)

// arenaDoc is a file with n VIPs on ports 1..n, each with extra fields and
// two backends of equal weight.
func arenaDoc(root string, n int, extra string) string {
	var b strings.Builder
	b.WriteString(base + root + "vips:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {address: 203.0.113.1, port: %d, protocol: tcp%s, backends: [{address: 198.18.0.11}, {address: 198.18.0.12}]}\n", i+1, extra)
	}
	return b.String()
}

// TestRingArenaSlots: ring_arena_slots resolves in range, rounded up to
// the datapath's 16-slot elements, and survives Marshal.
func TestRingArenaSlots(t *testing.T) {
	for _, c := range []struct {
		doc  string
		want uint32
	}{
		{base, 1 << 26},
		{base + "ring_arena_slots: 131072\n", 131072},
		{base + "ring_arena_slots: 131073\n", 131088},
		{base + "ring_arena_slots: 1073741824\n", 1 << 30},
		{base + "ring_arena_slots:\n", 1 << 26}, // null: the default
	} {
		cfg := mustParse(t, c.doc)
		if cfg.RingArenaSlots != c.want {
			t.Errorf("%q: RingArenaSlots = %d, want %d", c.doc, cfg.RingArenaSlots, c.want)
		}
		out, err := cfg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if again := mustParse(t, string(out)); again.RingArenaSlots != c.want {
			t.Errorf("%q: after Marshal RingArenaSlots = %d, want %d:\n%s", c.doc, again.RingArenaSlots, c.want, out)
		}
	}
}

// TestRingArenaSlotsBad: a bad value is refused, naming the field and the
// range.
func TestRingArenaSlotsBad(t *testing.T) {
	for _, c := range []struct{ doc, msg string }{
		{base + "ring_arena_slots: 100\n", "ring_arena_slots: 100 is below the minimum 131072"},
		{base + "ring_arena_slots: 1073741825\n", "ring_arena_slots: 1073741825 is over the maximum 1073741824"},
		{base + "ring_arena_slots: -1\n", "ring_arena_slots: -1 is below the minimum 131072"},
		{base + "ring_arena_slots: lots\n", `ring_arena_slots: "lots" is not a number; use a whole number 131072..1073741824`},
		{base + "ring_arena_slots: 1.5e6\n", "ring_arena_slots:"},
	} {
		ps := problems(t, c.doc)
		if len(ps) != 1 || !strings.Contains(ps[0].String(), c.msg) {
			t.Errorf("%q: problems %v, want one that says %q", c.doc, ps, c.msg)
		}
	}
}

// TestRingArenaCheck: VIPs whose rings sum to more than the arena's
// capacity are refused, naming the setting, the sum and the figure to
// set; a sum equal to the capacity, or under it, passes.
func TestRingArenaCheck(t *testing.T) {
	// Two rings of 65521 (a prime) take 131042 of 131072 slots: they fit.
	fits := arenaDoc("ring_arena_slots: 131072\n", 2, ", ring_size: 65521")
	mustParse(t, fits)
	// A third ring of 251 makes 131293: one slot short is as bad as many.
	over := fits + "  - {address: 203.0.113.2, port: 80, protocol: tcp, ring_size: 251}\n"
	ps := problems(t, over)
	want := "ring_arena_slots: the rings of the 3 VIPs take 131293 slots (the sum of their ring sizes, auto ones as chosen), over the 131072 of ring_arena_slots; set ring_arena_slots to at least 131296, or 262592 to change every ring in one reload"
	if len(ps) != 1 || !strings.Contains(ps[0].String(), want) {
		t.Fatalf("problems %v, want one that says %q", ps, want)
	}
	if ps[0].Line != 2 {
		t.Errorf("problem at line %d, want 2 (ring_arena_slots)", ps[0].Line)
	}

	// Exactly the capacity fits: 2 × 65537 = 131074 slots, rounded up
	// to 131088 by the setting.
	mustParse(t, arenaDoc("ring_arena_slots: 131074\n", 2, ""))

	// The default capacity, 64 Mi, holds 1023 rings of the default size,
	// not 1024.
	mustParse(t, arenaDoc("", 1023, ""))
	ps = problems(t, arenaDoc("", 1024, ""))
	want = "ring_arena_slots: the rings of the 1024 VIPs take 67109888 slots (the sum of their ring sizes, auto ones as chosen), over the 67108864 of the default capacity; set ring_arena_slots to at least 67109888, or 134219776 to change every ring in one reload"
	if len(ps) != 1 || !strings.Contains(ps[0].String(), want) {
		t.Fatalf("problems %v, want one that says %q", ps, want)
	}

	// Over the maximum: no figure to set would do.
	ps = problems(t, arenaDoc("ring_arena_slots: 1073741824\n", 8200, ", ring_size: 131071"))
	if len(ps) != 1 || !strings.Contains(ps[0].String(), "that is over ring_arena_slots' maximum 1073741824") {
		t.Fatalf("problems %v, want one that says the sum is over the maximum", ps)
	}
}

// TestRingArenaCheckAuto: a VIP with ring_size auto counts at the size the
// daemon chooses from its configured backends, not at ring_size_max.
func TestRingArenaCheckAuto(t *testing.T) {
	c, err := ringsize.Choose([]ringsize.Backend{{Name: "198.18.0.11", Weight: 1}, {Name: "198.18.0.12", Weight: 1}}, 65537)
	if err != nil {
		t.Fatal(err)
	}
	if c.Size != 251 {
		t.Fatalf("two equal backends choose %d slots, want 251: the figures below assume it", c.Size)
	}
	// 522 × 251 = 131022 fits 131072; at ring_size_max (65537) two would not.
	cfg := mustParse(t, arenaDoc("ring_arena_slots: 131072\n", 522, ", ring_size: auto"))
	if got := RingSlots(cfg.VIPs); got != 522*251 {
		t.Fatalf("RingSlots = %d, want %d", got, 522*251)
	}
	ps := problems(t, arenaDoc("ring_arena_slots: 131072\n", 523, ", ring_size: auto"))
	if len(ps) != 1 || !strings.Contains(ps[0].String(), "the rings of the 523 VIPs take 131273 slots") {
		t.Fatalf("problems %v, want the 523 auto VIPs' 131273 slots refused", ps)
	}
}

// TestRingArenaCheckPoolsAndRoundRobin: a pool's ring takes as much as its
// VIP's, and a round-robin VIP's sequence counts at its bound.
func TestRingArenaCheckPoolsAndRoundRobin(t *testing.T) {
	pools := ", ring_size: 251, pools: [{name: eu, prefixes: [10.0.0.0/8], backends: [198.18.0.11]}, {name: us, prefixes: [10.1.0.0/16], backends: [198.18.0.12]}]"
	cfg := mustParse(t, arenaDoc("", 3, pools))
	if got, want := RingSlots(cfg.VIPs), uint64(3*3*251); got != want {
		t.Errorf("3 VIPs of 251 slots with 2 pools each: RingSlots = %d, want %d", got, want)
	}
	cfg = mustParse(t, arenaDoc("", 2, ", ring_size: 251, scheduler: round-robin"))
	if got, want := RingSlots(cfg.VIPs), uint64(2*(251+datapath.RRMaxLen+2)); got != want {
		t.Errorf("2 round-robin VIPs of 251 slots and 2 backends: RingSlots = %d, want %d", got, want)
	}
	// Pools alone push 300 VIPs of 65537 slots (19.7 M) past an arena of
	// 32 Mi slots: 3 rings each (58.9 M).
	ps := problems(t, arenaDoc("ring_arena_slots: 33554432\n", 300, ", pools: [{name: eu, prefixes: [10.0.0.0/8], backends: [198.18.0.11]}, {name: us, prefixes: [10.1.0.0/16], backends: [198.18.0.12]}]"))
	if len(ps) != 1 || !strings.Contains(ps[0].String(), "take 58983300 slots") {
		t.Errorf("problems %v, want the pools' rings counted: 58983300 slots", ps)
	}
}

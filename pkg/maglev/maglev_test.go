package maglev

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// mixedWeights are the weights that test backends are drawn from.
var mixedWeights = []uint32{1, 2, 3, 5, 10, 100}

// backendName returns a distinct IPv4-looking name for index i, so that the
// names look like a real configuration (and are similar to each other).
func backendName(i int) string {
	return fmt.Sprintf("198.%d.%d.%d", 18+i>>16, (i>>8)&0xff, i&0xff)
}

// makeBackends returns n backends with IDs 0..n-1. If weighted is true the
// weights are drawn from mixedWeights with a PRNG seeded by seed; otherwise
// every weight is 1.
func makeBackends(n int, weighted bool, seed uint64) []Backend {
	rng := rand.New(rand.NewPCG(seed, 0x6d61676c6576))
	bs := make([]Backend, n)
	for i := range bs {
		w := uint32(1)
		if weighted {
			w = mixedWeights[rng.IntN(len(mixedWeights))]
		}
		bs[i] = Backend{Name: backendName(i), ID: uint32(i), Weight: w}
	}
	return bs
}

// mustBuild calls Build and fails the test on error.
func mustBuild(tb testing.TB, bs []Backend, m uint32) []uint32 {
	tb.Helper()
	table, err := Build(bs, m)
	if err != nil {
		tb.Fatalf("Build(%d backends, %d): got error %v, want nil", len(bs), m, err)
	}
	if got := uint32(len(table)); got != m {
		tb.Fatalf("Build(%d backends, %d): got %d slots, want %d", len(bs), m, got, m)
	}
	return table
}

// countSlots returns the number of slots held by each ID.
func countSlots(table []uint32) map[uint32]int {
	counts := make(map[uint32]int)
	for _, id := range table {
		counts[id]++
	}
	return counts
}

// tableSum returns the hex sha256 of table encoded as little-endian uint32s.
func tableSum(table []uint32) string {
	buf := make([]byte, 4*len(table))
	for i, id := range table {
		binary.LittleEndian.PutUint32(buf[4*i:], id)
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:])
}

func TestEverySlotFilled(t *testing.T) {
	for _, m := range []uint32{MinSize, 1021, DefaultSize, MaxSize} {
		for _, n := range []int{1, 2, 3, 10, 100, 1000} {
			for _, weighted := range []bool{false, true} {
				bs := makeBackends(n, weighted, uint64(n))
				if n > 3 {
					bs[1].Weight = 0 // a draining backend must not matter
				}
				t.Run(fmt.Sprintf("m=%d/n=%d/weighted=%t", m, n, weighted), func(t *testing.T) {
					table := mustBuild(t, bs, m)
					valid := make(map[uint32]bool)
					for _, b := range bs {
						if b.Weight > 0 {
							valid[b.ID] = true
						}
					}
					for i, id := range table {
						if !valid[id] {
							t.Fatalf("slot %d: got ID %#x, want the ID of a backend with weight > 0", i, id)
						}
					}
				})
			}
		}
	}
}

func TestWeightShares(t *testing.T) {
	const m = DefaultSize
	for _, n := range []int{3, 10, 100, 1000} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			bs := makeBackends(n, true, 42+uint64(n))
			table := mustBuild(t, bs, m)
			counts := countSlots(table)
			var total uint64
			for _, b := range bs {
				total += uint64(b.Weight)
			}
			var maxAbs, maxRel float64
			for _, b := range bs {
				want := float64(b.Weight) / float64(total)
				got := float64(counts[b.ID]) / float64(m)
				abs := math.Abs(got - want)
				if abs > 0.01 {
					t.Errorf("backend %s (weight %d): got slot share %.4f, want %.4f ± 0.01", b.Name, b.Weight, got, want)
				}
				maxAbs = max(maxAbs, abs)
				maxRel = max(maxRel, abs/want)
			}
			t.Logf("N=%d m=%d total weight %d: max |slot share - weight share| = %.4f pp, max relative deviation = %.2f%%",
				n, m, total, 100*maxAbs, 100*maxRel)
			checkTurnOrder(t, bs, counts)
		})
	}
}

// checkTurnOrder checks the exact invariant behind the shares: turns are
// taken in order of virtual time count/weight, so the last turn taken by any
// backend (at time c_i/w_i) is not later than the first turn not taken by
// any other (at time (c_j+1)/w_j). Only backends with a weight above zero
// are considered.
func checkTurnOrder(t *testing.T, bs []Backend, counts map[uint32]int) {
	t.Helper()
	var last, first Backend // maximizing c/w and minimizing (c+1)/w
	for _, b := range bs {
		if b.Weight == 0 {
			continue
		}
		c := uint64(counts[b.ID])
		if last.Weight == 0 || c*uint64(last.Weight) > uint64(counts[last.ID])*uint64(b.Weight) {
			last = b
		}
		if first.Weight == 0 || (c+1)*uint64(first.Weight) < uint64(counts[first.ID]+1)*uint64(b.Weight) {
			first = b
		}
	}
	cl, cf := uint64(counts[last.ID]), uint64(counts[first.ID])
	if cl*uint64(first.Weight) > (cf+1)*uint64(last.Weight) {
		t.Errorf("turn order: got %s with %d slots at weight %d and %s with %d slots at weight %d, want %d/%d <= %d/%d",
			last.Name, cl, last.Weight, first.Name, cf, first.Weight, cl, last.Weight, cf+1, first.Weight)
	}
}

// disruption returns the fraction of slots that differ between before and
// after, and the fraction of slots that differ although they did not belong
// to the removed ID.
func disruption(before, after []uint32, removed uint32) (moved, collateral float64) {
	var nMoved, nCollateral int
	for i := range before {
		if before[i] != after[i] {
			nMoved++
			if before[i] != removed {
				nCollateral++
			}
		}
	}
	m := float64(len(before))
	return float64(nMoved) / m, float64(nCollateral) / m
}

func TestRemoveOneBackend(t *testing.T) {
	const m = DefaultSize
	for _, n := range []int{3, 10, 100, 1000} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			bs := makeBackends(n, false, 0)
			before := mustBuild(t, bs, m)
			bound := 1/float64(n) + 0.01
			var worstMoved, worstCollateral float64
			// Remove a few different backends; report the worst case.
			for _, r := range []int{0, n / 2, n - 1} {
				rest := slices.Delete(slices.Clone(bs), r, r+1)
				after := mustBuild(t, rest, m)
				moved, collateral := disruption(before, after, bs[r].ID)
				if moved > bound {
					t.Errorf("removing %s of %d: got %.2f%% of slots moved, want <= %.2f%%", bs[r].Name, n, 100*moved, 100*bound)
				}
				if collateral > 0.01 {
					t.Errorf("removing %s of %d: got %.2f%% of slots moved between remaining backends, want <= 1.00%%", bs[r].Name, n, 100*collateral)
				}
				for i, id := range after {
					if id == bs[r].ID {
						t.Fatalf("slot %d: got removed ID %d, want another", i, id)
					}
				}
				worstMoved = max(worstMoved, moved)
				worstCollateral = max(worstCollateral, collateral)
			}
			t.Logf("N=%d: moved %.2f%% of slots (bound %.2f%%), of which %.2f%% did not belong to the removed backend",
				n, 100*worstMoved, 100*bound, 100*worstCollateral)
		})
	}
}

func TestRemoveOneWeightedBackend(t *testing.T) {
	// With mixed weights the removed backend's share is not 1/N, so the
	// bound is its share of slots plus 2%: as in the unweighted algorithm,
	// freeing slots lets the remaining backends claim earlier, which shifts
	// some of their later claims (the measured figure is logged).
	const m = DefaultSize
	for _, n := range []int{3, 10, 100, 1000} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			bs := makeBackends(n, true, 7+uint64(n))
			before := mustBuild(t, bs, m)
			counts := countSlots(before)
			// Remove the heaviest and the lightest backend in turn.
			heavy, light := 0, 0
			for i, b := range bs {
				if b.Weight > bs[heavy].Weight {
					heavy = i
				}
				if b.Weight < bs[light].Weight {
					light = i
				}
			}
			for _, r := range []int{heavy, light} {
				rest := slices.Delete(slices.Clone(bs), r, r+1)
				after := mustBuild(t, rest, m)
				moved, collateral := disruption(before, after, bs[r].ID)
				share := float64(counts[bs[r].ID]) / float64(m)
				bound := share + 0.02
				if moved > bound {
					t.Errorf("removing %s (weight %d) of %d: got %.2f%% of slots moved, want <= %.2f%%", bs[r].Name, bs[r].Weight, n, 100*moved, 100*bound)
				}
				t.Logf("N=%d weighted, removed weight %d (%.2f%% of slots): moved %.2f%% of slots (bound %.2f%%), of which %.2f%% did not belong to the removed backend",
					n, bs[r].Weight, 100*share, 100*moved, 100*bound, 100*collateral)
			}
		})
	}
}

func TestOrderIndependent(t *testing.T) {
	for _, n := range []int{2, 10, 100, 1000} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			bs := makeBackends(n, true, uint64(n))
			bs[0].Weight = 0
			want := mustBuild(t, bs, DefaultSize)
			rng := rand.New(rand.NewPCG(uint64(n), 99))
			for round := range 5 {
				shuffled := slices.Clone(bs)
				rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				got := mustBuild(t, shuffled, DefaultSize)
				if i := firstDiff(got, want); i >= 0 {
					t.Fatalf("shuffle %d, slot %d: got %d, want %d", round, i, got[i], want[i])
				}
			}
		})
	}
}

func TestInputNotModified(t *testing.T) {
	bs := makeBackends(50, true, 3)
	slices.Reverse(bs)
	bs[4].Weight = 0
	orig := slices.Clone(bs)
	mustBuild(t, bs, DefaultSize)
	if !slices.Equal(bs, orig) {
		t.Fatalf("input after Build: got %v, want %v", bs, orig)
	}
}

// firstDiff returns the first index at which a and b differ, or -1.
func firstDiff(a, b []uint32) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// referenceBuild is a direct, slow transcription of the documented
// algorithm: sort by Name, drop weight 0, then repeatedly give a turn to the
// backend whose next turn n has the smallest virtual time n/w (ties to the
// smaller Name), which takes the first empty slot of its permutation
// (offset + j*skip) % m.
func referenceBuild(backends []Backend, m uint32) []uint32 {
	bs := slices.Clone(backends)
	slices.SortFunc(bs, func(a, b Backend) int { return strings.Compare(a.Name, b.Name) })
	bs = slices.DeleteFunc(bs, func(b Backend) bool { return b.Weight == 0 })
	table := slices.Repeat([]uint32{Unassigned}, int(m))
	if len(bs) == 0 {
		return table
	}
	type state struct{ offset, skip, j, turns uint64 }
	st := make([]state, len(bs))
	for i, b := range bs {
		h1, h2 := hashes(b.Name)
		st[i] = state{offset: h1 % uint64(m), skip: h2%uint64(m-1) + 1, turns: 1}
	}
	for range m {
		best := 0
		for i := range bs {
			// turns_i / w_i < turns_best / w_best, compared exactly.
			l := new(big.Int).Mul(big.NewInt(int64(st[i].turns)), big.NewInt(int64(bs[best].Weight)))
			r := new(big.Int).Mul(big.NewInt(int64(st[best].turns)), big.NewInt(int64(bs[i].Weight)))
			if l.Cmp(r) < 0 {
				best = i
			}
		}
		s := &st[best]
		for {
			c := (s.offset + s.j*s.skip) % uint64(m)
			s.j++
			if table[c] == Unassigned {
				table[c] = bs[best].ID
				break
			}
		}
		s.turns++
	}
	return table
}

func TestMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(2016, 34))
	weightSets := map[string]func() uint32{
		"equal":  func() uint32 { return 3 },
		"mixed":  func() uint32 { return mixedWeights[rng.IntN(len(mixedWeights))] },
		"drain":  func() uint32 { return uint32(rng.IntN(3)) },
		"random": func() uint32 { return uint32(rng.IntN(65536)) },
		"huge":   func() uint32 { return math.MaxUint32 - uint32(rng.IntN(3)) },
		"skewed": func() uint32 { return []uint32{1, 65535}[rng.IntN(2)] },
		"primes": func() uint32 { return []uint32{2, 3, 5, 7, 11, 13}[rng.IntN(6)] },
		"oneheavy": func() uint32 {
			if rng.IntN(8) == 0 {
				return 1000
			}
			return 1
		},
	}
	for _, name := range slices.Sorted(maps.Keys(weightSets)) {
		weight := weightSets[name]
		for _, m := range []uint32{251, 257, 1021} {
			for _, n := range []int{1, 2, 5, 17, 40} {
				bs := makeBackends(n, false, 0)
				for i := range bs {
					bs[i].Weight = weight()
				}
				rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
				got := mustBuild(t, bs, m)
				want := referenceBuild(bs, m)
				if i := firstDiff(got, want); i >= 0 {
					t.Errorf("weights %s, m=%d, n=%d, slot %d: got %d, want %d (reference)", name, m, n, i, got[i], want[i])
				}
			}
		}
	}
	// One full-size table.
	bs := makeBackends(8, true, 8)
	if i := firstDiff(mustBuild(t, bs, DefaultSize), referenceBuild(bs, DefaultSize)); i >= 0 {
		t.Errorf("mixed weights, m=%d, n=8: first difference from reference at slot %d", DefaultSize, i)
	}
}

func TestWeightScaleInvariant(t *testing.T) {
	// Only the ratios of the weights matter.
	bs := makeBackends(100, true, 5)
	want := mustBuild(t, bs, DefaultSize)
	for i := range bs {
		bs[i].Weight *= 300
	}
	got := mustBuild(t, bs, DefaultSize)
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("weights x300, slot %d: got %d, want %d", i, got[i], want[i])
	}
}

func TestDraining(t *testing.T) {
	bs := makeBackends(20, true, 11)
	drained := map[uint32]bool{}
	for _, i := range []int{0, 5, 19} {
		bs[i].Weight = 0
		drained[bs[i].ID] = true
	}
	table := mustBuild(t, bs, DefaultSize)
	counts := countSlots(table)
	for id := range drained {
		if got := counts[id]; got != 0 {
			t.Errorf("draining ID %d: got %d slots, want 0", id, got)
		}
	}
	// Draining backends are equivalent to absent ones.
	var rest []Backend
	for _, b := range bs {
		if b.Weight > 0 {
			rest = append(rest, b)
		}
	}
	if i := firstDiff(table, mustBuild(t, rest, DefaultSize)); i >= 0 {
		t.Errorf("slot %d differs between draining and removed backends", i)
	}
}

func TestNoActiveBackends(t *testing.T) {
	cases := map[string][]Backend{
		"nil":      nil,
		"empty":    {},
		"all zero": {{Name: "a", ID: 1}, {Name: "b", ID: 2}, {Name: "c", ID: 3}},
	}
	for name, bs := range cases {
		for _, m := range []uint32{MinSize, DefaultSize} {
			table := mustBuild(t, bs, m)
			for i, id := range table {
				if id != Unassigned {
					t.Fatalf("%s, m=%d, slot %d: got %#x, want Unassigned (%#x)", name, m, i, id, Unassigned)
				}
			}
		}
	}
}

func TestErrors(t *testing.T) {
	ok := []Backend{{Name: "a", ID: 1, Weight: 1}, {Name: "b", ID: 2, Weight: 1}}
	cases := []struct {
		name     string
		backends []Backend
		m        uint32
		want     string
	}{
		{"m not prime", ok, 1000, "maglev: table size 1000 is not a prime between 251 and 131071"},
		{"m too small", ok, 250, "maglev: table size 250 is not a prime between 251 and 131071"},
		{"m prime but too small", ok, 241, "table size 241 is not a prime between 251 and 131071"},
		{"m prime but too large", ok, 131101, "table size 131101 is not a prime between 251 and 131071"},
		{"m zero", ok, 0, "table size 0 is not a prime between 251 and 131071"},
		{"m zero, no backends", nil, 0, "table size 0"},
		{"duplicate name", []Backend{{Name: "a", ID: 1, Weight: 1}, {Name: "b", ID: 2}, {Name: "a", ID: 3}}, DefaultSize, `duplicate backend name "a"`},
		{"duplicate ID", []Backend{{Name: "a", ID: 7, Weight: 1}, {Name: "b", ID: 7, Weight: 1}}, DefaultSize, `duplicate backend ID 7 (backends "a" and "b")`},
		{"duplicate ID draining", []Backend{{Name: "a", ID: 7}, {Name: "b", ID: 7}}, DefaultSize, "duplicate backend ID 7"},
		{"unassigned ID", []Backend{{Name: "a", ID: Unassigned, Weight: 1}}, DefaultSize, `backend "a" has ID 4294967295, which is reserved`},
		{"empty name", []Backend{{Name: "a", ID: 1, Weight: 1}, {Name: "", ID: 9, Weight: 1}}, DefaultSize, "backend with ID 9 has an empty name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			table, err := Build(c.backends, c.m)
			if err == nil {
				t.Fatalf("got table of %d slots and nil error, want error containing %q", len(table), c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got error %q, want it to contain %q", err, c.want)
			}
			if table != nil {
				t.Fatalf("got table of %d slots with the error, want nil", len(table))
			}
		})
	}
}

func TestErrorOrderIndependent(t *testing.T) {
	// Several problems at once: the same one must be reported whatever the
	// input order.
	bs := []Backend{
		{Name: "c", ID: 3, Weight: 1},
		{Name: "b", ID: 2, Weight: 1},
		{Name: "b", ID: 5, Weight: 1},
		{Name: "a", ID: 3, Weight: 1},
		{Name: "d", ID: Unassigned, Weight: 1},
		{Name: "b", ID: 4, Weight: 0},
	}
	_, err := Build(bs, DefaultSize)
	if err == nil {
		t.Fatal("got nil error, want one")
	}
	want := err.Error()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
		if _, err := Build(bs, DefaultSize); err == nil || err.Error() != want {
			t.Fatalf("shuffled input: got error %v, want %q", err, want)
		}
	}
	t.Logf("error: %s", want)
}

// TestGolden pins the exact tables for small fixed inputs. Every node of a
// cluster, and every version of Fulcrum, must build the same table from the
// same configuration, or flows would be sent to different backends when they
// move between nodes or during an upgrade. If this test fails, the hash, the
// salts, the turn order or the probing order changed: that is a breaking
// change, not something to fix by updating the checksums.
func TestGolden(t *testing.T) {
	bs := []Backend{
		{Name: "198.18.0.11", ID: 0, Weight: 1},
		{Name: "198.18.0.12", ID: 1, Weight: 1},
		{Name: "198.18.0.13", ID: 2, Weight: 1},
	}
	weighted := slices.Clone(bs)
	weighted[0].Weight, weighted[1].Weight, weighted[2].Weight = 1, 2, 5
	cases := []struct {
		name     string
		backends []Backend
		m        uint32
		want     string
	}{
		{"equal weights m=251", bs, 251, "e6ed80aaf81a3d057c62bea51e70c1d63153647c8c50f2250b3a037ddddb482c"},
		{"weights 1,2,5 m=251", weighted, 251, "09681c82365f6cd48b23962d8f80c552d1ea90e77c490da1b32e608005fa800e"},
		{"weights 1,2,5 m=65537", weighted, DefaultSize, "9d0bd9d28af13726d933995f8bccc44801bbad76e09fc016f9635e6455483296"},
	}
	for _, c := range cases {
		table := mustBuild(t, c.backends, c.m)
		if got := tableSum(table); got != c.want {
			t.Errorf("%s: sha256 of table: got %s, want %s (first slots %v)", c.name, got, c.want, table[:16])
		}
	}
}

func TestHashes(t *testing.T) {
	// Pin the hash itself, independently of the table, so that a change is
	// reported at its source.
	h1, h2 := hashes("198.18.0.11")
	if want := uint64(0x39198be49d55d4b8); h1 != want {
		t.Errorf("h1(198.18.0.11): got %#x, want %#x", h1, want)
	}
	if want := uint64(0x3fcb71d8fcf3edf9); h2 != want {
		t.Errorf("h2(198.18.0.11): got %#x, want %#x", h2, want)
	}
	// The local FNV-1a must agree with the standard library's.
	for _, in := range []string{"", "a", "foobar", offsetSalt + "198.18.0.11", skipSalt + "2001:db8::1"} {
		ref := fnv.New64a()
		ref.Write([]byte(in))
		if got, want := fnv1a(fnvOffset64, in), ref.Sum64(); got != want {
			t.Errorf("fnv1a(%q): got %#x, want %#x", in, got, want)
		}
	}
}

func TestIsPrime(t *testing.T) {
	cases := []struct {
		n    uint32
		want bool
	}{
		{0, false}, {1, false}, {2, true}, {3, true}, {4, false}, {5, true},
		{9, false}, {25, false}, {49, false}, {97, true}, {121, false},
		{250, false}, {251, true}, {1000, false}, {1021, true},
		{65535, false}, {65536, false}, {65537, true},
		{131071, true}, {131073, false}, {131101, true},
		{4294967291, true},  // largest prime below 2^32
		{4294967295, false}, // 3 * 5 * 17 * 257 * 65537
		{4294836225, false}, // 65535^2
		{4293001441, false}, // 65521^2, the square of the largest 16-bit prime
	}
	for _, c := range cases {
		want := big.NewInt(int64(c.n)).ProbablyPrime(20)
		if c.want != want {
			t.Fatalf("bad test case %d: says %t, math/big says %t", c.n, c.want, want)
		}
		if got := IsPrime(c.n); got != c.want {
			t.Errorf("IsPrime(%d): got %t, want %t", c.n, got, c.want)
		}
	}
	// Every n below 20000 against math/big.
	for n := range uint32(20000) {
		if got, want := IsPrime(n), big.NewInt(int64(n)).ProbablyPrime(20); got != want {
			t.Fatalf("IsPrime(%d): got %t, want %t", n, got, want)
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		bs := makeBackends(n, true, 1)
		b.Run(fmt.Sprintf("backends=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Build(bs, DefaultSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuildEqualWeights measures the round-robin path used when all
// weights are equal.
func BenchmarkBuildEqualWeights(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		bs := makeBackends(n, false, 1)
		b.Run(fmt.Sprintf("backends=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Build(bs, DefaultSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuildRandomWeights measures a worst case for the turn order:
// weights drawn from [1, 65535], so that almost every backend is alone in its
// weight class.
func BenchmarkBuildRandomWeights(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		bs := makeBackends(n, false, 1)
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		for i := range bs {
			bs[i].Weight = 1 + uint32(rng.IntN(65535))
		}
		b.Run(fmt.Sprintf("backends=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Build(bs, DefaultSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package ringsize

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// backends returns n backends named like addresses with weights from w.
func backends(n int, w func(i int) uint32) []Backend {
	out := make([]Backend, n)
	for i := range out {
		out[i] = Backend{Name: fmt.Sprintf("198.18.%d.%d", i/250, i%250+1), Weight: w(i)}
	}
	return out
}

func equal(int) uint32 { return 1 }

func random(seed uint64, lo, hi uint32) func(int) uint32 {
	r := rand.New(rand.NewPCG(seed, 17))
	return func(int) uint32 { return lo + r.Uint32N(hi-lo+1) }
}

// buildCounts counts each backend's slots in a real maglev.Build.
func buildCounts(t testing.TB, bs []Backend, m uint32) []uint32 {
	t.Helper()
	in := make([]maglev.Backend, len(bs))
	for i, b := range bs {
		in[i] = maglev.Backend{Name: b.Name, ID: uint32(i), Weight: b.Weight}
	}
	table, err := maglev.Build(in, m)
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]uint32, len(bs))
	for _, id := range table {
		if id != maglev.Unassigned {
			counts[id]++
		}
	}
	return counts
}

// TestCountsMatchBuild checks the premise of the package: the slots per
// backend that Counts computes are those of maglev.Build, ties and drained
// backends included.
func TestCountsMatchBuild(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name string
		bs   []Backend
		m    uint32
	}{
		{"equal 100 at 251", backends(100, equal), 251},
		{"equal 7 at 65537", backends(7, equal), 65537},
		{"two classes with ties", backends(30, func(i int) uint32 { return uint32(1 + i%2) }), 1021},
		{"draining", backends(20, func(i int) uint32 { return uint32(i % 3) }), 509},
		{"random 1-100", backends(100, random(3, 1, 100)), 11579},
		{"big weights", backends(50, random(4, 60000, 65535)), 4093},
	}
	for i := range 40 {
		n := 1 + r.IntN(300)
		cases = append(cases, struct {
			name string
			bs   []Backend
			m    uint32
		}{fmt.Sprintf("random %d", i), backends(n, random(uint64(i), 0, uint32(1+r.IntN(1000)))), Sizes[r.IntN(len(Sizes))]})
	}
	for _, c := range cases {
		got, want := Counts(c.bs, c.m), buildCounts(t, c.bs, c.m)
		if !slices.Equal(got, want) {
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("%s: backend %s (weight %d): Counts %d slots, maglev.Build %d", c.name, c.bs[i].Name, c.bs[i].Weight, got[i], want[i])
				}
			}
		}
	}
}

// TestChoose checks the rule on shapes of interest: the chosen size
// meets the bound in a real build and the candidate before it does not.
func TestChoose(t *testing.T) {
	cases := []struct {
		name string
		bs   []Backend
		max  uint32
		want uint32
		met  bool
	}{
		{"no backends", nil, 65537, 251, true},
		{"all draining", backends(5, func(int) uint32 { return 0 }), 65537, 251, true},
		{"one backend", backends(1, equal), 65537, 251, true},
		{"100 equal", backends(100, equal), 65537, 11579, true},
		{"10 equal", backends(10, equal), 65537, 1021, true},
		// 65.5 slots each: 65 or 66 are within 1%; 46.3 are not.
		{"1000 equal", backends(1000, equal), 65537, 65537, true},
		{"1000 equal up to the largest", backends(1000, equal), maglev.MaxSize, 65537, true},
		{"1000 equal, max below", backends(1000, equal), 46337, 46337, false},
		{"100 random 1-100", backends(100, random(9, 1, 100)), 65537, 65537, false},
		{"100 random 50-100", backends(100, random(9, 50, 100)), 65537, 11579, true},
		{"capped by max", backends(100, equal), 4093, 4093, false},
		{"max not in the list", backends(100, equal), 10007, 10007, true},
	}
	for _, c := range cases {
		got, err := Choose(c.bs, c.max)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got.Size != c.want || got.Met != c.met {
			t.Errorf("%s: chose %+v, want {Size:%d Met:%v}", c.name, got, c.want, c.met)
		}
		active := slices.DeleteFunc(slices.Clone(c.bs), func(b Backend) bool { return b.Weight == 0 })
		if ok := within(active, buildCounts(t, active, got.Size), got.Size); ok != got.Met {
			t.Errorf("%s: size %d: the bound holds in a real build: %v, Choose says %v (worst %.3f%%)", c.name, got.Size, ok, got.Met, WorstPercent(active, got.Size))
		}
		cands := Candidates(c.max)
		if i := slices.Index(cands, got.Size); got.Met && i > 0 {
			prev := cands[i-1]
			if within(active, buildCounts(t, active, prev), prev) {
				t.Errorf("%s: the smaller size %d meets the bound too (worst %.3f%%), so %d is not the smallest", c.name, prev, WorstPercent(active, prev), got.Size)
			}
		}
	}
}

// TestWithinBound checks the 1% bound by floating point on the chosen
// size, independently of the integer comparison Choose uses.
func TestWithinBound(t *testing.T) {
	for seed := range uint64(20) {
		bs := backends(2+int(seed)*7, random(seed, 20, 100))
		c, err := Choose(bs, maglev.MaxSize)
		if err != nil {
			t.Fatal(err)
		}
		w := WorstPercent(bs, c.Size)
		if c.Met != (w <= TolerancePercent) {
			t.Errorf("seed %d: size %d: worst share error %.4f%%, Met %v", seed, c.Size, w, c.Met)
		}
		if i := slices.Index(Candidates(maglev.MaxSize), c.Size); c.Met && i > 0 {
			if prev := Sizes[i-1]; WorstPercent(bs, prev) <= TolerancePercent {
				t.Errorf("seed %d: %d is within the bound too (%.4f%%)", seed, prev, WorstPercent(bs, prev))
			}
		}
	}
}

// TestDeterministic: the order of the backends does not matter, and the
// choice is the same every time.
func TestDeterministic(t *testing.T) {
	bs := backends(200, random(5, 1, 30))
	first, err := Choose(bs, maglev.MaxSize)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	for range 20 {
		shuffled := slices.Clone(bs)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got, err := Choose(shuffled, maglev.MaxSize)
		if err != nil {
			t.Fatal(err)
		}
		if got != first {
			t.Fatalf("shuffled backends: %+v, first %+v", got, first)
		}
	}
	// Scaling every weight keeps the shares, so the size.
	scaled := slices.Clone(bs)
	for i := range scaled {
		scaled[i].Weight *= 3
	}
	if got, _ := Choose(scaled, maglev.MaxSize); got != first {
		t.Errorf("weights ×3: %+v, want %+v", got, first)
	}
}

// TestNoHysteresis pins the decision the package comment explains: the
// size after a change is the size a fresh choice makes, whatever it was
// before, so a node with a history and a node without agree.
func TestNoHysteresis(t *testing.T) {
	small := backends(10, equal)
	large := backends(100, equal)
	a, _ := Choose(small, 65537)
	b, _ := Choose(large, 65537)
	c, _ := Choose(small, 65537)
	if a.Size != 1021 || b.Size != 11579 || c != a {
		t.Errorf("10 → 100 → 10 backends chose %d, %d, %d; want 1021, 11579, 1021", a.Size, b.Size, c.Size)
	}
}

func TestBadInput(t *testing.T) {
	for _, c := range []struct {
		bs  []Backend
		max uint32
		err string
	}{
		{nil, 65536, "ring size maximum 65536 is not a prime between 251 and 131071"},
		{nil, 13, "ring size maximum 13 is not a prime between 251 and 131071"},
		{nil, 131101, "ring size maximum 131101 is not a prime"},
		{[]Backend{{"198.18.0.1", 70000}}, 65537, "backend 198.18.0.1: weight 70000 is over the maximum 65535"},
	} {
		_, err := Choose(c.bs, c.max)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("Choose(max %d): %v, want %q", c.max, err, c.err)
		}
	}
}

// benchShape is a set of backends the benchmarks choose for.
type benchShape struct {
	name string
	bs   []Backend
}

// benchShapes are the shapes the docs quote: 100 and 1000 backends, of
// weight 1 and of random weights 1–100.
func benchShapes() []benchShape {
	return []benchShape{
		{"100-equal", backends(100, equal)},
		{"100-random", backends(100, random(1, 1, 100))},
		{"1000-equal", backends(1000, equal)},
		{"1000-random", backends(1000, random(1, 1, 100))},
	}
}

// BenchmarkChoose prints the chooser's time for the shapes the docs
// quote: control FIGURE ms=N lines.
func BenchmarkChoose(b *testing.B) {
	for _, c := range benchShapes() {
		b.Run(c.name, func(b *testing.B) {
			var got Choice
			start := time.Now()
			for b.Loop() {
				got, _ = Choose(c.bs, maglev.DefaultSize)
			}
			per := time.Since(start) / time.Duration(b.N)
			b.ReportMetric(float64(got.Size), "size")
			b.Logf("control ringsize-choose-%s ms=%.4f size=%d met=%v", c.name, float64(per.Nanoseconds())/1e6, got.Size, got.Met)
		})
	}
}

// TestChooserCache: the cached choice is the uncached one, for a shape
// seen before, one changed by a weight, and after the cache started over.
func TestChooserCache(t *testing.T) {
	var c Chooser
	check := func(bs []Backend, max uint32) {
		t.Helper()
		want, _ := Choose(bs, max)
		for range 2 {
			got, err := c.Choose(bs, max)
			if err != nil || got != want {
				t.Fatalf("cached %+v, %v; want %+v", got, err, want)
			}
		}
	}
	bs := backends(100, equal)
	check(bs, 65537)
	check(bs, 4093)
	heavier := slices.Clone(bs)
	heavier[3].Weight = 50
	check(heavier, 65537)
	// Fill past maxHeld: the cache starts over and still answers right.
	for i := range maxHeld/1000 + 2 {
		check(backends(1000, func(j int) uint32 { return uint32(1 + (i+j)%7) }), 65537)
	}
	if c.held > maxHeld {
		t.Errorf("the cache holds %d backends, over %d", c.held, maxHeld)
	}
	check(bs, 65537)
}

// chooseByBuild is Choose done the plain way, one maglev.Build per
// candidate, for BenchmarkChoose to compare.
func chooseByBuild(tb testing.TB, bs []Backend, max uint32) uint32 {
	for _, m := range Candidates(max) {
		if within(bs, buildCounts(tb, bs, m), m) {
			return m
		}
	}
	return max
}

// BenchmarkChooseByBuild is the search with a build per candidate that
// Counts avoids: the cost Choose would have without it.
func BenchmarkChooseByBuild(b *testing.B) {
	for _, c := range benchShapes() {
		b.Run(c.name, func(b *testing.B) {
			want, _ := Choose(c.bs, maglev.DefaultSize)
			var got uint32
			start := time.Now()
			for b.Loop() {
				got = chooseByBuild(b, c.bs, maglev.DefaultSize)
			}
			if got != want.Size {
				b.Fatalf("by build %d, Choose %d", got, want.Size)
			}
			per := time.Since(start) / time.Duration(b.N)
			b.Logf("control ringsize-bybuild-%s ms=%.4f size=%d", c.name, float64(per.Nanoseconds())/1e6, got)
		})
	}
}

// BenchmarkFleet chooses for 1000 VIPs of 100 backends, each VIP with its
// own weights, and logs the sizes chosen and the ring memory they take
// (the kernel charges an array map of m 4-byte values 8·m + 312 bytes:
// values are stored in 8-byte cells), against rings of 65537.
func BenchmarkFleet(b *testing.B) {
	for _, kind := range []struct {
		name   string
		lo, hi uint32
	}{{"equal", 1, 1}, {"random-1-100", 1, 100}, {"random-50-100", 50, 100}} {
		b.Run(kind.name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				sizes := map[uint32]int{}
				met := 0
				var bytes uint64
				for v := range 1000 {
					c, err := Choose(backends(100, random(uint64(v), kind.lo, kind.hi)), maglev.DefaultSize)
					if err != nil {
						b.Fatal(err)
					}
					sizes[c.Size]++
					if c.Met {
						met++
					}
					bytes += 8*uint64(c.Size) + 312
				}
				if i > 0 {
					continue
				}
				var hist []string
				for _, s := range slices.Sorted(maps.Keys(sizes)) {
					hist = append(hist, fmt.Sprintf("%d×%d", s, sizes[s]))
				}
				b.Logf("1000 VIPs × 100 backends, weights %s: within 1%% for %d; rings %.1f MiB (65537: %.1f MiB); sizes %s",
					kind.name, met, float64(bytes)/(1<<20), float64(1000*(8*65537+312))/(1<<20), strings.Join(hist, " "))
			}
		})
	}
}

package maglev

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
)

// figures are the build times that issue 17 sets targets for, all at
// M = DefaultSize. `make bench` prints one `control FIGURE ms=N` line for
// each (see TestMain), which scripts read.
var figures = []struct {
	name string
	n    int
	// maxWeight 1 gives equal weights; otherwise weights are uniform in
	// [1, maxWeight].
	maxWeight uint32
}{
	{"maglev-1000-equal", 1000, 1},
	{"maglev-1000-random", 1000, 100},
	{"maglev-10000-random", 10000, 100},
}

// figureBackends returns the input of a figure: n backends with IPv4-looking
// names and weights uniform in [1, maxWeight] from a fixed seed.
func figureBackends(n int, maxWeight uint32) []Backend {
	bs := makeBackends(n, false, 0)
	rng := rand.New(rand.NewPCG(uint64(n), uint64(maxWeight)))
	for i := range bs {
		bs[i].Weight = 1 + rng.Uint32N(maxWeight)
	}
	return bs
}

// measured holds the milliseconds per build of every figure run in this
// process, by builder ("build" or "previous") and figure name.
var measured = struct {
	sync.Mutex
	ms map[string]map[string][]float64
}{ms: map[string]map[string][]float64{}}

// record adds one measurement of a figure.
func record(builder, figure string, ms float64) {
	measured.Lock()
	defer measured.Unlock()
	if measured.ms[builder] == nil {
		measured.ms[builder] = map[string][]float64{}
	}
	measured.ms[builder][figure] = append(measured.ms[builder][figure], ms)
}

// median returns the median of runs (the mean of the middle two for an even
// count), which must not be empty.
func median(runs []float64) float64 {
	s := slices.Clone(runs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkFigures times Build for each figure, and the previous (heap)
// build on the same input as a baseline, so that the speed-up is measured in
// one process on one machine state.
func BenchmarkFigures(b *testing.B) {
	builders := []struct {
		name  string
		build func(testing.TB, []Backend, uint32) []uint32
	}{
		{"build", mustBuild},
		{"previous", func(_ testing.TB, bs []Backend, m uint32) []uint32 { return previousBuild(bs, m) }},
	}
	for _, f := range figures {
		bs := figureBackends(f.n, f.maxWeight)
		for _, builder := range builders {
			b.Run(f.name+"/"+builder.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					builder.build(b, bs, DefaultSize)
				}
				ms := b.Elapsed().Seconds() * 1e3 / float64(b.N)
				b.ReportMetric(ms, "ms/op")
				record(builder.name, f.name, ms)
			})
		}
	}
}

// TestMain prints, after the tests and benchmarks ran, one line per figure
// measured: `control FIGURE ms=N` for Build (the format scripts read), then
// `baseline FIGURE ms=N speedup=R` for the previous build. With -count
// above 1 the figure is the median of the runs.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range figures {
		runs := measured.ms["build"][f.name]
		if len(runs) == 0 {
			continue
		}
		ms := median(runs)
		fmt.Printf("control %s ms=%.3f\n", f.name, ms)
		if prev := measured.ms["previous"][f.name]; len(prev) > 0 {
			p := median(prev)
			fmt.Printf("baseline %s ms=%.3f speedup=%.1f (previous heap build, same process)\n", f.name, p, p/ms)
		}
	}
	os.Exit(code)
}

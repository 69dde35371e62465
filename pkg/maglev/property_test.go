package maglev

import (
	"cmp"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// propertyPrimes are the table sizes the property tests draw from: the
// bounds, the default, and sizes where the tail and the bucket counts
// change.
var propertyPrimes = []uint32{MinSize, 257, 1021, 4093, 16381, DefaultSize, MaxSize}

// weightDists draw a backend's weight. Zeros (draining) appear in most of
// them; "huge" goes beyond the supported maximum on purpose.
var weightDists = []struct {
	name string
	draw func(*rand.Rand) uint32
}{
	{"equal", func(*rand.Rand) uint32 { return 7 }},
	{"0-65535", func(r *rand.Rand) uint32 { return r.Uint32N(65536) }},
	{"0-100", func(r *rand.Rand) uint32 { return r.Uint32N(101) }},
	{"0-3", func(r *rand.Rand) uint32 { return r.Uint32N(4) }},
	{"few classes", func(r *rand.Rand) uint32 { return []uint32{0, 1, 2, 3, 6, 12, 60, 120}[r.IntN(8)] }},
	{"one heavy", func(r *rand.Rand) uint32 {
		if r.IntN(50) == 0 {
			return 65535
		}
		return 1
	}},
	{"huge", func(r *rand.Rand) uint32 { return math.MaxUint32 - r.Uint32N(1000) }},
}

// randomBackends returns n valid backends with random unique names (random
// bytes, 1 to 40 of them, not only IPv4-like), random unique IDs (dense or
// sparse) and weights from dist, in random order.
func randomBackends(rng *rand.Rand, n int, dist func(*rand.Rand) uint32) []Backend {
	names := make(map[string]bool, n)
	ids := make(map[uint32]bool, n)
	sparse := rng.IntN(2) == 0
	bs := make([]Backend, 0, n)
	for len(bs) < n {
		name := make([]byte, 1+rng.IntN(40))
		for i := range name {
			// Mostly digits and dots, so that names share prefixes.
			if rng.IntN(4) == 0 {
				name[i] = byte(rng.UintN(256))
			} else {
				name[i] = "0123456789."[rng.IntN(11)]
			}
		}
		id := uint32(rng.IntN(2 * n))
		if sparse {
			id = rng.Uint32N(Unassigned)
		}
		if names[string(name)] || ids[id] {
			continue
		}
		names[string(name)], ids[id] = true, true
		bs = append(bs, Backend{Name: string(name), ID: id, Weight: dist(rng)})
	}
	return bs
}

// checkAgainstPrevious builds bs with Build and with the previous (heap)
// build, and fails unless the tables are identical.
func checkAgainstPrevious(t *testing.T, what string, bs []Backend, m uint32) {
	t.Helper()
	got := mustBuild(t, bs, m)
	want := previousBuild(bs, m)
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("%s, m=%d, n=%d: slot %d: got %d, want %d (previous build); sha256 got %s, want %s",
			what, m, len(bs), i, got[i], want[i], tableSum(got), tableSum(want))
	}
}

// TestBuildMatchesPrevious compares Build with the previous build on random
// inputs: 1 to 2000 backends, every weight distribution, every size of
// propertyPrimes.
func TestBuildMatchesPrevious(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 2026))
	rounds := 3
	if testing.Short() {
		rounds = 1
	}
	for range rounds {
		for _, d := range weightDists {
			for _, m := range propertyPrimes {
				n := 1 + rng.IntN(2000)
				checkAgainstPrevious(t, d.name, randomBackends(rng, n, d.draw), m)
			}
		}
	}
}

// TestBuildMatchesReference compares Build with the plain transcription of
// the documented algorithm on random small inputs, where the reference is
// fast enough.
func TestBuildMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 34))
	for _, d := range weightDists {
		for _, m := range []uint32{MinSize, 257, 1021} {
			bs := randomBackends(rng, 1+rng.IntN(60), d.draw)
			got := mustBuild(t, bs, m)
			if i := firstDiff(got, referenceBuild(bs, m)); i >= 0 {
				t.Fatalf("%s, m=%d, n=%d: slot %d differs from the reference", d.name, m, len(bs), i)
			}
		}
	}
}

// FuzzBuild compares Build with the previous build on inputs derived from
// the fuzzer's seed, backend count, size index and weight distribution.
func FuzzBuild(f *testing.F) {
	f.Add(uint64(1), uint16(1), uint8(0), uint8(0))
	f.Add(uint64(2), uint16(1000), uint8(5), uint8(1))
	f.Add(uint64(3), uint16(2000), uint8(6), uint8(4))
	f.Add(uint64(4), uint16(300), uint8(0), uint8(6))
	f.Fuzz(func(t *testing.T, seed uint64, n uint16, size, dist uint8) {
		rng := rand.New(rand.NewPCG(seed, 0))
		m := propertyPrimes[int(size)%len(propertyPrimes)]
		d := weightDists[int(dist)%len(weightDists)]
		checkAgainstPrevious(t, d.name, randomBackends(rng, 1+int(n)%2000, d.draw), m)
	})
}

// TestConcurrentScheduleMatchesSequential builds random inputs with the
// turns ordered on a second goroutine (orderConcurrently) and on the
// calling one, whatever the table size, and fails unless the tables are
// identical. Build picks one or the other by size and weights, so both
// must give the same table.
func TestConcurrentScheduleMatchesSequential(t *testing.T) {
	// populate orders the turns concurrently only with GOMAXPROCS > 1.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	defer func(saved uint32) { concurrentMin = saved }(concurrentMin)
	rng := rand.New(rand.NewPCG(17, 4242))
	for _, d := range weightDists[1:] { // weights that make several classes
		for _, m := range propertyPrimes {
			bs := randomBackends(rng, 2+rng.IntN(1500), d.draw)
			concurrentMin = 0
			concurrent := mustBuild(t, bs, m)
			concurrentMin = MaxSize + 1
			sequential := mustBuild(t, bs, m)
			if i := firstDiff(concurrent, sequential); i >= 0 {
				t.Fatalf("%s, m=%d, n=%d: slot %d: concurrent schedule %d, sequential %d",
					d.name, m, len(bs), i, concurrent[i], sequential[i])
			}
			if i := firstDiff(concurrent, previousBuild(bs, m)); i >= 0 {
				t.Fatalf("%s, m=%d, n=%d: slot %d differs from the previous build", d.name, m, len(bs), i)
			}
		}
	}
}

// TestConcurrentBuilds runs builds on several goroutines at once, so that
// they take scratch space from the pool concurrently and reuse it across
// sizes and backend counts, and compares each table with the previous
// build. Run with -race it also checks the hand-over of the turns between
// the schedule goroutine and the claims.
func TestConcurrentBuilds(t *testing.T) {
	type job struct {
		bs   []Backend
		m    uint32
		want []uint32
	}
	rng := rand.New(rand.NewPCG(17, 99))
	var jobs []job
	for k := range 24 {
		d := weightDists[k%len(weightDists)]
		m := propertyPrimes[rng.IntN(len(propertyPrimes))]
		bs := randomBackends(rng, 1+rng.IntN(1200), d.draw)
		jobs = append(jobs, job{bs, m, previousBuild(bs, m)})
	}
	errs := make(chan error, 4*len(jobs))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for k := range jobs {
				j := jobs[(k+g*5)%len(jobs)]
				got, err := Build(j.bs, j.m)
				if err != nil {
					errs <- err
					continue
				}
				if i := firstDiff(got, j.want); i >= 0 {
					errs <- fmt.Errorf("m=%d, n=%d: slot %d: got %d, want %d", j.m, len(j.bs), i, got[i], j.want[i])
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestSortBackends compares sortBackends, which radix-sorts 16-byte name
// prefixes from radixMin backends on, with a plain comparison sort, on
// names that share long prefixes, are longer than 16 bytes or are equal
// (with different IDs, as invalid input has them).
func TestSortBackends(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 7))
	prefixes := []string{"", "198.18.", "2001:db8:0:0:0:0:", "backend-with-a-long-common-prefix-"}
	for _, n := range []int{1, 2, radixMin - 1, radixMin, 1000, 5000} {
		bs := make([]Backend, n)
		for i := range bs {
			name := prefixes[rng.IntN(len(prefixes))] + fmt.Sprint(rng.IntN(3*n))
			if i > 0 && rng.IntN(10) == 0 {
				name = bs[rng.IntN(i)].Name // a duplicate
			}
			bs[i] = Backend{Name: name, ID: uint32(rng.IntN(4 * n)), Weight: uint32(rng.IntN(3))}
		}
		want := slices.Clone(bs)
		slices.SortFunc(want, func(a, b Backend) int {
			return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID), cmp.Compare(a.Weight, b.Weight))
		})
		sc := getScratch()
		got := slices.Clone(sortBackends(bs, sc))
		sc.release()
		if !slices.Equal(got, want) {
			i := 0
			for i = range got {
				if got[i] != want[i] {
					break
				}
			}
			t.Fatalf("n=%d: position %d: got %+v, want %+v", n, i, got[i], want[i])
		}
	}
}

// TestBarrett compares the Barrett reduction with %, for the sizes of
// propertyPrimes and one less (the moduli of the offset and the skip), on
// random and extreme 64-bit values.
func TestBarrett(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 8))
	for _, p := range propertyPrimes {
		for _, d := range []uint64{uint64(p), uint64(p) - 1} {
			mu, _ := bits.Div64(1, 0, d)
			xs := []uint64{0, 1, d - 1, d, d + 1, 2*d - 1, math.MaxUint64, math.MaxUint64 - 1, math.MaxUint64 / d * d}
			for range 10000 {
				xs = append(xs, rng.Uint64(), rng.Uint64N(1<<35))
			}
			for _, x := range xs {
				if got, want := barrett(x, d, mu), x%d; got != want {
					t.Fatalf("barrett(%d, %d): got %d, want %d", x, d, got, want)
				}
			}
		}
	}
}

// TestGCD compares gcd with math/big on random and edge values.
func TestGCD(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 9))
	pairs := [][2]uint64{{0, 1}, {1, 0}, {0, 7}, {12, 18}, {1 << 40, 1 << 20}, {math.MaxUint32, math.MaxUint32 - 1}, {65535 * 3, 65535}}
	for range 10000 {
		pairs = append(pairs, [2]uint64{rng.Uint64N(1 << 33), rng.Uint64N(1<<32) + 1})
	}
	for _, p := range pairs {
		want := new(big.Int).GCD(nil, nil, new(big.Int).SetUint64(p[0]), new(big.Int).SetUint64(p[1])).Uint64()
		if got := gcd(p[0], p[1]); got != want {
			t.Fatalf("gcd(%d, %d): got %d, want %d", p[0], p[1], got, want)
		}
	}
}

// TestInverse checks the modular inverse the tail uses, for every skip of
// the smaller sizes of propertyPrimes and random skips of the larger ones.
func TestInverse(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 10))
	for _, m := range propertyPrimes {
		f := &filler{m: m}
		for k := range uint32(5000) {
			s := 1 + k
			if s >= m {
				s = 1 + rng.Uint32N(m-1)
			}
			if inv := f.inverse(s); inv == 0 || inv >= m || uint64(inv)*uint64(s)%uint64(m) != 1 {
				t.Fatalf("inverse(%d) mod %d: got %d, whose product with %d is %d mod m, not 1", s, m, inv, s, uint64(inv)*uint64(s)%uint64(m))
			}
		}
		if inv := f.inverse(m - 1); inv != m-1 {
			t.Fatalf("inverse(%d) mod %d: got %d, want %d", m-1, m, inv, m-1)
		}
	}
}

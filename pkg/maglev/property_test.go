package maglev

import (
	"math"
	"math/rand/v2"
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

// Package maglev builds weighted Maglev consistent-hashing lookup tables.
//
// # Algorithm
//
// The table is generated as described in "Maglev: A Fast and Reliable
// Software Network Load Balancer" (Eisenbud et al., NSDI 2016, §3.4). The
// table has m slots, where m is a prime. Every backend has a permutation of
// the slots, defined by two numbers derived from its Name:
//
//	offset = h1 % m
//	skip   = h2 % (m-1) + 1
//	permutation[j] = (offset + j*skip) % m
//
// Because m is prime and 1 <= skip < m, every permutation visits each slot
// exactly once. Backends then take turns; on its turn a backend walks its own
// permutation from where it stopped last time and claims the first slot that
// is still empty. Generation stops when every slot is claimed.
//
// # Weights
//
// In the paper every backend takes one turn per round. Here the turns are
// proportional to the weights: turn number t (counting from 1) of a backend
// with weight w happens at the virtual time t/w, and turns are taken in order
// of increasing virtual time (compared exactly, as fractions). Turns with the
// same virtual time are taken in the order of the backends' Names, compared
// byte-wise. With equal weights this is exactly the round robin of the paper.
// Only the ratios of the weights matter: multiplying every weight by the same
// factor gives the same table.
//
// Each turn fills exactly one slot, so when the table is full every backend
// has taken every turn with a virtual time before T and none after T, where T
// is the virtual time of the last turn: each backend holds between T*w-1 and
// T*w slots, within one slot of a count proportional to its weight.
//
// A backend's virtual times depend only on its own weight, not on the weights
// of the others, so removing or adding a backend does not reorder the turns of
// the remaining backends, whatever their weights. Disruption therefore stays
// as in the unweighted algorithm: the slots of a removed backend, plus a few
// slots that change hands because the remaining backends find free slots
// earlier on their permutations.
//
// A weight of 0 means the backend is draining: it takes no turns and gets no
// slots. The supported maximum weight is 65535. Larger values (up to the
// maximum uint32) are accepted and give the mathematically expected result,
// but configurations should stay within 65535.
//
// # Hash
//
// h1 and h2 are computed from the bytes of Name with 64-bit FNV-1a (offset
// basis 0xcbf29ce484222325, prime 0x100000001b3), where the hashed input is a
// fixed ASCII salt followed by the name:
//
//	h1 = mix64(FNV-1a-64("fulcrum-maglev-offset:" + Name))
//	h2 = mix64(FNV-1a-64("fulcrum-maglev-skip:" + Name))
//
// mix64 is the SplitMix64 finalizer, applied because FNV-1a alone leaves
// similar names (for example consecutive IP addresses) with correlated
// remainders:
//
//	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
//	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
//	z = z ^ (z >> 31)
//
// All arithmetic is on uint64 and wraps modulo 2^64.
//
// # Determinism
//
// Every node running Fulcrum must produce the same table for the same
// configuration, so that a flow keeps its backend when it is moved between
// load balancers. Build therefore depends only on the set of backends and m:
// the input is sorted by Name before use, the hash is fixed and does not
// depend on the platform or the process, and only integer arithmetic is used.
// Changing the hash, the salts, the turn order or the probing order changes
// the tables and breaks agreement between nodes running different versions;
// the package tests pin a checksum of a reference table to catch such changes.
//
// # Cost
//
// A build sorts the backends by Name (a radix sort on the first 16 bytes of
// the names from 256 backends on, a comparison sort of the names that share
// them), hashes each name once, and then fills the table.
//
// Backends with the same weight share their virtual times and take their
// turns as a block. The blocks are ordered on a calendar of time buckets up
// to a bound on the time of the last turn, about one bucket per block turn,
// so ordering the turns costs O(1) per turn on average instead of a heap's
// O(log k) for k distinct weights. Blocks that share a time p/q (in lowest
// terms) are exactly those whose weight q divides, so their merged members
// are computed once per q. With several weights and m >= 16381 the turns
// are ordered on a second goroutine, ahead of the claims, and handed over
// in chunks: the claims take them in the same order.
//
// Filling the table probes O(m log m) slots in total, as in the paper. The
// claimed slots are a byte array; while more than 5/8 of the table is
// empty a turn tests the first two slots of its walk, then four slots at
// a time, and once fewer than about sqrt(m) slots are empty a turn
// computes the distance to each empty slot on its permutation instead of
// probing. Claiming is most of the time of a build and is sequential: each
// turn depends on the slots claimed before it. docs/performance.md gives
// the figures.
//
// None of this changes the table: the package tests compare Build with the
// previous heap-based build and with a plain transcription of the
// algorithm above on random inputs, and the concurrent ordering of the
// turns with the sequential one. Scratch space (O(n + m) for n backends)
// is kept in a sync.Pool between builds; a build allocates its table.
package maglev

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

const (
	// DefaultSize is the default number of slots in a table.
	DefaultSize uint32 = 65537
	// MinSize is the smallest accepted table size.
	MinSize uint32 = 251
	// MaxSize is the largest accepted table size.
	MaxSize uint32 = 131071
	// Unassigned fills every slot when no backend has a weight above zero.
	Unassigned uint32 = 0xFFFFFFFF
)

// Backend is one entry: Name is its stable identity (e.g. "198.18.0.11"), it drives the
// permutation; ID is the value written into table slots (the datapath's backend index);
// Weight 0 means draining: it gets no slots.
//
// The supported maximum Weight is 65535; larger values work but are not
// meant to be used.
type Backend struct {
	Name   string
	ID     uint32
	Weight uint32
}

// Build returns a table of m slots, each holding a backend ID.
//
// m must be a prime in [MinSize, MaxSize]. Every Name must be non-empty and
// unique, and every ID must be unique and different from Unassigned; these
// rules apply to draining backends too. The result does not depend on the
// order of backends. If no backend has a weight above zero, every slot holds
// Unassigned. The backends slice is not modified.
func Build(backends []Backend, m uint32) ([]uint32, error) {
	if m < MinSize || m > MaxSize || !IsPrime(m) {
		return nil, fmt.Errorf("maglev: table size %d is not a prime between %d and %d", m, MinSize, MaxSize)
	}

	sc := getScratch()
	defer sc.release()
	sorted := sortBackends(backends, sc)
	if err := validate(sorted); err != nil {
		return nil, err
	}

	// Drop draining backends; the order by Name is kept.
	active := sorted[:0]
	for _, b := range sorted {
		if b.Weight > 0 {
			active = append(active, b)
		}
	}

	table := make([]uint32, m)
	if len(active) == 0 {
		for i := range table {
			table[i] = Unassigned
		}
		return table, nil
	}
	if err := populate(table, active, sc); err != nil {
		return nil, err
	}
	return table, nil
}

// sortBackends returns a copy of backends sorted by Name. The order is total
// (ties on Name, which are errors, are broken by ID and Weight) so that even
// the error reported is independent of the input order.
//
// The sort orders integer keys made of the first 16 bytes of the names,
// and only compares whole backends when those are equal: this is the same
// order, because keys that differ differ at the first byte where the names
// differ.
func sortBackends(backends []Backend, sc *scratch) []Backend {
	ks := grow(sc.keys, len(backends))
	sc.keys = ks
	for i, b := range backends {
		ks[i] = nameKeyed{k0: nameKey(b.Name, 0), k1: nameKey(b.Name, 8), i: uint32(i)}
	}
	full := func(a, b nameKeyed) int {
		x, y := &backends[a.i], &backends[b.i]
		if c := strings.Compare(x.Name, y.Name); c != 0 {
			return c
		}
		if c := cmp.Compare(x.ID, y.ID); c != 0 {
			return c
		}
		return cmp.Compare(x.Weight, y.Weight)
	}
	if len(ks) < radixMin {
		slices.SortFunc(ks, func(a, b nameKeyed) int {
			if c := cmp.Compare(a.k0, b.k0); c != 0 {
				return c
			}
			if c := cmp.Compare(a.k1, b.k1); c != 0 {
				return c
			}
			return full(a, b)
		})
	} else {
		ks, sc.keysTmp = radixSortKeys(ks, sc.keysTmp)
		sc.keys = ks
		// Runs of equal keys are names that share their first 16 bytes.
		for lo := 0; lo < len(ks); {
			hi := lo + 1
			for hi < len(ks) && ks[hi].k0 == ks[lo].k0 && ks[hi].k1 == ks[lo].k1 {
				hi++
			}
			if hi-lo > 1 {
				slices.SortFunc(ks[lo:hi], full)
			}
			lo = hi
		}
	}
	sorted := grow(sc.sorted, len(backends))
	sc.sorted = sorted
	for j, k := range ks {
		sorted[j] = backends[k.i]
	}
	return sorted
}

// nameKeyed is the sort key of backends[i]: the first 16 bytes of its name.
type nameKeyed struct {
	k0, k1 uint64
	i      uint32
}

// radixMin is the number of backends from which sortBackends uses a radix
// sort: it costs two passes over the keys per byte position that is not the
// same in every key, and beats a comparison sort (whose comparison closure
// is not inlined) from a few hundred keys on. Measured on IPv4 names
// (thread CPU time, median of 20): 0.80 ms with the comparison sort against
// 0.27 ms for 10 000, 0.052 against 0.023 ms for 1000.
const radixMin = 256

// radixSortKeys sorts ks by (k0, k1), stably, with a least significant
// digit radix sort on bytes. Byte positions at which every key has the same
// byte are skipped. It returns the sorted keys and the scratch space, in ks
// and tmp if tmp is large enough.
func radixSortKeys(ks, tmp []nameKeyed) (sorted, scratch []nameKeyed) {
	// Bytes at which all keys agree (most of "198.18." in IPv4 names, the
	// zeros past short names) need no pass.
	or0, or1 := uint64(0), uint64(0)
	and0, and1 := uint64(math.MaxUint64), uint64(math.MaxUint64)
	for _, k := range ks {
		or0, and0 = or0|k.k0, and0&k.k0
		or1, and1 = or1|k.k1, and1&k.k1
	}
	tmp = grow(tmp, len(ks))
	// The least significant byte of the key first: k1's, then k0's.
	for shift := uint(0); shift < 64; shift += 8 {
		if (or1^and1)>>shift&0xff != 0 {
			radixPass(ks, tmp, shift, false)
			ks, tmp = tmp, ks
		}
	}
	for shift := uint(0); shift < 64; shift += 8 {
		if (or0^and0)>>shift&0xff != 0 {
			radixPass(ks, tmp, shift, true)
			ks, tmp = tmp, ks
		}
	}
	return ks, tmp
}

// radixPass sorts ks into out, stably, by byte shift/8 of k0 (if high) or
// of k1.
func radixPass(ks, out []nameKeyed, shift uint, high bool) {
	var count [256]uint32
	for k := range ks {
		x := ks[k].k1
		if high {
			x = ks[k].k0
		}
		count[x>>shift&0xff]++
	}
	var sum uint32
	for d := range count {
		count[d], sum = sum, sum+count[d]
	}
	for k := range ks {
		x := ks[k].k1
		if high {
			x = ks[k].k0
		}
		d := x >> shift & 0xff
		out[count[d]] = ks[k]
		count[d]++
	}
}

// nameKey returns bytes from..from+7 of name as a big-endian integer, with
// zeros past the end of name.
func nameKey(name string, from int) uint64 {
	var k uint64
	for j := from; j < from+8; j++ {
		k <<= 8
		if j < len(name) {
			k |= uint64(name[j])
		}
	}
	return k
}

// validate checks backends, which must be sorted by Name, and reports the
// first problem found in that order.
func validate(sorted []Backend) error {
	ids := newIDSet(sorted)
	for i, b := range sorted {
		if b.Name == "" {
			return fmt.Errorf("maglev: backend with ID %d has an empty name", b.ID)
		}
		if i > 0 && sorted[i-1].Name == b.Name {
			return fmt.Errorf("maglev: duplicate backend name %q (IDs %d and %d)", b.Name, sorted[i-1].ID, b.ID)
		}
		if b.ID == Unassigned {
			return fmt.Errorf("maglev: backend %q has ID %d, which is reserved for Unassigned", b.Name, b.ID)
		}
		if !ids.add(b.ID) {
			other := sorted[slices.IndexFunc(sorted, func(o Backend) bool { return o.ID == b.ID })]
			return fmt.Errorf("maglev: duplicate backend ID %d (backends %q and %q)", b.ID, other.Name, b.Name)
		}
	}
	return nil
}

// idSet is a set of backend IDs: a bitmap when the IDs are below a few
// times their count, as the datapath's backend indices are, and a map
// otherwise.
type idSet struct {
	bits []uint64
	m    map[uint32]struct{}
}

// newIDSet returns an empty set with room for the IDs of backends.
func newIDSet(backends []Backend) idSet {
	var top uint32
	for _, b := range backends {
		top = max(top, b.ID)
	}
	if uint64(top) < 64*uint64(len(backends))+4096 {
		return idSet{bits: make([]uint64, top/64+1)}
	}
	return idSet{m: make(map[uint32]struct{}, len(backends))}
}

// add adds id and reports whether it was new.
func (s idSet) add(id uint32) bool {
	if s.bits != nil {
		w, bit := id/64, uint64(1)<<(id%64)
		if s.bits[w]&bit != 0 {
			return false
		}
		s.bits[w] |= bit
		return true
	}
	if _, ok := s.m[id]; ok {
		return false
	}
	s.m[id] = struct{}{}
	return true
}

const (
	fnvOffset64 = 0xcbf29ce484222325
	fnvPrime64  = 0x100000001b3

	offsetSalt = "fulcrum-maglev-offset:"
	skipSalt   = "fulcrum-maglev-skip:"
)

// The FNV-1a states after the salts, which are the same for every name.
var (
	offsetBasis = fnv1a(fnvOffset64, offsetSalt)
	skipBasis   = fnv1a(fnvOffset64, skipSalt)
)

// hashes returns h1 and h2 for name, as documented in the package comment.
// The two hashes are computed in one loop, so that their multiplications
// overlap.
func hashes(name string) (h1, h2 uint64) {
	h1, h2 = offsetBasis, skipBasis
	for i := 0; i < len(name); i++ {
		h1 = (h1 ^ uint64(name[i])) * fnvPrime64
		h2 = (h2 ^ uint64(name[i])) * fnvPrime64
	}
	return mix64(h1), mix64(h2)
}

// fnv1a continues a 64-bit FNV-1a hash with state h over the bytes of s.
func fnv1a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// mix64 is the SplitMix64 finalizer.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// IsPrime reports whether n is prime.
func IsPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	if n < 4 {
		return true
	}
	if n%2 == 0 || n%3 == 0 {
		return false
	}
	// Every prime above 3 is 6k-1 or 6k+1. uint64 keeps i*i from overflowing.
	for i := uint64(5); i*i <= uint64(n); i += 6 {
		if uint64(n)%i == 0 || uint64(n)%(i+2) == 0 {
			return false
		}
	}
	return true
}

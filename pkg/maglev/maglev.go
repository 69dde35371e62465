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
// Backends with the same weight share their virtual times and are scheduled
// together by a heap over the k distinct weights, so ordering the turns costs
// about O(log k) per turn; filling the table probes O(m log m) slots in total,
// as in the paper.
// Build allocates the table and O(n) scratch space for n backends, nothing
// per slot.
package maglev

import (
	"cmp"
	"fmt"
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

	// The order is total (ties on Name, which are errors, are broken by ID
	// and Weight) so that even the error reported is independent of the
	// input order.
	sorted := slices.Clone(backends)
	slices.SortFunc(sorted, func(a, b Backend) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := cmp.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return cmp.Compare(a.Weight, b.Weight)
	})
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
	for i := range table {
		table[i] = Unassigned
	}
	if len(active) == 0 {
		return table, nil
	}

	populate(table, active)
	return table, nil
}

// validate checks backends, which must be sorted by Name, and reports the
// first problem found in that order.
func validate(sorted []Backend) error {
	ids := make(map[uint32]string, len(sorted))
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
		if other, ok := ids[b.ID]; ok {
			return fmt.Errorf("maglev: duplicate backend ID %d (backends %q and %q)", b.ID, other, b.Name)
		}
		ids[b.ID] = b.Name
	}
	return nil
}

// populate fills table, whose slots must all be Unassigned, with the IDs of
// active, which must be sorted by Name, be non-empty and have only positive
// weights.
//
// Backends with the same weight have the same virtual times, so they are
// grouped into one class and the classes are ordered with a min-heap on the
// virtual time of their next turn. When the earliest class is alone at its
// time, its members take their turns in index (Name) order; when several
// classes share the time, their members are merged in index order. With
// equal weights there is one class and this is the round robin of the paper.
func populate(table []uint32, active []Backend) {
	m := uint32(len(table))
	n := len(active)

	// next[i] is the slot at which backend i resumes walking its permutation,
	// skip[i] is its step. Walking by addition avoids a multiplication and a
	// division per probe.
	next := make([]uint32, n)
	skip := make([]uint32, n)
	ids := make([]uint32, n)
	// byWeight holds the indices into active ordered by weight, then index,
	// so that each class is a run of it in index order.
	byWeight := make([]uint32, n)
	for i, b := range active {
		h1, h2 := hashes(b.Name)
		next[i] = uint32(h1 % uint64(m))
		skip[i] = uint32(h2%uint64(m-1)) + 1
		ids[i] = b.ID
		byWeight[i] = uint32(i)
	}
	slices.SortFunc(byWeight, func(a, b uint32) int {
		if c := cmp.Compare(active[a].Weight, active[b].Weight); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})

	var h classHeap
	for lo := 0; lo < n; {
		w := active[byWeight[lo]].Weight
		hi := lo + 1
		for hi < n && active[byWeight[hi]].Weight == w {
			hi++
		}
		h = append(h, class{n: 1, w: uint64(w), lo: uint32(lo), hi: uint32(hi)})
		lo = hi
	}
	h.init()

	filled := uint32(0)
	// claim gives backend i its turn: it takes the first empty slot on its
	// permutation, starting at next[i]. It reports whether the table is full.
	claim := func(i uint32) bool {
		c, s := next[i], skip[i]
		for table[c] != Unassigned {
			c += s
			if c >= m {
				c -= m
			}
		}
		table[c] = ids[i]
		c += s
		if c >= m {
			c -= m
		}
		next[i] = c
		filled++
		return filled == m
	}

	fired := make([]class, 0, len(h)) // classes sharing the current virtual time
	merged := make([]uint32, 0, n)    // their members
	for {
		top := h[0]
		if !(len(h) > 1 && h[1].same(top)) && !(len(h) > 2 && h[2].same(top)) {
			// Only the root has this time (the heap order puts any tie
			// among its children).
			for _, i := range byWeight[top.lo:top.hi] {
				if claim(i) {
					return
				}
			}
			h[0].n++
			h.down(0)
			continue
		}
		fired, merged = fired[:0], merged[:0]
		for len(h) > 0 && h[0].same(top) {
			c := h.pop()
			fired = append(fired, c)
			merged = append(merged, byWeight[c.lo:c.hi]...)
		}
		slices.Sort(merged)
		for _, i := range merged {
			if claim(i) {
				return
			}
		}
		for _, c := range fired {
			c.n++
			h.push(c)
		}
	}
}

// class is the backends of one weight w (byWeight[lo:hi]) and the number n
// (counting from 1) of their next turn, which is taken at virtual time n/w.
type class struct {
	n, w   uint64
	lo, hi uint32
}

// before reports whether the next turn of a has an earlier virtual time than
// that of b. Times are compared exactly by cross-multiplication: n is at
// most MaxSize+1 (< 2^18) and w is below 2^32, so the products fit in 64
// bits.
func (a class) before(b class) bool { return a.n*b.w < b.n*a.w }

// same reports whether a and b have the same virtual time.
func (a class) same(b class) bool { return a.n*b.w == b.n*a.w }

// classHeap is a binary min-heap of classes ordered by before.
type classHeap []class

// init establishes the heap order.
func (h classHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// down moves the element at i down until the heap order holds.
func (h classHeap) down(i int) {
	n := len(h)
	x := h[i]
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && h[r].before(h[c]) {
			c = r
		}
		if !h[c].before(x) {
			break
		}
		h[i] = h[c]
		i = c
	}
	h[i] = x
}

// up moves the element at i up until the heap order holds.
func (h classHeap) up(i int) {
	x := h[i]
	for i > 0 {
		p := (i - 1) / 2
		if !x.before(h[p]) {
			break
		}
		h[i] = h[p]
		i = p
	}
	h[i] = x
}

// pop removes and returns the minimum.
func (h *classHeap) pop() class {
	old := *h
	x := old[0]
	last := len(old) - 1
	old[0] = old[last]
	*h = old[:last]
	if last > 0 {
		h.down(0)
	}
	return x
}

// push adds c.
func (h *classHeap) push(c class) {
	*h = append(*h, c)
	h.up(len(*h) - 1)
}

const (
	fnvOffset64 = 0xcbf29ce484222325
	fnvPrime64  = 0x100000001b3

	offsetSalt = "fulcrum-maglev-offset:"
	skipSalt   = "fulcrum-maglev-skip:"
)

// hashes returns h1 and h2 for name, as documented in the package comment.
func hashes(name string) (h1, h2 uint64) {
	return mix64(fnv1a(fnv1a(fnvOffset64, offsetSalt), name)),
		mix64(fnv1a(fnv1a(fnvOffset64, skipSalt), name))
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

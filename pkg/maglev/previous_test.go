package maglev

import (
	"cmp"
	"slices"
	"strings"
)

// This file keeps the previous production build, which ordered the turns of
// the weight classes with a min-heap, as an oracle for the fast build in
// maglev.go and as the baseline of the benchmarks. Its output is what every
// node running an earlier version builds, so the fast build must match it
// slot for slot.

// previousBuild is the previous Build for valid input: sort by Name, drop
// draining backends and populate with the heap.
func previousBuild(backends []Backend, m uint32) []uint32 {
	active := slices.Clone(backends)
	slices.SortFunc(active, func(a, b Backend) int { return strings.Compare(a.Name, b.Name) })
	active = slices.DeleteFunc(active, func(b Backend) bool { return b.Weight == 0 })
	table := slices.Repeat([]uint32{Unassigned}, int(m))
	if len(active) > 0 {
		heapPopulate(table, active)
	}
	return table
}

// heapPopulate fills table, whose slots must all be Unassigned, with the IDs of
// active, which must be sorted by Name, be non-empty and have only positive
// weights.
//
// Backends with the same weight have the same virtual times, so they are
// grouped into one class and the classes are ordered with a min-heap on the
// virtual time of their next turn. When the earliest class is alone at its
// time, its members take their turns in index (Name) order; when several
// classes share the time, their members are merged in index order. With
// equal weights there is one class and this is the round robin of the paper.
func heapPopulate(table []uint32, active []Backend) {
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

	var h prevHeap
	for lo := 0; lo < n; {
		w := active[byWeight[lo]].Weight
		hi := lo + 1
		for hi < n && active[byWeight[hi]].Weight == w {
			hi++
		}
		h = append(h, prevClass{n: 1, w: uint64(w), lo: uint32(lo), hi: uint32(hi)})
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

	fired := make([]prevClass, 0, len(h)) // classes sharing the current virtual time
	merged := make([]uint32, 0, n)        // their members
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

// prevClass is the backends of one weight w (byWeight[lo:hi]) and the number n
// (counting from 1) of their next turn, which is taken at virtual time n/w.
type prevClass struct {
	n, w   uint64
	lo, hi uint32
}

// before reports whether the next turn of a has an earlier virtual time than
// that of b. Times are compared exactly by cross-multiplication: n is at
// most MaxSize+1 (< 2^18) and w is below 2^32, so the products fit in 64
// bits.
func (a prevClass) before(b prevClass) bool { return a.n*b.w < b.n*a.w }

// same reports whether a and b have the same virtual time.
func (a prevClass) same(b prevClass) bool { return a.n*b.w == b.n*a.w }

// prevHeap is a binary min-heap of classes ordered by before.
type prevHeap []prevClass

// init establishes the heap order.
func (h prevHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// down moves the element at i down until the heap order holds.
func (h prevHeap) down(i int) {
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
func (h prevHeap) up(i int) {
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
func (h *prevHeap) pop() prevClass {
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
func (h *prevHeap) push(c prevClass) {
	*h = append(*h, c)
	h.up(len(*h) - 1)
}

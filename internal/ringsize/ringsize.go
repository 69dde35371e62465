// Package ringsize chooses a VIP's Maglev ring size when its config says
// ring_size: auto: the smallest size of a fixed list of primes (Sizes) at
// which every backend's share of the ring is within 1% (relative) of its
// share of the weights, up to a maximum.
//
// # Determinism
//
// The choice is a function of the backends' names (addresses) and weights
// and of the maximum only: no state, no clock, no platform-dependent
// arithmetic (shares are compared as integers). Two nodes with the same
// configuration choose the same size and so build byte-identical rings.
// There is deliberately no hysteresis (keeping a larger size while it still
// meets the bound): the size would then depend on each node's history, and
// a node that restarts, or joins later, with the same configuration would
// choose a smaller size than a peer that kept its old one, so the pair would
// map the same flow to different backends after a failover.
//
// # Cost
//
// The share of each backend in a maglev.Build table does not depend on the
// permutations, only on the turn order: every turn fills exactly one slot,
// and turns go by virtual time t/w, ties by name (see package maglev). So
// Counts computes the slots per backend without building the table, in
// O(n + r log n) for n backends and r < n slots left after the
// proportional floor; the package tests compare it with maglev.Build.
package ringsize

import (
	"container/heap"
	"fmt"
	"strings"

	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// Sizes are the ring sizes auto chooses from, ascending: about a factor
// √2 apart (the largest prime at or below 256·2^(k/2), except 65537, the
// default size, in place of 65521). The list is part of the behaviour:
// changing it changes the rings of auto VIPs on every node, so it must not
// change between versions that share flows.
var Sizes = []uint32{
	251, 359, 509, 719, 1021, 1447, 2039, 2887, 4093, 5791, 8191, 11579,
	16381, 23167, 32749, 46337, 65537, 92681, 131071,
}

// MaxWeight is the largest weight Choose takes (the datapath's maximum):
// it keeps the exact integer comparisons from overflowing.
const MaxWeight = 1<<16 - 1

// TolerancePercent is the bound: a backend's share of the ring may differ
// from its share of the weights by this percentage of the latter.
const TolerancePercent = 1

// Backend is one backend as the ring is built from it: Name is maglev's
// (the address in text form), Weight its configured weight (0 = draining:
// no slots, and none expected).
type Backend struct {
	Name   string
	Weight uint32
}

// Choice is a chosen size.
type Choice struct {
	Size uint32
	// Met says whether every backend's share is within the bound at Size;
	// false when even the maximum does not reach it (Size is then the
	// maximum).
	Met bool
}

// Candidates returns the sizes Choose tries for max, ascending: those of
// Sizes below max, then max itself (which need not be in Sizes).
func Candidates(max uint32) []uint32 {
	var out []uint32
	for _, s := range Sizes {
		if s >= max {
			break
		}
		out = append(out, s)
	}
	return append(out, max)
}

// CheckMax returns what is wrong with max as a maximum ring size, "" if
// nothing.
func CheckMax(max uint32) string {
	if max < maglev.MinSize || max > maglev.MaxSize || !maglev.IsPrime(max) {
		return fmt.Sprintf("is not a prime between %d and %d", maglev.MinSize, maglev.MaxSize)
	}
	return ""
}

// Choose returns the smallest of Candidates(max) at which every backend
// with a weight is within the bound; max (Met false) if none is. With no
// backend of weight above zero every size meets it, so the smallest is
// chosen. Backend names must be unique; max must pass CheckMax.
func Choose(backends []Backend, max uint32) (Choice, error) {
	if msg := CheckMax(max); msg != "" {
		return Choice{}, fmt.Errorf("ring size maximum %d %s", max, msg)
	}
	active := make([]Backend, 0, len(backends))
	for _, b := range backends {
		if b.Weight > MaxWeight {
			return Choice{}, fmt.Errorf("backend %s: weight %d is over the maximum %d", b.Name, b.Weight, MaxWeight)
		}
		if b.Weight > 0 {
			active = append(active, b)
		}
	}
	var a apportion
	for _, m := range Candidates(max) {
		if possible(active, m) && within(active, a.counts(active, m), m) {
			return Choice{Size: m, Met: true}, nil
		}
	}
	return Choice{Size: max}, nil
}

// Counts returns how many of the m slots of maglev.Build(backends, m) each
// backend holds, by index.
func Counts(backends []Backend, m uint32) []uint32 {
	var a apportion
	return a.counts(backends, m)
}

// WorstPercent returns the largest relative difference, in percent,
// between a backend's share of m slots and its share of the weights.
func WorstPercent(backends []Backend, m uint32) float64 {
	total := totalWeight(backends)
	worst := 0.0
	for i, c := range Counts(backends, m) {
		w := backends[i].Weight
		if w == 0 {
			continue
		}
		want := float64(m) * float64(w) / float64(total)
		worst = max(worst, 100*abs(float64(c)-want)/want)
	}
	return worst
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func totalWeight(backends []Backend) uint64 {
	var w uint64
	for _, b := range backends {
		w += uint64(b.Weight)
	}
	return w
}

// within says whether counts (of m slots) are within the bound: for every
// backend |c/m - w/W| <= (TolerancePercent/100)·w/W, that is
// 100·|c·W - m·w| <= TolerancePercent·m·w, in integers. With weights up to
// MaxWeight, at most 2^18 backends and m below 2^17 every product fits in
// 63 bits.
func within(backends []Backend, counts []uint32, m uint32) bool {
	total := totalWeight(backends)
	for i, b := range backends {
		cw, mw := uint64(counts[i])*total, uint64(m)*uint64(b.Weight)
		if 100*max(cw, mw)-100*min(cw, mw) > TolerancePercent*mw {
			return false
		}
	}
	return true
}

// possible is a cheap necessary condition for within: every backend's
// interval of allowed counts holds a whole number. It rules out most sizes
// that are too small without apportioning them.
func possible(backends []Backend, m uint32) bool {
	total := totalWeight(backends)
	for _, b := range backends {
		// Allowed counts c: 100·m·w - T·m·w <= 100·c·W <= 100·m·w + T·m·w.
		mw := uint64(m) * uint64(b.Weight)
		lo, hi := (100-TolerancePercent)*mw, (100+TolerancePercent)*mw
		d := 100 * total
		if (lo+d-1)/d > hi/d {
			return false
		}
	}
	return true
}

// apportion holds the scratch space of counts.
type apportion struct {
	out  []uint32
	next turns
}

// counts gives each backend the turns maglev's weighted build gives it
// before its table of m slots is full. The turns with a virtual time up to
// m/W (W the total weight) number floor(m·w/W) per backend, at most m in
// all, so they all come first; the r slots left are taken by the next
// turns in (time, name) order, which a heap of each backend's next turn
// yields.
func (a *apportion) counts(backends []Backend, m uint32) []uint32 {
	a.out = a.out[:0]
	a.next = a.next[:0]
	total := totalWeight(backends)
	if total == 0 {
		return append(a.out, make([]uint32, len(backends))...)
	}
	left := uint64(m)
	for i, b := range backends {
		c := uint32(uint64(m) * uint64(b.Weight) / total)
		a.out = append(a.out, c)
		left -= uint64(c)
		if b.Weight > 0 {
			a.next = append(a.next, turn{i: i, b: &backends[i], t: uint64(c) + 1})
		}
	}
	if left == 0 {
		return a.out
	}
	heap.Init(&a.next)
	for ; left > 0; left-- {
		t := &a.next[0]
		a.out[t.i]++
		t.t++
		heap.Fix(&a.next, 0)
	}
	return a.out
}

// turn is a backend's next turn, number t, at virtual time t/weight.
type turn struct {
	i int
	b *Backend
	t uint64
}

// turns is a min-heap of turns by (virtual time, name), maglev's order.
type turns []turn

func (h turns) Len() int { return len(h) }
func (h turns) Less(i, j int) bool {
	x, y := h[i], h[j]
	// x.t/x.w < y.t/y.w, exactly.
	l, r := x.t*uint64(y.b.Weight), y.t*uint64(x.b.Weight)
	if l != r {
		return l < r
	}
	return strings.Compare(x.b.Name, y.b.Name) < 0
}
func (h turns) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *turns) Push(x any)   { *h = append(*h, x.(turn)) }
func (h *turns) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

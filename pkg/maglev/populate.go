package maglev

import (
	"errors"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"sync"
)

// populate fills table with the IDs of active, which must be sorted by Name,
// be non-empty and have only positive weights. Every slot is written. The
// error is an internal one that cannot happen if the turn schedule is right.
//
// The turns are generated in order by a calendar of time buckets over the
// weight classes (see schedule), and each turn claims its slot through a
// filler. With several weight classes and a large table, the schedule runs
// on its own goroutine, ahead of the claims (see orderConcurrently).
func populate(table []uint32, active []Backend, sc *scratch) error {
	m := uint32(len(table))
	s := newSchedule(active, m, sc)
	full := false
	if len(s.classes) > 1 && m >= concurrentMin && runtime.GOMAXPROCS(0) > 1 {
		order, written := orderConcurrently(s, sc, m, len(active))
		// Hashing the names gives the schedule goroutine a head start.
		f := newFiller(table, active, sc)
		full = claimOrdered(f, order, written)
	} else {
		f := newFiller(table, active, sc)
		full = s.run(f.claim)
	}
	if !full {
		return errors.New("maglev: internal error: turns ran out before the table was full")
	}
	return nil
}

// concurrentMin is the table size from which populate orders the turns of
// several weight classes on a second goroutine. Ordering them costs about
// 0.15 ms of CPU for 65537 slots and 1000 backends of weights 1-100, whose
// build takes about 1.1 ms; the goroutine and its hand-offs cost a few
// microseconds. A variable, so that the tests can compare both ways.
var concurrentMin uint32 = 16381

// orderChunk is the number of turns the schedule goroutine hands over at a
// time: small enough that claiming starts early, large enough that the
// channel operations are a negligible part.
const orderChunk = 2048

// orderConcurrently runs s on a new goroutine, which writes the backend
// index of every turn in order to order and sends on written the number of
// turns written after every orderChunk turns, until m turns are written. It
// closes written when it is done. The turns are the same as those s.run
// gives: only they are computed ahead of the claims.
func orderConcurrently(s *schedule, sc *scratch, m uint32, n int) (order []uint32, written <-chan int) {
	// The schedule stops once m turns are written, and a time adds at most
	// n turns.
	order = grow(sc.order, int(m)+n)
	sc.order = order
	// Every hand-off but the last covers orderChunk turns or more, so the
	// channel holds them all and the goroutine never blocks on it.
	ch := make(chan int, int(m)/orderChunk+2)
	go func() {
		defer close(ch)
		end, sent := 0, 0
		s.run(func(members []uint32) bool {
			end += copy(order[end:], members)
			if end >= int(m) || end-sent >= orderChunk {
				ch <- end
				sent = end
			}
			return end >= int(m)
		})
		if end > sent {
			ch <- end
		}
	}()
	return order, ch
}

// claimOrdered gives the turns of order to f as orderConcurrently hands
// them over, and reports whether the table is full. It returns when the
// schedule goroutine is done, so that its scratch space can be reused.
func claimOrdered(f *filler, order []uint32, written <-chan int) bool {
	full := false
	start := 0
	for end := range written {
		if !full {
			full = f.claim(order[start:end])
		}
		start = end
	}
	return full
}

// scratch is the working memory of a build, kept between builds in
// scratchPool: allocating and zeroing it (mostly the 128 KiB array of
// claimed slots) cost more than clearing the part that is used. A build
// allocates its table and, for validation, a bitmap of the IDs.
type scratch struct {
	keys, keysTmp []nameKeyed
	sorted        []Backend
	filler        filler
	schedule      schedule
	order         []uint32 // the turns, for orderConcurrently
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// getScratch returns scratch space from the pool.
func getScratch() *scratch { return scratchPool.Get().(*scratch) }

// release drops the references to the caller's data, which the pool must
// not keep alive, and returns sc to the pool.
func (sc *scratch) release() {
	clear(sc.sorted)
	sc.filler.table = nil
	scratchPool.Put(sc)
}

// grow returns s resliced to length n, reallocated if its capacity is
// less. The contents are not cleared.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// usedLen is the length of the array of claimed slots: a power of two
// above MaxSize, so that indexing it by a slot modulo usedLen needs no
// bounds check.
const usedLen = 1 << 17

// filler claims slots for backends. A backend's turn takes the first empty
// slot on its permutation, resuming where its previous turn stopped.
type filler struct {
	table []uint32
	m     uint32
	walks []walk
	// used[c] is 1 if slot c is claimed. A byte per slot (64 KiB for 65537
	// slots, in the L2 cache) is tested with a plain load, where a bitmap
	// needs a shift by a variable amount; on amd64 those shifts go through
	// CX and made the compiler spill registers in the probe loop.
	used *[usedLen]byte
	// left is the number of empty slots.
	left uint32
	// While more than sparse slots are empty, a turn tests the first two
	// slots of its walk, of which one is empty most of the time, before it
	// probes four slots at once: fewer instructions, and a branch that is
	// still predictable. Measured at m = 65537 with 1000 backends of equal
	// weight, 5/8 of m is a few percent faster than 1/2, 3/8 or 7/8.
	sparse uint32

	// When few slots are left, most probes of a walk would hit claimed
	// slots: about m/left per turn. From tail empty slots on, a turn
	// instead computes, for each empty slot, how many steps away it is on
	// the backend's permutation and takes the nearest: left operations per
	// turn. Both give the same slot, since the walk visits every slot
	// before it returns to its start.
	tail   uint32
	inTail bool     // whether the tail has started
	empty  []uint32 // the empty slots in the tail, in no particular order
	inv    []uint32 // per backend, the inverse of its skip modulo m, 0 until the tail needs it
	mu     uint64   // floor(2^64 / m), for Barrett reduction
}

// walk is a backend's position on its permutation. It is 16 bytes, so that
// the walks of 1000 backends take half of a 32 KiB L1 cache.
type walk struct {
	// next is the slot at which the walk resumes.
	next uint32
	// skip is the step of the permutation and skip2 is 2*skip mod m: a
	// probe moves by addition, and the four probes next, next+skip,
	// next+skip2 and next+skip+skip2 take three additions, two of them
	// independent of the others.
	skip, skip2 uint32
	id          uint32
}

// newFiller returns a filler for table with every slot empty and each
// backend of active at the start of its permutation. Its scratch space
// comes from sc.
func newFiller(table []uint32, active []Backend, sc *scratch) *filler {
	m := uint32(len(table))
	f := &sc.filler
	*f = filler{
		table: table,
		m:     m,
		walks: grow(f.walks, len(active)),
		used:  f.used,
		inv:   grow(f.inv, len(active)),
		empty: f.empty[:0],
		left:  m,
	}
	if f.used == nil {
		f.used = new([usedLen]byte)
	} else {
		clear(f.used[:m])
	}
	clear(f.inv)
	// h % m and h % (m-1) by Barrett reduction instead of two 64-bit
	// divisions: with them, newFiller took 0.30 ms for 10 000 backends,
	// 0.18 ms without (thread CPU time, median of 30).
	mu, _ := bits.Div64(1, 0, uint64(m))
	mu1, _ := bits.Div64(1, 0, uint64(m-1))
	for i, b := range active {
		h1, h2 := hashes(b.Name)
		w := &f.walks[i]
		w.next = uint32(barrett(h1, uint64(m), mu))
		w.skip = uint32(barrett(h2, uint64(m-1), mu1)) + 1
		w.skip2 = step(w.skip, w.skip, m)
		w.id = b.ID
	}
	// Probing costs about m/left probes per turn and the tail left
	// operations: they meet near sqrt(m). Measured at m = 65537, 128 and
	// 256 are best, 512 is 15% slower and 16 10% slower.
	f.tail = 1 << (bits.Len32(m) / 2)
	f.sparse = m / 8 * 5
	f.mu = mu
	if f.left <= f.tail {
		f.startTail()
	}
	return f
}

// claim gives each backend of members its turn, in order, and reports
// whether the table is full.
func (f *filler) claim(members []uint32) bool {
	for len(members) > 0 {
		switch {
		case f.inTail:
			return f.claimAllTail(members)
		case f.left <= f.tail:
			f.startTail() // the table fills in the tail, as tail > 0
		case f.left > f.sparse:
			members = members[f.claimSparse(members):]
			if len(members) > 0 && f.left > f.sparse {
				// The first two slots of this walk are claimed.
				members = members[f.claimProbing(members[:1]):]
			}
		default:
			members = members[f.claimProbing(members):]
		}
	}
	return f.left == 0
}

// claimSparse gives backends of members their turns, in order, while more
// than sparse slots are empty and the first or second slot of each walk is
// empty, and returns how many turns it gave.
func (f *filler) claimSparse(members []uint32) int {
	m, used, table, walks := f.m, f.used, f.table, f.walks
	sparse := min(len(members), int(f.left-f.sparse))
	for k, i := range members[:sparse] {
		w := &walks[i]
		c := w.next
		c1 := step(c, w.skip, m)
		u0, u1 := used[c%usedLen], used[c1%usedLen]
		if u0&u1 != 0 {
			f.left -= uint32(k)
			return k
		}
		if u0 != 0 { // a conditional move, not a branch
			c = c1
		}
		used[c%usedLen] = 1
		table[c] = w.id
		w.next = step(c, w.skip, m)
	}
	f.left -= uint32(sparse)
	return sparse
}

// claimProbing gives backends of members their turns, in order, while more
// than tail slots are empty, and returns how many turns it gave.
//
// A turn tests four slots of the walk at once: they are computed from the
// walk's position independently, so the probes overlap instead of each
// waiting for the previous one, and while the table is less than about
// three quarters full the first four mostly hold an empty slot, so the
// branch is predictable.
func (f *filler) claimProbing(members []uint32) int {
	m, used, table, walks := f.m, f.used, f.table, f.walks
	probing := min(len(members), int(f.left-f.tail))
	// The walk of the next turn is loaded one turn ahead: with weights the
	// turns visit the walks out of order, and a load from the L2 cache
	// would start every turn's chain of dependent operations. If the next
	// turn is the same backend's, its copy starts where this turn started:
	// behind its true start on the walk, with only claimed slots between
	// (the ones this turn skipped and the one it claims), so the probes
	// find the same empty slot.
	ahead := walks[members[0]]
	for k, i := range members[:probing] {
		w := ahead
		if k+1 < len(members) {
			ahead = walks[members[k+1]]
		}
		c, s, s2 := w.next, w.skip, w.skip2
		// The next four start at c + 4s: one addition from c, so that the
		// loop carries one step from probe to probe instead of two.
		s4 := step(s2, s2, m)
		for {
			c1 := step(c, s, m)
			c2 := step(c, s2, m)
			c3 := step(c1, s2, m)
			full := uint32(used[c%usedLen]) | uint32(used[c1%usedLen])<<1 |
				uint32(used[c2%usedLen])<<2 | uint32(used[c3%usedLen])<<3
			if full != 0xf {
				probes := [4]uint32{c, c1, c2, c3}
				c = probes[bits.TrailingZeros32(^full)%4]
				break
			}
			c = step(c, s4, m)
		}
		used[c%usedLen] = 1
		table[c] = w.id
		walks[i].next = step(c, s, m)
	}
	f.left -= uint32(probing)
	return probing
}

// claimAllTail gives each backend of members its turn in the tail, in
// order, and reports whether the table is full.
func (f *filler) claimAllTail(members []uint32) bool {
	for _, i := range members {
		if f.claimTail(i) {
			return true
		}
	}
	return false
}

// step returns (c + s) mod m for c, s < m < 2^31. It has no branch: whether
// a walk wraps around is as random as its step, so a branch would be
// mispredicted on about every other probe.
func step(c, s, m uint32) uint32 {
	t := c + s - m
	return t + m&uint32(int32(t)>>31)
}

// startTail lists the empty slots.
func (f *filler) startTail() {
	f.inTail = true
	for c, u := range f.used[:f.m] {
		if u == 0 {
			f.empty = append(f.empty, uint32(c))
		}
	}
}

// claimTail gives backend i its turn in the tail and reports whether the
// table is full. From slot c, the walk reaches slot e after
// (e - c) * skip^-1 mod m steps.
func (f *filler) claimTail(i uint32) bool {
	m := f.m
	w := &f.walks[i]
	if f.inv[i] == 0 {
		f.inv[i] = f.inverse(w.skip)
	}
	c, inv := w.next, uint64(f.inv[i])
	best, bestSteps := 0, uint64(math.MaxUint64)
	for k, e := range f.empty {
		// e+m-c < 2m and inv < m, so the product is below 2^35.
		if d := f.mod(uint64(e+m-c) * inv); d < bestSteps {
			best, bestSteps = k, d
		}
	}
	e := f.empty[best]
	last := len(f.empty) - 1
	f.empty[best] = f.empty[last]
	f.empty = f.empty[:last]
	f.used[e%usedLen] = 1
	f.table[e] = w.id
	w.next = step(e, w.skip, m)
	f.left--
	return f.left == 0
}

// mod returns x mod m.
func (f *filler) mod(x uint64) uint64 { return barrett(x, uint64(f.m), f.mu) }

// barrett returns x mod d for d >= 2, where mu = floor(2^64 / d), by
// Barrett reduction: the estimated quotient floor(x*mu / 2^64) is at most
// one too small, because x*(2^64/d - mu) < x <= 2^64, so one subtraction
// corrects the remainder.
func barrett(x, d, mu uint64) uint64 {
	q, _ := bits.Mul64(x, mu)
	r := x - q*d
	if r >= d {
		r -= d
	}
	return r
}

// inverse returns the inverse of s modulo the prime m, for 0 < s < m, by
// the extended Euclidean algorithm: about a dozen 32-bit divisions, where
// s^(m-2) mod m took 34 dependent modular products.
func (f *filler) inverse(s uint32) uint32 {
	// Invariant: r0 = t0*s and r1 = t1*s modulo m.
	r0, r1 := int64(f.m), int64(s)
	t0, t1 := int64(0), int64(1)
	for r1 != 0 {
		q := r0 / r1
		r0, r1 = r1, r0-q*r1
		t0, t1 = t1, t0-q*t1
	}
	// r0 = gcd(m, s) = 1, so t0*s = 1 modulo m; |t0| < m.
	if t0 < 0 {
		t0 += int64(f.m)
	}
	return uint32(t0)
}

// schedule orders the turns. Turn t (counting from 1) of a backend of weight
// w happens at virtual time t/w; turns are taken by increasing time, and
// turns at the same time by increasing backend index (which is Name order).
//
// Backends of equal weight form a class: they share their times, so a class
// takes its turns as a block, its members in index order. Classes are
// ordered on a calendar: the time axis up to a bound on the time of the last
// turn is cut into buckets, each class waits in the bucket of its next turn,
// and the buckets are emptied in order. Within a bucket, which holds a few
// turns on average, the turns are sorted by their exact time; classes that
// share a time have their members merged in index order. Ordering costs
// O(1) per turn on average and O(m + n) in all, instead of a heap's
// O(log k) per turn over k classes.
type schedule struct {
	byWeight    []uint32 // backend indices by weight, then index
	byWeightTmp []uint32 // scratch space of sortByWeight
	classes     []class
	shift       uint     // a turn with key k is in bucket k >> shift
	head        []int32  // per bucket, the first waiting class, or -1
	turns       []turn   // the turns of the current bucket
	merged      []uint32 // the members of classes that share a time
	// shared holds the merged members of the classes that share a time,
	// by the denominator q of the time in lowest terms: the classes with a
	// turn at p/q are exactly those whose weight q divides, so the merge
	// of q is the same at every such time and is done once. Every list
	// kept is claimed at least once (at time 1/q), so they hold at most
	// n more indices than the table has slots.
	shared map[uint64][]uint32
	store  []uint32 // backs the lists of shared
	mark   []uint64 // a bitmap over backend indices for merge, zero between merges
}

// class is the backends byWeight[lo:hi], all of weight w, and their next
// turn t.
//
// A turn's bucket is found from its key, floor(t * 2^keyBits / w), which
// grows with t/w; key and the remainder rem of that division are advanced
// by adding q and r, the quotient and remainder of 2^keyBits / w, so no
// division is needed per turn. Keys only place turns in buckets; the order
// within a bucket is decided by the exact times.
type class struct {
	w, t, key, rem, q, r uint64
	lo, hi               uint32
	link                 int32 // the next class waiting in the same bucket, or -1
}

// turn is turn t of classes[c].
type turn struct{ c, t uint32 }

// newSchedule returns the schedule of active for a table of m slots.
func newSchedule(active []Backend, m uint32, sc *scratch) *schedule {
	n := uint64(len(active))
	s := &sc.schedule
	s.byWeight, s.byWeightTmp = sortByWeight(active, s.byWeight, s.byWeightTmp)
	s.classes = s.classes[:0]
	s.turns = s.turns[:0]
	s.mark = grow(s.mark, int(n/64+1))
	clear(s.mark)
	clear(s.shared)
	s.store = s.store[:0]
	var total, classTotal uint64 // the sum of the weights of all backends, and of the classes
	for lo := 0; lo < len(s.byWeight); {
		w := active[s.byWeight[lo]].Weight
		hi := lo + 1
		for hi < len(s.byWeight) && active[s.byWeight[hi]].Weight == w {
			hi++
		}
		s.classes = append(s.classes, class{w: uint64(w), lo: uint32(lo), hi: uint32(hi), link: -1})
		total += uint64(w) * uint64(hi-lo)
		classTotal += uint64(w)
		lo = hi
	}

	// Bound the time of the last turn: by time T, backend i has taken
	// floor(T*w_i) > T*w_i - 1 turns, so by T = (m+n)/total at least m
	// turns have been taken. keyBits leaves keys of times up to T below
	// 2^62.
	mn := uint64(m) + n
	keyBits := 62 - bits.Len64(mn)
	limit := (mn << keyBits) / total // the key of time (m+n)/total
	// About T*classTotal class turns happen by time T; aim for one bucket
	// per class turn. The bucket count only affects speed.
	want := uint64(math.Ceil(float64(mn) * float64(classTotal) / float64(total)))
	want = min(max(want, 1), mn)
	s.shift = uint(bits.Len64(limit / want))
	s.head = grow(s.head, int(limit>>s.shift+1))
	for b := range s.head {
		s.head[b] = -1
	}

	for c := range s.classes {
		cl := &s.classes[c]
		cl.q, cl.r = (1<<keyBits)/cl.w, (1<<keyBits)%cl.w
		cl.t, cl.key, cl.rem = 1, cl.q, cl.r
		s.wait(int32(c))
	}
	return s
}

// wait puts class c into the bucket of its next turn, unless that turn is
// after the last bucket and so never needed.
func (s *schedule) wait(c int32) {
	cl := &s.classes[c]
	if b := cl.key >> s.shift; b < uint64(len(s.head)) {
		cl.link = s.head[b]
		s.head[b] = c
	}
}

// run gives every turn in order to claim, one time at a time, until claim
// reports that the table is full, and reports whether it did.

func (s *schedule) run(claim func(members []uint32) bool) bool {
	for b := range s.head {
		s.turns = s.turns[:0]
		for c := s.head[b]; c >= 0; {
			cl := &s.classes[c]
			next := cl.link
			for cl.key>>s.shift == uint64(b) {
				s.turns = append(s.turns, turn{c: uint32(c), t: uint32(cl.t)})
				cl.t++
				cl.key += cl.q
				cl.rem += cl.r
				if cl.rem >= cl.w {
					cl.rem -= cl.w
					cl.key++
				}
			}
			s.wait(c)
			c = next
		}
		s.sortTurns()
		for i := 0; i < len(s.turns); {
			j := i + 1
			for j < len(s.turns) && s.cmpTurns(s.turns[i], s.turns[j]) == 0 {
				j++
			}
			members := s.members(s.turns[i].c)
			if j > i+1 {
				members = s.sharedMembers(s.turns[i:j])
			}
			if claim(members) {
				return true
			}
			i = j
		}
	}
	return false
}

// sharedMembers returns the members of the classes of ts, which share a
// time, in index order.
func (s *schedule) sharedMembers(ts []turn) []uint32 {
	w := s.classes[ts[0].c].w
	q := w / gcd(uint64(ts[0].t), w)
	if members, ok := s.shared[q]; ok {
		return members
	}
	merged := s.merge(ts)
	if s.shared == nil {
		s.shared = make(map[uint64][]uint32)
	}
	start := len(s.store)
	s.store = append(s.store, merged...)
	members := s.store[start:len(s.store):len(s.store)]
	s.shared[q] = members
	return members
}

// gcd returns the greatest common divisor of a and b, which must not both
// be 0, by the binary algorithm.
func gcd(a, b uint64) uint64 {
	if a == 0 {
		return b
	}
	if b == 0 {
		return a
	}
	shift := bits.TrailingZeros64(a | b)
	a >>= bits.TrailingZeros64(a)
	for b != 0 {
		b >>= bits.TrailingZeros64(b)
		if a > b {
			a, b = b, a
		}
		b -= a
	}
	return a << shift
}

// merge returns the members of the classes of ts, in index order. More than
// a few members are merged through a bitmap over the indices, in time linear
// in their count and their index range; a few by sorting.
func (s *schedule) merge(ts []turn) []uint32 {
	s.merged = s.merged[:0]
	for _, t := range ts {
		s.merged = append(s.merged, s.members(t.c)...)
	}
	if len(s.merged) < 16 {
		slices.Sort(s.merged)
		return s.merged
	}
	lo, hi := s.merged[0], s.merged[0]
	for _, i := range s.merged {
		s.mark[i/64] |= 1 << (i % 64)
		lo, hi = min(lo, i), max(hi, i)
	}
	s.merged = s.merged[:0]
	for w := lo / 64; w <= hi/64; w++ {
		for x := s.mark[w]; x != 0; x &= x - 1 {
			s.merged = append(s.merged, w*64+uint32(bits.TrailingZeros64(x)))
		}
		s.mark[w] = 0
	}
	return s.merged
}

// members returns the backend indices of class c, in index order.
func (s *schedule) members(c uint32) []uint32 {
	return s.byWeight[s.classes[c].lo:s.classes[c].hi]
}

// cmpTurns compares the times of two turns exactly, t/w by
// cross-multiplication. The last bucket ends before three times the bound
// on the last turn's time, so t < 3(m+n)+1 < 2^32 and the products, below
// 2^32 times that, fit in 64 bits for any n a slice can hold.
func (s *schedule) cmpTurns(a, b turn) int {
	l := uint64(a.t) * s.classes[b.c].w
	r := uint64(b.t) * s.classes[a.c].w
	switch {
	case l < r:
		return -1
	case l > r:
		return 1
	}
	return 0
}

// sortTurns sorts the turns of the current bucket by time. Buckets hold a
// few turns on average, for which insertion sort is fastest.
func (s *schedule) sortTurns() {
	ts := s.turns
	if len(ts) > 12 {
		slices.SortFunc(ts, s.cmpTurns)
		return
	}
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && s.cmpTurns(ts[j], ts[j-1]) < 0; j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

// sortByWeight returns the indices of active ordered by weight, then by
// index: a stable radix sort on the bytes of the weights that differ. It
// returns the sorted indices and scratch space, in idx and tmp if they
// are large enough.
func sortByWeight(active []Backend, idx, tmp []uint32) (sorted, scratch []uint32) {
	idx, tmp = grow(idx, len(active)), grow(tmp, len(active))
	for i := range idx {
		idx[i] = uint32(i)
	}
	var or, and uint32 = 0, math.MaxUint32
	for _, b := range active {
		or |= b.Weight
		and &= b.Weight
	}
	for shift := 0; shift < 32; shift += 8 {
		if (or^and)>>shift&0xff == 0 {
			continue // this byte is the same in every weight
		}
		var count [257]int
		for _, i := range idx {
			count[active[i].Weight>>shift&0xff+1]++
		}
		for d := 1; d < len(count); d++ {
			count[d] += count[d-1]
		}
		for _, i := range idx {
			d := active[i].Weight >> shift & 0xff
			tmp[count[d]] = i
			count[d]++
		}
		idx, tmp = tmp, idx
	}
	return idx, tmp
}

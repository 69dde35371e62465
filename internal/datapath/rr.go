package datapath

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// Round robin (VIPConfig.RoundRobin, docs/schedulers.md). A round-robin
// VIP has, beside its Maglev ring, a weighted sequence of backend ids: the
// order in which nginx's smooth weighted round robin hands out new flows,
// one cycle of it. It is another extent of the ring arena, written and
// published with the VIP's meta (rr_offset, rr_len) exactly as the ring
// is. The fast path keeps a cursor per CPU and VIP (rr_cursors) and gives a
// new flow (a TCP SYN, a UDP packet without an entry) the backend at its
// CPU's cursor; any other packet without an entry takes the ring.
//
// Each CPU walks the whole sequence, so after every full cycle each CPU has
// given each backend exactly its weight's share; the CPUs start at
// different places, so that they do not hand out the same backend at the
// same moment.

// RRMaxLen bounds a round-robin sequence: sum(weights)/gcd(weights) slots,
// 256 KiB of the arena at most, like a ring of the default size. Past it,
// the weights are scaled down in proportion (each live backend keeps at
// least one slot), so shares are exact to within a slot in RRMaxLen: at
// most RRMaxLen plus the backends' count slots.
const RRMaxLen = 1 << 16

// rrSequence returns the VIP's round-robin sequence: the backends with a
// weight above 0 (those the ring gives slots: drained and, as reconcile
// passes them, down backends have none; when all are down and the VIP
// fails open, reconcile passes their weights), in the order of smooth
// weighted round robin over their weights divided by their gcd. Backends
// are taken in address order, so every node builds the same sequence of
// addresses. It is empty when no backend has a weight.
func rrSequence(e *vipEntry) []uint32 {
	type member struct {
		addr netip.Addr
		id   uint32
		w    uint64
	}
	var ms []member
	for _, b := range e.backends {
		if b.Weight > 0 {
			ms = append(ms, member{b.Addr, b.id, uint64(b.Weight)})
		}
	}
	if len(ms) == 0 {
		return nil
	}
	slices.SortFunc(ms, func(a, b member) int { return a.addr.Compare(b.addr) })
	total := func() (sum uint64) {
		for _, m := range ms {
			sum += m.w
		}
		return sum
	}
	g := ms[0].w
	for _, m := range ms[1:] {
		g = gcd(g, m.w)
	}
	for i := range ms {
		ms[i].w /= g
	}
	if sum := total(); sum > RRMaxLen {
		g = 0
		for i := range ms {
			ms[i].w = max(1, ms[i].w*RRMaxLen/sum)
			g = gcd(g, ms[i].w)
		}
		for i := range ms {
			ms[i].w /= g
		}
	}
	sum := total()
	// Smooth weighted round robin (nginx): each step every backend's
	// current value grows by its weight, the largest (the first of equals)
	// is chosen and loses the total. After sum steps every current value
	// is 0 again and each backend was chosen exactly its weight's times,
	// spread out rather than in runs.
	seq := make([]uint32, sum)
	cur := make([]int64, len(ms))
	for s := range seq {
		best := 0
		for i, m := range ms {
			cur[i] += int64(m.w)
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= int64(sum)
		seq[s] = ms[best].id
	}
	return seq
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// fillRR writes a prepared round-robin VIP's sequence into a free extent
// of the arena if it changed (p.newRR). A VIP that becomes round robin (new,
// or of another scheduler before) gets its cursors: only the fast path
// writes them after that, so a reused VIP index's are rewritten here, not
// when the index is freed. A least-conn or least-time VIP counts its
// decisions in its cursors' picks too: one that takes its scheduler starts
// them at 0.
func (d *Datapath) fillRR(p *pendingVIP) error {
	e, old := p.e, p.old
	if !e.cfg.RoundRobin {
		if e.cfg.countsDecisions() && (old == nil || old.cfg.scheduler() != e.cfg.scheduler()) {
			return d.seedRRCursors(e.index, 0)
		}
		return nil
	}
	seq := rrSequence(e)
	e.rrSum = tableSum(seq)
	switch {
	case old != nil && old.cfg.RoundRobin && old.rrSum == e.rrSum && old.rr.size == uint32(len(seq)):
		e.rr = old.rr
	case len(seq) > 0:
		var err error
		if e.rr, err = d.arena.alloc(uint32(len(seq))); err != nil {
			return fmt.Errorf("round-robin sequence: %w", err)
		}
		p.newRR = true
		if err := d.arena.write(e.rr, seq); err != nil {
			return fmt.Errorf("round-robin sequence: %w", err)
		}
	}
	if old != nil && old.cfg.RoundRobin {
		return nil // the cursors go on where they are
	}
	return d.seedRRCursors(e.index, uint32(len(seq)))
}

// seedRRCursors starts the cursors of VIP index: CPU c's at c/CPUs of a
// sequence of n slots, so that the CPUs do not hand out the same backend
// at the same moment; the decision counts at 0.
func (d *Datapath) seedRRCursors(index uint16, n uint32) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	vals := make([]balancerRrCursor, cpus)
	for c := range vals {
		vals[c].Pos = uint32(uint64(c) * uint64(n) / uint64(cpus))
	}
	if err := d.objs.RrCursors.Put(uint32(index), vals); err != nil {
		return fmt.Errorf("write round-robin cursors: %w", err)
	}
	return nil
}

// RRShare is one backend's part of a round-robin sequence.
type RRShare struct {
	Backend netip.Addr
	Slots   uint32
}

// rrShares returns the backends of the VIP's sequence and their slots, in
// address order; n is the sequence's length.
func rrShares(e *vipEntry) (shares []RRShare, n uint32) {
	count := make(map[uint32]uint32)
	for _, id := range rrSequence(e) {
		count[id]++
		n++
	}
	for id, k := range count {
		shares = append(shares, RRShare{Backend: e.byID[id].Addr, Slots: k})
	}
	slices.SortFunc(shares, func(a, b RRShare) int { return a.Backend.Compare(b.Backend) })
	return shares, n
}

// sumRRPicks reads entries [0, n) of the rr_cursors map and sums each
// index's decision count over the CPUs.
func sumRRPicks(m *ebpf.Map, n uint32) ([]uint64, error) {
	return sumPerCPU(m, n, func(sum *uint64, v *balancerRrCursor) { *sum += v.Picks })
}

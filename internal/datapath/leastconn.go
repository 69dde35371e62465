package datapath

import (
	"math/bits"
	"net/netip"
	"slices"

	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// LeastConnExactMax is bpf/sched.h's LC_EXACT_MAX: a least-conn VIP with at
// most this many backends of weight above 0 compares them all for a new
// flow; one with more takes the better of two slots of its weighted ring.
var LeastConnExactMax = len(balancerLcPool{}.Be) / 2

// lcRehash is LC_REHASH: the second choice's hash is the flow hash rotated
// by 16 bits times this.
const lcRehash = 0x9e3779b1

// lcMembers returns the VIP's backends a least-conn pool holds: those of
// weight above 0 (the ring's), by address, the order Go writes them in and
// the fast path scans them in.
func lcMembers(e *vipEntry) []*backendEntry {
	out := make([]*backendEntry, 0, len(e.backends))
	for _, b := range e.backends {
		if b.Weight > 0 {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b *backendEntry) int { return a.Addr.Compare(b.Addr) })
	return out
}

// lcPool is the VIP's lc_pools value: its members if they fit, twice over
// (a scan from any member reads on without wrapping), else n = 0 (two
// choices).
func lcPool(e *vipEntry) balancerLcPool {
	var p balancerLcPool
	m := lcMembers(e)
	if len(m) > LeastConnExactMax {
		return p
	}
	p.N = uint32(len(m))
	for i, b := range m {
		p.Be[i].Id, p.Be[i].Weight = b.id, b.Weight
		p.Be[len(m)+i] = p.Be[i]
	}
	return p
}

// writeLCPool writes a least-conn VIP's pool, before the meta that turns
// the scheduler on or changes the ring (commit). Other VIPs' slots are
// not read.
func (d *Datapath) writeLCPool(e *vipEntry) error {
	if !e.cfg.LeastConn && !e.cfg.LeastTime {
		return nil
	}
	return d.objs.LcPools.Put(uint32(e.index), lcPool(e))
}

// LeastConnChoice is how least-conn or least-time chose a new flow's
// backend, from the counts and costs as they were when Predict read them
// (a snapshot: the fast path decides with those of the moment the packet
// arrives).
type LeastConnChoice struct {
	// Exact: the whole pool was compared; else the ring's slot for the
	// flow and a second, rehashed slot (SecondSlot).
	Exact      bool
	SecondSlot uint32
	// LeastTime: the VIP is least-time, so each candidate's RT is part of
	// its cost and a candidate must beat the best so far by more than
	// LeastTimeMargin.
	LeastTime bool
	// Candidates are the backends compared, in the order the fast path
	// compares them: the first is the best until one beats it.
	Candidates []LeastConnCandidate
}

// LeastConnCandidate is one backend least-conn or least-time compared.
type LeastConnCandidate struct {
	Backend netip.Addr
	// Active is the load compared: established entries and those in
	// state syn (connections being opened).
	Active uint64
	Weight uint32
	// RT is least-time's response time of the backend in µs, as
	// backend_cost held it; 0 when it is not measured (then it and the
	// best it is compared with are compared on load alone).
	RT uint32
	// Beat: its cost was lower than the best so far's (least-time: by
	// more than the margin), so it became the best. WithinMargin
	// (least-time): lower, but not by more than the margin, so the best
	// so far stayed.
	Beat, WithinMargin bool
}

// predictLeastConn makes p the least-conn or least-time choice of a new
// flow of VIP e (bpf/sched.h lc_pick), whose ring is table and whose ring
// pick p holds.
func (d *Datapath) predictLeastConn(e *vipEntry, table []uint32, p *Prediction) {
	if !p.RingBackend.IsValid() {
		return // no backend: dropped before least-conn
	}
	lt := e.cfg.LeastTime
	cand := func(b *backendEntry) LeastConnCandidate {
		c := LeastConnCandidate{Backend: b.Addr, Active: d.counts.read(b.id).load(), Weight: b.Weight}
		if lt {
			c.RT = d.costOf(b.id)
		}
		return c
	}
	ch := &LeastConnChoice{LeastTime: lt}
	m := lcMembers(e)
	if len(m) <= LeastConnExactMax {
		ch.Exact = true
		start := flowhash.Slot(p.Hash, uint32(len(m)))
		for i := range m {
			ch.Candidates = append(ch.Candidates, cand(m[(int(start)+i)%len(m)]))
		}
		best := &ch.Candidates[0]
		for i := 1; i < len(ch.Candidates); i++ {
			c := &ch.Candidates[i]
			c.Beat, c.WithinMargin = c.beats(best, lt)
			if c.Beat {
				best = c
			}
		}
		p.Backend, p.LeastConn = best.Backend, ch
		return
	}
	ch.SecondSlot = flowhash.Slot(bits.RotateLeft32(p.Hash, 16)*lcRehash, uint32(len(table)))
	first := e.byID[table[p.Slot]]
	ch.Candidates = []LeastConnCandidate{cand(first)}
	p.LeastConn = ch
	id2 := table[ch.SecondSlot]
	second := e.byID[id2]
	if id2 == maglev.Unassigned || second == nil || second == first {
		return
	}
	c := cand(second)
	if c.Weight > 0 {
		c.Beat, c.WithinMargin = c.beats(&ch.Candidates[0], lt)
	}
	ch.Candidates = append(ch.Candidates, c)
	if c.Beat {
		p.Backend = c.Backend
	}
}

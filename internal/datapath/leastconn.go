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
	if !e.cfg.LeastConn {
		return nil
	}
	return d.objs.LcPools.Put(uint32(e.index), lcPool(e))
}

// LeastConnChoice is how least-conn chose a new flow's backend, from the
// counts as they were when Predict read them (a snapshot: the fast path
// decides with the counts of the moment the packet arrives).
type LeastConnChoice struct {
	// Exact: the whole pool was compared; else the ring's slot for the
	// flow and a second, rehashed slot (SecondSlot).
	Exact      bool
	SecondSlot uint32
	// Candidates are the backends compared, in the order the fast path
	// compares them; the first of the lowest (active + 1) / weight wins.
	Candidates []LeastConnCandidate
}

// LeastConnCandidate is one backend least-conn compared.
type LeastConnCandidate struct {
	Backend netip.Addr
	// Active is the load compared: established entries and those in
	// state syn (connections being opened).
	Active uint64
	Weight uint32
}

// lcLess is sched.h's lc_less: (a1 + 1) / w1 < (a2 + 1) / w2.
func lcLess(a1 uint64, w1 uint32, a2 uint64, w2 uint32) bool {
	return (a1+1)*uint64(w2) < (a2+1)*uint64(w1)
}

// predictLeastConn makes p the least-conn choice of a new flow of VIP e
// (bpf/sched.h lc_pick), whose ring is table and whose ring pick p holds.
func (d *Datapath) predictLeastConn(e *vipEntry, table []uint32, p *Prediction) {
	if !p.RingBackend.IsValid() {
		return // no backend: dropped before least-conn
	}
	active := func(id uint32) uint64 { return d.counts.read(id).load() }
	ch := &LeastConnChoice{}
	m := lcMembers(e)
	if len(m) <= LeastConnExactMax {
		ch.Exact = true
		start := flowhash.Slot(p.Hash, uint32(len(m)))
		var best *LeastConnCandidate
		for i := range m {
			b := m[(int(start)+i)%len(m)]
			ch.Candidates = append(ch.Candidates, LeastConnCandidate{Backend: b.Addr, Active: active(b.id), Weight: b.Weight})
		}
		for i := range ch.Candidates {
			c := &ch.Candidates[i]
			if best == nil || lcLess(c.Active, c.Weight, best.Active, best.Weight) {
				best = c
			}
		}
		p.Backend, p.LeastConn = best.Backend, ch
		return
	}
	ch.SecondSlot = flowhash.Slot(bits.RotateLeft32(p.Hash, 16)*lcRehash, uint32(len(table)))
	first := e.byID[table[p.Slot]]
	ch.Candidates = []LeastConnCandidate{{Backend: first.Addr, Active: active(first.id), Weight: first.Weight}}
	p.LeastConn = ch
	id2 := table[ch.SecondSlot]
	second := e.byID[id2]
	if id2 == maglev.Unassigned || second == nil || second == first {
		return
	}
	c := LeastConnCandidate{Backend: second.Addr, Active: active(id2), Weight: second.Weight}
	ch.Candidates = append(ch.Candidates, c)
	if c.Weight > 0 && lcLess(c.Active, c.Weight, ch.Candidates[0].Active, ch.Candidates[0].Weight) {
		p.Backend = c.Backend
	}
}

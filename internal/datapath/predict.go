package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// Flow is a packet's 5-tuple as the fast path sees it.
type Flow struct {
	Src, Dst     netip.Addr
	Sport, Dport uint16
	Proto        Proto
}

// Prediction says where the fast path sends a flow, and why.
type Prediction struct {
	VIP     VIP
	Backend netip.Addr
	// Hash and Slot locate the ring slot the flow hashes to.
	Hash uint32
	Slot uint32
	// RingBackend is the ring's choice; it differs from Backend when a
	// connection entry pins the flow elsewhere.
	RingBackend netip.Addr
	// Conntrack is set when a live connection entry decides the backend.
	Conntrack bool
	// Entry describes the flow's connection entry, if it has one that
	// names a live backend, expired or not.
	Entry *ConnEntry
	// RingSize is the VIP's ring size M.
	RingSize uint32
	// Refused is set when the packet is dropped because its client is
	// outside the source ranges of the VIP that decides (the connection
	// entry's, for an entry that decides; else the flow's): Backend is
	// then the zero address, and the drop is counted as
	// drop_source_range.
	Refused bool
	// LeastConn says how least-conn (or least-time: LeastConn.LeastTime)
	// chose the backend of a new flow (a TCP SYN, or a UDP packet without
	// a live entry) of a least-conn or least-time VIP; nil when the ring
	// or an entry decided.
	LeastConn *LeastConnChoice
	// Pool names the source-prefix pool of the flow's VIP that holds the
	// client ("" for none): its ring decides a new flow, unless PoolDown,
	// when the pool has no live backend and its fallback decides: the
	// VIP's ring, or, with PoolDrop, a drop counted as drop_pool_down
	// (Backend is then the zero address).
	Pool     string
	PoolDown bool
	PoolDrop bool
	// RoundRobin is set when the VIP's round-robin sequence decides: a
	// new flow (a TCP SYN, a UDP packet without a live entry) of a
	// round-robin VIP. Backend is then the zero address: the pick is the
	// next slot of the sequence on the CPU the packet reaches, which
	// depends on what that CPU handed out before. RRShares is what the
	// sequence holds, RRLen its length.
	RoundRobin bool
	RRShares   []RRShare
	RRLen      uint32
	// Scheduler is the VIP's: "maglev", "source-hash", "round-robin",
	// "least-conn" or "least-time".
	Scheduler string
	// NewFlowLimit is the per-CPU new-flow limit (conntrack.new_flow_limit,
	// 0: none), set when the VIP's scheduler decides (RoundRobin or
	// LeastConn): a new flow that finds its CPU over the limit in the
	// current second takes the ring (RingBackend) instead, as it gets no
	// entry (bpf/balancer.c sched_choose). Which CPU receives the packet,
	// and how many new flows that CPU counted this second, explain cannot
	// know.
	NewFlowLimit uint32
}

// ConnEntry is a connection entry as Predict found it.
type ConnEntry struct {
	Backend netip.Addr
	State   ConnState
	// Idle is how long ago the entry last saw a packet (jiffies
	// resolution); Timeout is how long it may stay idle in its state.
	Idle, Timeout time.Duration
	// Expired entries are misses: the packet takes the ring.
	Expired bool
}

// ErrNoVIP is returned by Predict for a flow that matches no VIP.
var ErrNoVIP = errors.New("no vip matches the flow")

// Predict returns the backend a packet of flow reaches, computed the way
// the fast path computes it: the flow's connection entry first (unless the
// packet is a TCP SYN, which always takes the ring), if its backend is live
// with the entry's generation, its VIP tracks connections, and it has not
// been idle past its state's timeout; else the Maglev ring of the flow's
// VIP. A client outside the source ranges of the VIP that decides is
// refused (Prediction.Refused). For a round-robin VIP, a new flow takes its
// sequence instead of the ring (Prediction.RoundRobin), and for a
// least-conn VIP least-conn's choice (Prediction.LeastConn), but for a
// retransmitted SYN, which keeps its entry's backend while the entry is in
// state syn.
func (d *Datapath) Predict(f Flow, syn bool) (p Prediction, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.vips[VIP{Addr: f.Dst, Port: f.Dport, Proto: f.Proto}]
	if e == nil {
		e = d.vips[VIP{Addr: f.Dst, Port: 0, Proto: f.Proto}]
	}
	if e == nil {
		return Prediction{}, fmt.Errorf("%s:%d -> %s:%d/%s: %w", f.Src, f.Sport, f.Dst, f.Dport, f.Proto, ErrNoVIP)
	}
	table, err := d.ringTable(e)
	if err != nil {
		return Prediction{}, err
	}
	p = Prediction{VIP: e.vip, RingSize: uint32(len(table)), Scheduler: e.cfg.scheduler()}
	if pe := poolOf(e, f.Src); pe != nil {
		p.Pool, p.PoolDown = pe.name, pe.flags != 0
		p.PoolDrop = pe.flags&uint8(balancerFulcrumPoolFlagsPOOL_F_DROP) != 0
		if !p.PoolDown {
			if table, err = d.poolTable(e, pe); err != nil {
				return Prediction{}, err
			}
		}
	}
	if e.cfg.SourceHash {
		p.Hash = flowhash.Source(f.Src, uint8(f.Proto))
	} else {
		p.Hash = flowhash.Flow(f.Src, f.Dst, f.Sport, f.Dport, uint8(f.Proto))
	}
	p.Slot = flowhash.Slot(p.Hash, uint32(len(table)))
	if id := table[p.Slot]; id != maglev.Unassigned && !p.PoolDrop {
		p.RingBackend = e.byID[id].Addr
	}
	p.Backend = p.RingBackend
	// The VIP whose source ranges apply: the flow's, unless a live entry
	// decides (the fast path then knows only the entry's VIP).
	decider := e
	defer func() {
		if !decider.cfg.SourceRanges.Allows(f.Src) {
			p.Refused, p.Backend = true, netip.Addr{}
		}
	}()
	// Both run before the check above (defers run last first). A TCP
	// packet without SYN that the table misses keeps the ring's choice.
	newFlow := syn || f.Proto == UDP
	rr := e.cfg.RoundRobin && newFlow
	lc := (e.cfg.LeastConn || e.cfg.LeastTime) && newFlow
	defer func() {
		if rr && !p.Conntrack {
			p.RoundRobin, p.Backend = true, netip.Addr{}
			p.RRShares, p.RRLen = rrShares(e)
			p.NewFlowLimit = d.newFlowLimit
		}
	}()
	defer func() {
		if err == nil && lc && !p.Conntrack {
			d.predictLeastConn(e, table, &p)
			if p.LeastConn != nil {
				p.NewFlowLimit = d.newFlowLimit
			}
		}
	}()
	if syn && !rr && !lc {
		return p, nil
	}
	ct, err := d.lookupConntrack(f)
	if err != nil {
		return p, err
	}
	if ct == nil || (syn && (ConnState(ct.State) != ConnSYN || !e.byIDHas(ct.Backend))) {
		return p, nil
	}
	// The entry's backend is found by id, whatever VIP it serves: the fast
	// path reads the entry before it knows the packet's VIP (an entry made
	// by an every-port VIP keeps its flow when a VIP for the exact port
	// appears).
	owner, b := d.backendByID(ct.Backend)
	if b == nil || b.gen != ct.BackendGen || owner.cfg.NoConntrack {
		return p, nil // stale: the ring decides
	}
	clk, err := d.clock()
	if err != nil {
		return p, err
	}
	state := ConnState(ct.State)
	timeout := owner.cfg.Timeouts.of(owner.vip.Proto, state)
	p.Entry = &ConnEntry{Backend: b.Addr, State: state, Idle: clk.idle(ct.LastSeen),
		Timeout: timeout, Expired: clk.expired(ct, timeout)}
	if !p.Entry.Expired {
		p.Backend, p.Conntrack = b.Addr, true
		decider = owner
	}
	return p, nil
}

// backendByID returns the live backend with id and its VIP, or nils.
func (d *Datapath) backendByID(id uint32) (*vipEntry, *backendEntry) {
	for _, e := range d.vips {
		if b := e.byID[id]; b != nil {
			return e, b
		}
	}
	return nil, nil
}

// ringTable returns the VIP's ring as written, rebuilt (the datapath keeps
// only a digest of each ring); the last one is cached, since callers such
// as explain and the fuzz oracle ask about one VIP many times in a row.
func (d *Datapath) ringTable(e *vipEntry) ([]uint32, error) {
	if d.lastRing.e == e {
		return d.lastRing.table, nil
	}
	table, err := buildTable(e)
	if err != nil {
		return nil, fmt.Errorf("rebuild ring of vip %s: %w", e.vip, err)
	}
	if tableSum(table) != e.tableSum {
		// Maglev is deterministic, so this is a bug, not bad input.
		return nil, fmt.Errorf("vip %s: the rebuilt ring differs from the one written", e.vip)
	}
	d.lastRing.e, d.lastRing.table = e, table
	return table, nil
}

// poolTable returns a pool's ring as written: rebuilt, or, for a pool
// adopted from the maps (whose backends are not known), read.
func (d *Datapath) poolTable(e *vipEntry, pe *poolEntry) ([]uint32, error) {
	if e.poolsAdopted {
		return d.arena.read(pe.ring)
	}
	members, _ := poolMembers(e, pe)
	table, err := buildPoolTable(e, members)
	if err != nil {
		return nil, fmt.Errorf("rebuild ring of pool %s of vip %s: %w", pe.name, e.vip, err)
	}
	if tableSum(table) != pe.sum {
		// Maglev is deterministic, so this is a bug, not bad input.
		return nil, fmt.Errorf("vip %s: the rebuilt ring of pool %s differs from the one written", e.vip, pe.name)
	}
	return table, nil
}

// byIDHas reports whether id is one of the VIP's backends.
func (e *vipEntry) byIDHas(id uint32) bool {
	_, ok := e.byID[id]
	return ok
}

// countsDecisions reports whether the VIP's scheduler counts its
// decisions per VIP (in rr_cursors' picks): round-robin, least-conn and
// least-time, the schedulers that decide a new flow themselves.
func (c VIPConfig) countsDecisions() bool {
	return c.RoundRobin || c.LeastConn || c.LeastTime
}

// scheduler names the VIP's scheduler as the configuration does.
func (c VIPConfig) scheduler() string {
	switch {
	case c.RoundRobin:
		return "round-robin"
	case c.LeastConn:
		return "least-conn"
	case c.LeastTime:
		return "least-time"
	case c.SourceHash:
		return "source-hash"
	}
	return "maglev"
}

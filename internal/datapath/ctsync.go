package datapath

// What connection sync (internal/connsync, run by the daemon) needs of the
// connection table: entries resolved from local ids to addresses, so that
// a peer, whose ids differ, can file them (SyncEntries, ConnEvents), and
// the switch that makes the fast path export its entries (SetSync).

import (
	"iter"
	"net/netip"
	"time"
)

// SyncEntry is a connection entry as nodes exchange it: the flow, its VIP
// and its backend by address, and how long it lives without another packet.
type SyncEntry struct {
	Flow    Flow
	VIP     VIP
	Backend netip.Addr
	State   ConnState
	// Lifetime is the VIP's idle timeout for State less the entry's idle
	// time: when the entry expires unless a packet refreshes it.
	Lifetime time.Duration
	// Idle is how long the entry has seen no packet (SyncEntries only).
	Idle time.Duration
}

// SetSync turns the fast path's export of connection entries on or off:
// on, every new entry and every TCP state change is written to the
// ct_events ring buffer, which ConnEvents reads. Off (the default), a
// packet pays one flag test. It stays as set in pinned maps: a daemon
// restarted without sync turns it off.
func (d *Datapath) SetSync(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.syncOn
	d.syncOn = on
	if err := d.syncGlobals(); err != nil {
		d.syncOn = old
		return err
	}
	return nil
}

// syncFlag is the config flag of SetSync.
const syncFlag = uint32(balancerFulcrumConfigFlagsCONFIG_F_SYNC)

// connBackend is what resolving a backend id needs.
type connBackend struct {
	vip      VIP
	addr     netip.Addr
	gen      uint16
	timeouts ConnTimeouts // the VIP's, normal form
}

// connVIP is what filing an entry of a VIP needs.
type connVIP struct {
	index    uint16
	timeouts ConnTimeouts
	backends map[netip.Addr]idGen
}

type idGen struct {
	id  uint32
	gen uint16
}

// connResolver translates between the table's ids and addresses, as of
// one state of the VIPs (ownerChanges): VIPs without a connection table
// are left out, so their entries resolve to nothing.
type connResolver struct {
	changes uint64
	byID    map[uint32]connBackend
	byIndex map[uint16]VIP
	byVIP   map[VIP]connVIP
}

// resolver returns the resolver of the current VIPs, made again only when
// they changed.
func (d *Datapath) resolver() *connResolver {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r := d.connRes; r != nil && r.changes == d.ownerChanges {
		return r
	}
	r := &connResolver{changes: d.ownerChanges, byID: make(map[uint32]connBackend),
		byIndex: make(map[uint16]VIP, len(d.vips)), byVIP: make(map[VIP]connVIP, len(d.vips))}
	for v, e := range d.vips {
		if e.cfg.NoConntrack {
			continue
		}
		t := e.cfg.Timeouts.Normal(v.Proto)
		cv := connVIP{index: e.index, timeouts: t, backends: make(map[netip.Addr]idGen, len(e.backends))}
		for a, b := range e.backends {
			r.byID[b.id] = connBackend{vip: v, addr: a, gen: b.gen, timeouts: t}
			cv.backends[a] = idGen{b.id, b.gen}
		}
		r.byIndex[e.index] = v
		r.byVIP[v] = cv
	}
	d.connRes = r
	return r
}

// backend returns the backend an entry names, if it is still the one the
// entry was made for.
func (r *connResolver) backend(id uint32, gen uint16) (connBackend, bool) {
	b, ok := r.byID[id]
	return b, ok && b.gen == gen
}

// SyncEntries yields the live entries of the connection table (both
// families): those whose backend and VIP still exist and that have not
// expired, with their remaining lifetime. It runs beside the fast path
// (TableEntries says what a concurrent write may do to the walk).
func (d *Datapath) SyncEntries() iter.Seq2[SyncEntry, error] {
	return func(yield func(SyncEntry, error) bool) {
		clk, err := d.clock()
		if err != nil {
			yield(SyncEntry{}, err)
			return
		}
		r := d.resolver()
		for e, err := range d.TableEntries() {
			if err != nil {
				yield(SyncEntry{}, err)
				return
			}
			b, ok := r.backend(e.Backend, e.BackendGen)
			if !ok {
				continue
			}
			if int32(clk.jiffies-e.LastSeen) < 0 {
				// Seen after the clock was read, during the walk: just
				// now, not 49 days ago (the difference wraps).
				e.LastSeen = clk.jiffies
			}
			v := balancerCtValue{LastSeen: e.LastSeen, State: uint8(e.State)}
			t := b.timeouts.of(b.vip.Proto, e.State)
			if clk.expired(&v, t) {
				continue
			}
			idle := clk.idle(e.LastSeen)
			if !yield(SyncEntry{Flow: e.Flow, VIP: b.vip, Backend: b.addr, State: e.State, Lifetime: t - idle, Idle: idle}, nil) {
				return
			}
		}
	}
}

package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// vipEntry is what the datapath wrote for one VIP.
type vipEntry struct {
	vip      VIP
	cfg      VIPConfig
	index    uint16
	gen      uint16
	backends map[netip.Addr]*backendEntry
	// tableSum is a digest of the ring as written (backend ids), to tell
	// whether a rebuilt ring differs. The ring itself is not kept: at
	// 65537 slots it is 256 KiB a VIP, and Predict rebuilds it on demand.
	tableSum uint64
	byID     map[uint32]*backendEntry
	// ring is the VIP's extent of the ring arena, as its meta names it.
	ring extent
	// pools are the VIP's source-prefix pools as written, and
	// poolPrefixes their prefixes, each with its pool's id (pools.go);
	// poolsAdopted says they were adopted from the maps, by id only.
	pools        []*poolEntry
	poolPrefixes map[netip.Prefix]uint32
	poolsAdopted bool
	// rr is a round-robin VIP's sequence in the arena (empty if no
	// backend has a weight), and rrSum its digest, as tableSum.
	rr    extent
	rrSum uint64
	// slot is the vip_metas slot the VIP's key names (vipslots.go), if
	// hasSlot.
	slot    uint32
	hasSlot bool
}

type backendEntry struct {
	Backend
	id  uint32
	gen uint16
}

// VIPState describes a VIP as the datapath holds it.
type VIPState struct {
	VIP      VIP
	Config   VIPConfig
	Index    uint16
	Backends []Backend
	// Pools are the VIP's source-prefix pools, by name.
	Pools []PoolState
}

// VIPs returns every VIP with its backends, sorted by VIP.
func (d *Datapath) VIPs() []VIPState {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]VIPState, 0, len(d.vips))
	for _, e := range d.vips {
		out = append(out, VIPState{VIP: e.vip, Config: e.cfg, Index: e.index, Backends: e.backendList(), Pools: poolStates(e)})
	}
	slices.SortFunc(out, func(a, b VIPState) int { return a.VIP.Compare(b.VIP) })
	return out
}

// Compare orders VIPs by address, then port, then protocol.
func (a VIP) Compare(b VIP) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	return int(a.Proto) - int(b.Proto)
}

func (e *vipEntry) backendList() []Backend {
	out := make([]Backend, 0, len(e.backends))
	for _, b := range e.backends {
		out = append(out, b.Backend)
	}
	slices.SortFunc(out, func(a, b Backend) int { return a.Addr.Compare(b.Addr) })
	return out
}

// AddVIP adds a VIP that does not exist yet, with its backends.
func (d *Datapath) AddVIP(vip VIP, cfg VIPConfig, backends []Backend) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.vips[vip]; ok {
		return fmt.Errorf("add vip %s: it already exists", vip)
	}
	return d.set(vip, cfg, backends)
}

// SetVIP adds a VIP or replaces its configuration and backend set. Backends
// that stay keep their connection entries; removed ones lose theirs (their
// flows are re-hashed); the new ring is published with one map update.
func (d *Datapath) SetVIP(vip VIP, cfg VIPConfig, backends []Backend) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.set(vip, cfg, backends)
}

// RemoveVIP removes a VIP, its ring and its backends. Its flows stop at once.
func (d *Datapath) RemoveVIP(vip VIP) error {
	return d.RemoveVIPs([]VIP{vip})[0]
}

// RemoveVIPs is RemoveVIP for many VIPs at once, each one's error at its
// index. Their rings are freed a grace period later, in the background.
func (d *Datapath) RemoveVIPs(vips []VIP) []error {
	d.mu.Lock()
	defer d.mu.Unlock()
	errs := make([]error, len(vips))
	var owners []int // the index in vips of each removed VIP
	for i, vip := range vips {
		e, ok := d.vips[vip]
		if !ok {
			errs[i] = fmt.Errorf("remove vip %s: no such vip", vip)
			continue
		}
		if err := d.deleteVIPKey(e); err != nil {
			errs[i] = fmt.Errorf("remove vip %s: %w", vip, err)
			continue
		}
		delete(d.vips, vip)
		d.ownerChanges++
		idx := uint32(e.index)
		es := []error{d.objs.VipState.Put(idx, balancerVipMeta{}), d.removeSourceRanges(e.index, e.cfg.SourceRanges, SourceRanges{}),
			d.dropPools(e, nil)}
		for _, b := range e.backends {
			es = append(es, d.retireBackend(b))
		}
		if err := errors.Join(es...); err != nil {
			errs[i] = fmt.Errorf("remove vip %s: %w", vip, err)
		}
		// No key names the ring any more (vip_state's copy of the meta
		// is never used to read a ring): free after a grace period.
		d.arena.retire(e.ring)
		d.arena.retire(e.rr)
		d.vipIndex.put(idx)
		owners = append(owners, i)
	}
	if err := d.syncGlobals(); err != nil {
		for _, i := range owners {
			errs[i] = errors.Join(errs[i], fmt.Errorf("remove vip %s: %w", vips[i], err))
		}
	}
	return errs
}

// AddBackend adds one backend to a VIP.
func (d *Datapath) AddBackend(vip VIP, b Backend) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.vips[vip]
	if !ok {
		return fmt.Errorf("add backend %s: no vip %s", b.Addr, vip)
	}
	if _, dup := e.backends[b.Addr]; dup {
		return fmt.Errorf("add backend %s to vip %s: it already exists", b.Addr, vip)
	}
	return d.set(vip, e.cfg, append(e.backendList(), b))
}

// RemoveBackend removes a backend from a VIP: only its ring slots move, and
// its established flows are re-hashed.
func (d *Datapath) RemoveBackend(vip VIP, addr netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.vips[vip]
	if !ok {
		return fmt.Errorf("remove backend %s: no vip %s", addr, vip)
	}
	if _, ok := e.backends[addr]; !ok {
		return fmt.Errorf("remove backend %s from vip %s: no such backend", addr, vip)
	}
	list := slices.DeleteFunc(e.backendList(), func(b Backend) bool { return b.Addr == addr })
	return d.set(vip, e.cfg, list)
}

// SetWeight changes a backend's weight. Weight 0 drains it: it gets no new
// flows and keeps its established ones.
func (d *Datapath) SetWeight(vip VIP, addr netip.Addr, weight uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.vips[vip]
	if !ok {
		return fmt.Errorf("set weight of %s: no vip %s", addr, vip)
	}
	if _, ok := e.backends[addr]; !ok {
		return fmt.Errorf("set weight of %s in vip %s: no such backend", addr, vip)
	}
	list := e.backendList()
	for i := range list {
		if list[i].Addr == addr {
			list[i].Weight = weight
		}
	}
	return d.set(vip, e.cfg, list)
}

// validate checks a VIP and its backends against what the maps can take.
func validate(vip VIP, cfg *VIPConfig, backends []Backend) error {
	if !vip.Addr.IsValid() || vip.Addr.IsUnspecified() {
		return fmt.Errorf("vip address %v: want a unicast IPv4 or IPv6 address", vip.Addr)
	}
	if vip.Addr.Is4In6() || vip.Addr.Zone() != "" {
		return fmt.Errorf("vip address %v: want a plain IPv4 or IPv6 address (no mapped form, no zone)", vip.Addr)
	}
	if vip.Proto != TCP && vip.Proto != UDP {
		return fmt.Errorf("vip %s: unknown protocol %d, want tcp or udp", vip, vip.Proto)
	}
	if _, ok := modeNames[cfg.Mode]; !ok {
		return fmt.Errorf("vip %s: unknown mode %s, want one of %v", vip, cfg.Mode, ModeNames())
	}
	if cfg.RingSize == 0 {
		cfg.RingSize = maglev.DefaultSize
	}
	if cfg.RingSize < maglev.MinSize || cfg.RingSize > maglev.MaxSize || !maglev.IsPrime(cfg.RingSize) {
		return fmt.Errorf("vip %s: ring size %d is not a prime between %d and %d", vip, cfg.RingSize, maglev.MinSize, maglev.MaxSize)
	}
	if cfg.RoundRobin && cfg.SourceHash {
		return fmt.Errorf("vip %s: round robin and source hash are two schedulers: choose one", vip)
	}
	if cfg.RoundRobin && cfg.NoConntrack {
		return fmt.Errorf("vip %s: round robin needs the connection table: without an entry a flow's later packets take the ring, most likely to another backend", vip)
	}
	if cfg.ResponseTime && (cfg.NoConntrack || vip.Proto != TCP) {
		return fmt.Errorf("vip %s: passive response times need TCP and the connection table: a flow's first ACK is found through its entry's state", vip)
	}
	if err := cfg.Timeouts.Check(); err != nil {
		return fmt.Errorf("vip %s: connection %w", vip, err)
	}
	cfg.Timeouts = cfg.Timeouts.Normal(vip.Proto)
	if err := cfg.checkLeastScheduler(vip); err != nil {
		return err
	}
	if err := checkSourceRanges(vip, cfg.SourceRanges); err != nil {
		return err
	}
	if err := checkPools(vip, cfg.Pools); err != nil {
		return err
	}
	seen := make(map[netip.Addr]bool, len(backends))
	for i, b := range backends {
		if !b.Addr.IsValid() || b.Addr.IsUnspecified() || b.Addr.Is4In6() || b.Addr.Zone() != "" {
			return fmt.Errorf("vip %s: backend %d: address %v is not a plain unicast address", vip, i, b.Addr)
		}
		if seen[b.Addr] {
			return fmt.Errorf("vip %s: backend %s appears twice", vip, b.Addr)
		}
		seen[b.Addr] = true
		if b.Weight > MaxWeight {
			return fmt.Errorf("vip %s: backend %s: weight %d is over the maximum %d", vip, b.Addr, b.Weight, MaxWeight)
		}
		if cfg.Mode == ModeDSR {
			if b.Addr.Is4() != vip.Addr.Is4() {
				return fmt.Errorf("vip %s: backend %s: dsr mode needs a backend of the vip's family (%s)", vip, b.Addr, addrFamily(vip.Addr))
			}
			if len(b.MAC) != 6 || bytes.Equal(b.MAC, make([]byte, 6)) || b.MAC[0]&1 == 1 {
				return fmt.Errorf("vip %s: backend %s: dsr mode needs the backend's unicast MAC address, got %q", vip, b.Addr, b.MAC)
			}
		}
	}
	return nil
}

// set is SetVIP with d.mu held.
func (d *Datapath) set(vip VIP, cfg VIPConfig, backends []Backend) error {
	return d.setMany([]VIPChange{{VIP: vip, Config: cfg, Backends: backends}})[0]
}

// VIPChange is one VIP for SetVIPs: its new configuration and backends.
type VIPChange struct {
	VIP      VIP
	Config   VIPConfig
	Backends []Backend
}

// SetVIPs is SetVIP for many VIPs at once, with the same guarantees per
// VIP: every new ring is written before any VIP's is published. A VIP that
// cannot be set is left as it was and its error returned, at its index in
// errs; the others are set. Each VIP may appear once.
func (d *Datapath) SetVIPs(changes []VIPChange) (errs []error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.setMany(changes)
}

// setMany is SetVIPs with d.mu held. It validates everything before it
// writes anything, and writes in an order that keeps every intermediate
// state consistent for the fast path: new backends, then the rings, then
// the VIPs (which publishes the rings), then the retirement of removed
// backends and of the old rings. The backends and rings of the changed VIPs
// are written in parallel (see fill).
func (d *Datapath) setMany(changes []VIPChange) (errs []error) {
	errs = make([]error, len(changes))
	seen := make(map[VIP]bool, len(changes))
	var pending []*pendingVIP
	for i, c := range changes {
		if seen[c.VIP] {
			errs[i] = fmt.Errorf("vip %s: appears twice in one change", c.VIP)
			continue
		}
		seen[c.VIP] = true
		p, err := d.prepare(c.VIP, c.Config, c.Backends)
		if err != nil {
			errs[i] = err
			continue
		}
		if p == nil {
			continue // nothing changed
		}
		p.at = i
		pending = append(pending, p)
	}
	d.fillAll(pending)
	for _, p := range pending {
		if p.err != nil {
			p.undo(d)
			errs[p.at] = p.err
			continue
		}
		for _, b := range p.written {
			d.backendGen[b.id] = b.gen
		}
	}
	for _, p := range pending {
		if p.err == nil {
			errs[p.at] = d.commit(p)
		}
	}
	if err := d.syncGlobals(); err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	return errs
}

// pendingVIP is a VIP change: prepared (validated, ids allocated), then
// filled (its backends written and its new ring, if the ring changed,
// written to a free extent but not yet published).
type pendingVIP struct {
	e, old *vipEntry
	// fresh are the backends with newly allocated ids, written those
	// whose entry fill writes (fresh or changed).
	fresh, written []*backendEntry
	newRing        bool // e.ring is a new extent, not old's
	newRR          bool // e.rr is a new extent, not old's
	// poolRings are the new extents of e's pools (pools.go).
	poolRings []extent
	at        int   // the change's index in setMany's argument
	err       error // fill failed
}

// undo frees the ids prepare allocated, after a failed fill, and the new
// ring's extent, which no meta names.
func (p *pendingVIP) undo(d *Datapath) {
	for _, b := range p.fresh {
		d.backendID.put(b.id)
	}
	if p.old == nil {
		d.vipIndex.put(uint32(p.e.index))
	}
	if p.newRing {
		d.arena.release(p.e.ring)
		p.newRing = false
	}
	for _, r := range p.poolRings {
		d.arena.release(r)
	}
	p.poolRings = nil
	if p.newRR {
		d.arena.release(p.e.rr)
		p.newRR = false
	}
}

// prepare validates a VIP change and allocates its VIP index and the ids
// of its new backends; fill writes them. It returns nil, nil if nothing
// changed.
func (d *Datapath) prepare(vip VIP, cfg VIPConfig, backends []Backend) (*pendingVIP, error) {
	if err := validate(vip, &cfg, backends); err != nil {
		return nil, err
	}
	if cfg.Mode == ModeIPIP {
		for _, b := range backends {
			if err := encapCovers(d.encap, b.Addr); err != nil {
				return nil, fmt.Errorf("vip %s: backend %s: %w", vip, b.Addr, err)
			}
		}
	}
	old := d.vips[vip]
	if old == nil && d.vipIndex.available() == 0 {
		return nil, fmt.Errorf("add vip %s: too many vips (the maximum is %d)", vip, d.vipIndex.limit)
	}
	added := 0
	for _, b := range backends {
		if old == nil || old.backends[b.Addr] == nil {
			added++
		}
	}
	if added > d.backendID.available() {
		return nil, fmt.Errorf("vip %s: too many backends: %d new, room for %d (the maximum is %d in all)", vip, added, d.backendID.available(), d.backendID.limit)
	}
	if old != nil && old.cfg == cfg && sameBackends(old.backends, backends) {
		return nil, nil // nothing changed: nothing is written
	}

	e := &vipEntry{vip: vip, cfg: cfg, backends: make(map[netip.Addr]*backendEntry, len(backends)), byID: make(map[uint32]*backendEntry, len(backends))}
	p := &pendingVIP{e: e, old: old}
	if old != nil {
		e.index, e.gen = old.index, old.gen
	} else {
		idx, _ := d.vipIndex.get()
		e.index = uint16(idx)
		e.gen = nextGen(d.vipGen[e.index])
	}
	// New backends get ids; their entries, written by fill, are
	// invisible until the ring names them.
	for _, b := range backends {
		nb := &backendEntry{Backend: Backend{Addr: b.Addr, MAC: slices.Clone(b.MAC), Weight: b.Weight}}
		o := oldBackend(old, b.Addr)
		if o != nil {
			nb.id, nb.gen = o.id, o.gen
		} else {
			id, _ := d.backendID.get()
			nb.id, nb.gen = id, nextGen(d.backendGen[id])
			p.fresh = append(p.fresh, nb)
		}
		if o == nil || !bytes.Equal(o.MAC, nb.MAC) || o.Weight != nb.Weight {
			p.written = append(p.written, nb)
		}
		e.backends[b.Addr] = nb
		e.byID[nb.id] = nb
	}
	preparePools(e, old)
	return p, nil
}

// fill writes what the fast path cannot see yet for a prepared VIP: the
// reset counters of its new index and ids, its backends' entries, and its
// new ring into a free extent of the arena, if the ring changed. It
// touches no Go state of d but p's (the arena has its own lock), so that
// VIPs fill in parallel; sh, if not nil, shares the builds of VIPs of the
// same shape.
func (d *Datapath) fill(p *pendingVIP, sh *shapes) error {
	e, old, vip := p.e, p.old, p.e.vip
	if old == nil {
		if err := zeroCounter(d.objs.VipStats, uint32(e.index)); err != nil {
			return fmt.Errorf("vip %s: reset counters: %w", vip, err)
		}
	}
	// One batched update each, not a syscall per backend: a hundred
	// backends a VIP are two hundred syscalls otherwise.
	if len(p.fresh) > 0 {
		ids := make([]uint32, len(p.fresh))
		for i, b := range p.fresh {
			ids[i] = b.id
		}
		zeros := make([]balancerCounter, len(ids)*ebpf.MustPossibleCPU())
		if _, err := d.objs.BackendStats.BatchUpdate(ids, zeros, nil); err != nil {
			return fmt.Errorf("vip %s: reset counters of %d new backends: %w", vip, len(ids), err)
		}
		for _, id := range ids {
			d.counts.reset(id)
		}
		if err := resetCosts(d.objs.BackendCost, p.fresh); err != nil {
			return fmt.Errorf("vip %s: reset response times of %d new backends: %w", vip, len(ids), err)
		}
	}
	if len(p.written) > 0 {
		ids := make([]uint32, len(p.written))
		values := make([]balancerBackend, len(p.written))
		for i, b := range p.written {
			ids[i], values[i] = b.id, backendValue(b, e.index)
		}
		if _, err := d.objs.Backends.BatchUpdate(ids, values, nil); err != nil {
			return fmt.Errorf("vip %s: write %d backends: %w", vip, len(ids), err)
		}
	}
	if err := d.fillPools(p); err != nil {
		return err
	}
	if err := d.fillRR(p); err != nil {
		return fmt.Errorf("vip %s: %w", vip, err)
	}
	var table []uint32
	var err error
	if sh != nil {
		table, err = sh.table(e)
	} else {
		table, err = buildTable(e)
	}
	if err != nil {
		return fmt.Errorf("vip %s: %w", vip, err)
	}
	e.tableSum = tableSum(table)
	if old != nil && old.tableSum == e.tableSum && old.cfg.RingSize == e.cfg.RingSize {
		e.ring = old.ring
		return nil
	}
	if e.ring, err = d.arena.alloc(uint32(len(table))); err != nil {
		return fmt.Errorf("vip %s: %w", vip, err)
	}
	p.newRing = true
	if err := d.arena.write(e.ring, table); err != nil {
		return fmt.Errorf("vip %s: %w", vip, err)
	}
	return nil
}

// commit makes a prepared VIP live once its ring is written: the VIP's
// state, then its key, whose update publishes the new ring; then the
// retirement of the old ring and of the backends it lost.
func (d *Datapath) commit(p *pendingVIP) error {
	e, vip := p.e, p.e.vip
	hz, err := d.hz()
	if err != nil {
		p.undo(d)
		return fmt.Errorf("vip %s: %w", vip, err)
	}
	var prev SourceRanges
	if p.old != nil {
		prev = p.old.cfg.SourceRanges
	}
	// New ranges before the meta that may turn them on, old ones after
	// the meta that stops using them: a client allowed before and after
	// the change is never refused during it.
	if err := d.addSourceRanges(e.index, prev, e.cfg.SourceRanges); err != nil {
		return fmt.Errorf("vip %s: %w", vip, err)
	}
	if err := d.writeLCPool(e); err != nil {
		p.undo(d)
		return fmt.Errorf("vip %s: write least-conn pool: %w", vip, err)
	}
	// The pools' rings and prefixes likewise before the meta, what the
	// change dropped after it.
	if err := d.writePools(p); err != nil {
		// writePools put back what it wrote, but an extent that a put
		// back failed to unname must not be reused at once.
		for _, r := range p.poolRings {
			d.arena.retire(r)
		}
		p.poolRings = nil
		p.undo(d)
		return err
	}
	meta := vipMeta(e, hz)
	if err := d.objs.VipState.Put(uint32(e.index), meta); err != nil {
		p.undo(d)
		return fmt.Errorf("vip %s: write vip state: %w", vip, err)
	}
	if p.old != nil {
		e.slot, e.hasSlot = p.old.slot, p.old.hasSlot
	}
	if err := d.putVIPKey(e, meta); err != nil {
		// The key may hold either meta: the new extent is retired,
		// not freed, and the old one stays.
		if p.newRing {
			d.arena.retire(e.ring)
			p.newRing = false
		}
		if p.newRR {
			d.arena.retire(e.rr)
			p.newRR = false
		}
		p.undo(d)
		return fmt.Errorf("vip %s: write vip: %w", vip, err)
	}
	if p.newRing && p.old != nil {
		d.arena.retire(p.old.ring)
	}
	if p.old != nil && p.old.rr != e.rr {
		d.arena.retire(p.old.rr)
	}
	d.vips[vip] = e
	d.ownerChanges++ // before the backends it lost retire (free their ids)
	d.vipGen[e.index] = e.gen

	errs := []error{d.removeSourceRanges(e.index, prev, e.cfg.SourceRanges), d.dropPools(p.old, e)}
	if p.old != nil {
		for addr, ob := range p.old.backends {
			if e.backends[addr] == nil {
				errs = append(errs, d.retireBackend(ob))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vip %s: %w", vip, err)
	}
	return nil
}

func oldBackend(old *vipEntry, addr netip.Addr) *backendEntry {
	if old == nil {
		return nil
	}
	return old.backends[addr]
}

func sameBackends(have map[netip.Addr]*backendEntry, want []Backend) bool {
	if len(have) != len(want) {
		return false
	}
	for _, b := range want {
		h := have[b.Addr]
		if h == nil || h.Weight != b.Weight || !bytes.Equal(h.MAC, b.MAC) {
			return false
		}
	}
	return true
}

// nextGen returns the generation after g, skipping 0.
func nextGen(g uint16) uint16 {
	g++
	if g == 0 {
		g = 1
	}
	return g
}

func backendValue(b *backendEntry, vipIndex uint16) balancerBackend {
	v := balancerBackend{
		Flags:    uint8(balancerFulcrumBackendFlagsBACKEND_F_LIVE),
		VipIndex: vipIndex,
		Gen:      b.gen,
		Weight:   uint16(b.Weight),
		Addr:     be128(b.Addr),
	}
	copy(v.Mac[:], b.MAC)
	v.Family = unix.AF_INET
	if b.Addr.Is6() {
		v.Family = unix.AF_INET6
	}
	return v
}

// vipMeta is the VIP's vip_meta; hz converts its timeouts to jiffies.
func vipMeta(e *vipEntry, hz uint32) balancerVipMeta {
	var flags uint16
	if e.cfg.NoConntrack {
		flags |= uint16(balancerFulcrumVipFlagsVIP_F_NO_CONNTRACK)
	}
	if e.cfg.SourceHash {
		flags |= uint16(balancerFulcrumVipFlagsVIP_F_SOURCE_HASH)
	}
	if e.cfg.PassUnparseable {
		flags |= uint16(balancerFulcrumVipFlagsVIP_F_PASS_UNPARSEABLE)
	}
	if !e.cfg.SourceRanges.IsZero() {
		flags |= uint16(balancerFulcrumVipFlagsVIP_F_SOURCE_RANGES)
	}
	if !e.cfg.Pools.IsZero() {
		flags |= uint16(balancerFulcrumVipFlagsVIP_F_POOLS)
	}
	if e.cfg.RoundRobin {
		flags |= uint16(balancerFulcrumVipFlagsVIP_F_ROUND_ROBIN)
	}
	if e.cfg.LeastConn {
		flags |= uint16(balancerFulcrumVipFlagsVIP_F_LEAST_CONN)
	}
	if e.cfg.LeastTime {
		flags |= uint16(balancerFulcrumVipFlagsVIP_F_LEAST_TIME)
	}
	if e.cfg.ResponseTime {
		flags |= uint16(balancerFulcrumVipFlagsVIP_F_RESPONSE_TIME)
	}
	return balancerVipMeta{
		Index:      e.index,
		Gen:        e.gen,
		Flags:      flags,
		Mode:       uint8(e.cfg.Mode),
		RingSize:   e.ring.size,
		RingOffset: e.ring.off,
		CtTimeout:  e.cfg.Timeouts.jiffies(e.vip.Proto, hz),
		RrOffset:   e.rr.off,
		RrLen:      e.rr.size,
	}
}

// buildTable builds the VIP's Maglev table over backend ids. The
// permutation comes from the backend's address, so every node builds the
// same slot-to-address table whatever ids it assigned.
func buildTable(e *vipEntry) ([]uint32, error) {
	in := make([]maglev.Backend, 0, len(e.backends))
	for _, b := range e.backends {
		in = append(in, maglev.Backend{Name: b.Addr.String(), ID: b.id, Weight: b.Weight})
	}
	return maglev.Build(in, e.cfg.RingSize)
}

// tableSum is a digest of a ring's slots, to tell whether a rebuilt ring
// differs from the one written: FNV-1a's multiply and xor, over each slot
// as a whole word rather than byte by byte (four times fewer multiplies).
// It is never stored: each process computes it for the rings it builds or
// adopts.
func tableSum(table []uint32) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for _, id := range table {
		h = (h ^ uint64(id)) * prime
	}
	return h
}

// retireBackend marks a backend id dead (its connection entries become
// stale and re-hash) and frees the id.
func (d *Datapath) retireBackend(b *backendEntry) error {
	if err := d.objs.Backends.Put(b.id, balancerBackend{Gen: b.gen}); err != nil {
		return fmt.Errorf("retire backend %s: %w", b.Addr, err)
	}
	d.backendID.put(b.id)
	return nil
}

func vipKey4(v VIP) balancerVipKeyV4 {
	return balancerVipKeyV4{Addr: be32(v.Addr), Port: be16(v.Port), Proto: uint8(v.Proto)}
}

func vipKey6(v VIP) balancerVipKeyV6 {
	return balancerVipKeyV6{Addr: be128(v.Addr), Port: be16(v.Port), Proto: uint8(v.Proto)}
}

// syncGlobals brings the global flags and the per-address policies in
// line with the VIP set, writing only what differs from what was written.
func (d *Datapath) syncGlobals() error {
	var cfg balancerLbConfig
	policy := make(map[netip.Addr]uint32)
	for _, e := range d.vips {
		if !e.cfg.NoConntrack {
			if e.vip.Proto == TCP {
				cfg.Flags |= uint32(balancerFulcrumConfigFlagsCONFIG_F_CT_TCP)
			} else {
				cfg.Flags |= uint32(balancerFulcrumConfigFlagsCONFIG_F_CT_UDP)
			}
		}
		pass := uint32(0)
		if e.cfg.PassUnparseable {
			pass = uint32(balancerFulcrumVipFlagsVIP_F_PASS_UNPARSEABLE)
		}
		if p, ok := policy[e.vip.Addr]; ok {
			pass &= p // drop wins
		}
		policy[e.vip.Addr] = pass
	}
	fillEncap(&cfg, d.encap)
	cfg.NewFlowLimit = d.newFlowLimit
	if d.syncOn {
		cfg.Flags |= syncFlag
	}
	var errs []error
	if d.written.config == nil || *d.written.config != cfg {
		if err := d.objs.Config.Put(uint32(0), cfg); err != nil {
			errs = append(errs, err)
		} else {
			d.written.config = &cfg
		}
	}
	for a, p := range policy {
		if old, ok := d.written.policy[a]; ok && old == p {
			continue
		}
		var err error
		if a.Is4() {
			err = d.objs.VipAddrsV4.Put(be32(a), p)
		} else {
			err = d.objs.VipAddrsV6.Put(a.As16(), p)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.written.policy[a] = p
	}
	for a := range d.written.policy {
		if _, ok := policy[a]; ok {
			continue
		}
		var err error
		if a.Is4() {
			err = d.objs.VipAddrsV4.Delete(be32(a))
		} else {
			err = d.objs.VipAddrsV6.Delete(a.As16())
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
			continue
		}
		delete(d.written.policy, a)
	}
	// After the VIP keys and policies are gone: an address keeps its
	// prefilter bit while the maps hold any of them (a failed delete
	// keeps its policy in d.written, and so the bit).
	d.hosts.release(d.addrsInUse())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("write global state: %w", err)
	}
	return nil
}

// zeroCounter resets a reused index's per-CPU counter.
func zeroCounter(m *ebpf.Map, index uint32) error {
	return m.Put(index, make([]balancerCounter, ebpf.MustPossibleCPU()))
}

// Validate checks a VIP, its configuration and backends the way SetVIP
// does, without touching the maps, so a caller can refuse a whole batch of
// changes before applying any.
func Validate(vip VIP, cfg VIPConfig, backends []Backend) error {
	return validate(vip, &cfg, backends)
}

// Capacity returns how many VIPs and (VIP, backend) pairs the maps hold.
func (d *Datapath) Capacity() (vips, backends int) {
	return int(d.vipIndex.limit), int(d.backendID.limit)
}

package datapath

// Source-prefix pools: a VIP's clients split by source prefix, each pool
// with its own Maglev ring over some of the VIP's backends. The pools'
// prefixes are src_prefixes entries of kind SRC_KIND_POOL under the VIP's
// index, whose value is the pool's id; pool_rings[id] names the pool's ring
// in the ring arena, or, for a pool with no live backend, its fallback (the
// VIP's ring, or a drop). The fast path looks a client's pool up only for a
// VIP whose vip_meta carries VIP_F_POOLS, on a new flow or a table miss: a
// client in no pool takes the VIP's ring. docs/schedulers.md has the
// operator's view.
//
// A pool's id is its VIP's index * PoolsPerVIP + its slot, so that ids
// need no allocator of their own and a pool keeps its id while its name
// stays. Writes follow the VIP's order: the pools' rings, then their
// prefixes, then the meta; prefixes and rings the change dropped are
// deleted after it, and their extents retired.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// PoolsPerVIP is POOLS_PER_VIP: the most pools a VIP may have.
const PoolsPerVIP = 64

// PoolFallback is what a pool's clients get while no backend of the pool
// is live.
type PoolFallback uint8

// The fallbacks.
const (
	// FallbackVIP sends them to the VIP's ring: its other backends.
	FallbackVIP PoolFallback = iota
	// FallbackDrop drops their new flows (verdict drop_pool_down).
	FallbackDrop
)

func (f PoolFallback) String() string {
	if f == FallbackDrop {
		return "drop"
	}
	return "vip"
}

// Pool is a source-prefix pool of a VIP: clients in Prefixes take a ring
// over Backends, which are addresses of the VIP's backends (their weights,
// drain and health are the VIP's). A backend the VIP does not have, or no
// longer has (health took it out), counts as down.
type Pool struct {
	Name     string
	Prefixes []netip.Prefix
	Backends []netip.Addr
	Fallback PoolFallback
}

// Pools is a VIP's set of pools in a canonical form (sorted by name, each
// pool's prefixes and backends sorted, without duplicates): a value that
// compares with ==, so that VIPConfig stays comparable. The zero value has
// no pools.
type Pools struct {
	s string // one line per pool: name fallback backends prefixes
}

// adoptedPools stands for the pools a restarted daemon found in the maps,
// whose names the maps do not hold: it equals no configuration's pools, so
// the first change of the VIP rewrites them.
var adoptedPools = Pools{s: "\x00adopted"}

// NewPools returns the set of the given pools. Names must be unique
// labels (letters, digits, '-', '_', '.'); a prefix may belong to one pool
// only, and must be plain (no v4-mapped IPv6 form, no zone).
func NewPools(ps []Pool) (Pools, error) {
	if len(ps) == 0 {
		return Pools{}, nil
	}
	if len(ps) > PoolsPerVIP {
		return Pools{}, fmt.Errorf("%d pools: a vip has at most %d", len(ps), PoolsPerVIP)
	}
	names := make(map[string]bool, len(ps))
	owner := make(map[netip.Prefix]string)
	lines := make([]string, 0, len(ps))
	for _, p := range ps {
		if msg := PoolNameProblem(p.Name); msg != "" {
			return Pools{}, fmt.Errorf("pool name %q %s", p.Name, msg)
		}
		if names[p.Name] {
			return Pools{}, fmt.Errorf("pool %s appears twice", p.Name)
		}
		names[p.Name] = true
		if p.Fallback != FallbackVIP && p.Fallback != FallbackDrop {
			return Pools{}, fmt.Errorf("pool %s: unknown fallback %d", p.Name, p.Fallback)
		}
		prefixes := make([]netip.Prefix, 0, len(p.Prefixes))
		for _, x := range p.Prefixes {
			if !x.IsValid() || x.Addr().Is4In6() || x.Addr().Zone() != "" {
				return Pools{}, fmt.Errorf("pool %s: prefix %v is not a plain IPv4 or IPv6 prefix", p.Name, x)
			}
			x = x.Masked()
			if o, dup := owner[x]; dup && o != p.Name {
				return Pools{}, fmt.Errorf("pool %s: prefix %s is already pool %s's; a prefix belongs to one pool", p.Name, x, o)
			}
			owner[x] = p.Name
			prefixes = append(prefixes, x)
		}
		slices.SortFunc(prefixes, comparePrefix)
		prefixes = slices.Compact(prefixes)
		backends := slices.Clone(p.Backends)
		for _, b := range backends {
			if !b.IsValid() || b.Is4In6() || b.Zone() != "" {
				return Pools{}, fmt.Errorf("pool %s: backend %v is not a plain address", p.Name, b)
			}
		}
		slices.SortFunc(backends, netip.Addr.Compare)
		backends = slices.Compact(backends)
		var line strings.Builder
		line.WriteString(p.Name + " " + p.Fallback.String() + " ")
		for i, b := range backends {
			if i > 0 {
				line.WriteByte(',')
			}
			line.WriteString(b.String())
		}
		line.WriteByte(' ')
		for i, x := range prefixes {
			if i > 0 {
				line.WriteByte(',')
			}
			line.WriteString(x.String())
		}
		lines = append(lines, line.String())
	}
	slices.Sort(lines) // by name: a name has no space
	return Pools{s: strings.Join(lines, "\n")}, nil
}

// PoolNameProblem returns "" for a usable pool name, or what is wrong.
func PoolNameProblem(name string) string {
	if name == "" {
		return "is empty"
	}
	if len(name) > 64 {
		return "is longer than 64 bytes"
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Sprintf("has %q; use letters, digits, '-', '_' and '.'", c)
		}
	}
	return ""
}

// IsZero reports whether there are no pools.
func (p Pools) IsZero() bool { return p.s == "" }

// List returns the pools, by name; nil when there are none (or they were
// adopted from the maps and are not known by name).
func (p Pools) List() []Pool {
	if p.s == "" || p == adoptedPools {
		return nil
	}
	lines := strings.Split(p.s, "\n")
	out := make([]Pool, len(lines))
	for i, l := range lines {
		// Written by NewPools from valid values only.
		f := strings.Split(l, " ")
		out[i].Name = f[0]
		if f[1] == "drop" {
			out[i].Fallback = FallbackDrop
		}
		for _, b := range splitList(f[2]) {
			out[i].Backends = append(out[i].Backends, netip.MustParseAddr(b))
		}
		texts := splitList(f[3])
		out[i].Prefixes = make([]netip.Prefix, len(texts))
		for j, t := range texts {
			out[i].Prefixes[j] = netip.MustParsePrefix(t)
		}
	}
	return out
}

// String summarises the pools, e.g. "eu (3 prefixes, 2 backends,
// fallback vip), us (...)"; "none" when there are none.
func (p Pools) String() string {
	switch {
	case p.s == "":
		return "none"
	case p == adoptedPools:
		return "adopted from the maps"
	}
	var out []string
	for _, l := range strings.Split(p.s, "\n") {
		f := strings.Split(l, " ")
		out = append(out, fmt.Sprintf("%s (%d prefixes, %d backends, fallback %s)", f[0], len(splitList(f[3])), len(splitList(f[2])), f[1]))
	}
	return strings.Join(out, ", ")
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// checkPools refuses pools whose prefixes are of the other family than
// the VIP's: its clients are of its family, so they could never match.
func checkPools(vip VIP, p Pools) error {
	for _, pool := range p.List() {
		for _, x := range pool.Prefixes {
			if x.Addr().Is4() != vip.Addr.Is4() {
				return fmt.Errorf("vip %s: pool %s: prefix %s is %s but the vip is %s", vip, pool.Name, x,
					addrFamily(x.Addr()), addrFamily(vip.Addr))
			}
		}
	}
	return nil
}

// poolEntry is what the datapath wrote for one pool of a VIP.
type poolEntry struct {
	name     string
	id       uint32
	backends []netip.Addr
	fallback PoolFallback
	// ring is the pool's extent of the arena; zero while the pool is
	// down (no live backend), when flags say its fallback.
	ring  extent
	sum   uint64 // tableSum of the ring, to tell a rebuilt ring apart
	flags uint8  // as written to pool_rings, without POOL_F_PRESENT
}

// value is the pool's pool_rings word.
func (p *poolEntry) value() uint64 { return poolWord(p.ring, p.flags) }

// poolID is the id of slot slot of VIP index index.
func poolID(index uint16, slot uint32) uint32 { return uint32(index)*PoolsPerVIP + slot }

// preparePools gives e's pools their ids (an old pool's, by name, else a
// free slot) and e.poolPrefixes.
func preparePools(e, old *vipEntry) {
	if e.cfg.Pools == adoptedPools {
		// Not known by name, so not rebuilt: kept as the maps hold
		// them until the configuration names them again.
		if old != nil {
			e.pools, e.poolPrefixes, e.poolsAdopted = old.pools, old.poolPrefixes, true
		}
		return
	}
	list := e.cfg.Pools.List()
	if len(list) == 0 {
		return
	}
	used := make(map[uint32]bool)
	keep := make(map[string]bool, len(list))
	for _, p := range list {
		keep[p.Name] = true
	}
	var oldPools []*poolEntry
	if old != nil {
		oldPools = old.pools
	}
	byName := make(map[string]*poolEntry)
	for _, o := range oldPools {
		used[o.id] = true
		byName[o.name] = o
	}
	// Slots a new pool may take: free ones first; then those of old pools
	// that go, whose prefixes move in the same change.
	var free []uint32
	for s := range uint32(PoolsPerVIP) {
		if id := poolID(e.index, s); !used[id] {
			free = append(free, id)
		}
	}
	for _, o := range oldPools {
		if !keep[o.name] {
			free = append(free, o.id)
		}
	}
	e.pools = make([]*poolEntry, 0, len(list))
	e.poolPrefixes = make(map[netip.Prefix]uint32)
	for _, p := range list {
		pe := &poolEntry{name: p.Name, backends: p.Backends, fallback: p.Fallback}
		if o := byName[p.Name]; o != nil {
			pe.id = o.id
		} else {
			pe.id, free = free[0], free[1:] // NewPools allows PoolsPerVIP
		}
		e.pools = append(e.pools, pe)
		for _, x := range p.Prefixes {
			e.poolPrefixes[x] = pe.id
		}
	}
}

// poolMembers returns the pool's backends that the VIP has, and whether one
// of them takes new flows.
func poolMembers(e *vipEntry, pe *poolEntry) (members []*backendEntry, live bool) {
	for _, a := range pe.backends {
		if b := e.backends[a]; b != nil {
			members = append(members, b)
			live = live || b.Weight > 0
		}
	}
	return members, live
}

// buildPoolTable builds a pool's Maglev table over its members, as
// buildTable does the VIP's.
func buildPoolTable(e *vipEntry, members []*backendEntry) ([]uint32, error) {
	in := make([]maglev.Backend, len(members))
	for i, b := range members {
		in[i] = maglev.Backend{Name: b.Addr.String(), ID: b.id, Weight: b.Weight}
	}
	return maglev.Build(in, e.cfg.RingSize)
}

// fillPools builds the rings of p's pools and writes those that changed
// into free extents of the arena (p.poolRings, for undo); a pool without a
// live backend gets its fallback instead of a ring.
func (d *Datapath) fillPools(p *pendingVIP) error {
	e := p.e
	if e.poolsAdopted {
		return nil
	}
	old := make(map[uint32]*poolEntry)
	if p.old != nil {
		for _, o := range p.old.pools {
			old[o.id] = o
		}
	}
	for _, pe := range e.pools {
		members, live := poolMembers(e, pe)
		if !live {
			pe.flags = uint8(balancerFulcrumPoolFlagsPOOL_F_FALLBACK_VIP)
			if pe.fallback == FallbackDrop {
				pe.flags = uint8(balancerFulcrumPoolFlagsPOOL_F_DROP)
			}
			continue
		}
		table, err := buildPoolTable(e, members)
		if err != nil {
			return fmt.Errorf("vip %s: pool %s: %w", e.vip, pe.name, err)
		}
		pe.sum = tableSum(table)
		if o := old[pe.id]; o != nil && o.name == pe.name && o.flags == 0 && o.sum == pe.sum && o.ring.size == uint32(len(table)) {
			pe.ring = o.ring
			continue
		}
		if pe.ring, err = d.arena.alloc(uint32(len(table))); err != nil {
			return fmt.Errorf("vip %s: pool %s: %w", e.vip, pe.name, err)
		}
		p.poolRings = append(p.poolRings, pe.ring)
		if err := d.arena.write(pe.ring, table); err != nil {
			return fmt.Errorf("vip %s: pool %s: %w", e.vip, pe.name, err)
		}
	}
	return nil
}

// writePools writes what the new meta of p's VIP will use: the pools'
// rings, then their prefixes (new ones, and those that change pool). On
// failure it puts back what it wrote and returns the error: the VIP stays
// as it was.
func (d *Datapath) writePools(p *pendingVIP) error {
	e := p.e
	oldRing := make(map[uint32]uint64)
	var oldPrefixes map[netip.Prefix]uint32
	if p.old != nil {
		for _, o := range p.old.pools {
			oldRing[o.id] = o.value()
		}
		oldPrefixes = p.old.poolPrefixes
	}
	var undo []func()
	fail := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return fmt.Errorf("vip %s: %w", e.vip, err)
	}
	for _, pe := range e.pools {
		was, had := oldRing[pe.id]
		if had && was == pe.value() {
			continue
		}
		if err := d.poolWords.store(pe.id, pe.value()); err != nil {
			return fail(fmt.Errorf("write ring of pool %s: %w", pe.name, err))
		}
		id := pe.id
		undo = append(undo, func() { _ = d.poolWords.store(id, was) }) // was: 0 if !had
	}
	var keys []balancerSrcPrefixKey
	var vals []balancerSrcPrefixValue
	for x, id := range e.poolPrefixes {
		if oid, ok := oldPrefixes[x]; ok && oid == id {
			continue
		}
		keys = append(keys, srcPrefixKey(e.index, balancerFulcrumSrcKindSRC_KIND_POOL, x))
		vals = append(vals, balancerSrcPrefixValue{Pool: id})
	}
	written, err := d.putPrefixes(keys, vals)
	undo = append(undo, func() {
		for _, k := range keys[:written] {
			x, _ := prefixOf(k)
			if oid, ok := oldPrefixes[x]; ok {
				_ = d.objs.SrcPrefixes.Put(k, balancerSrcPrefixValue{Pool: oid})
			} else {
				_ = d.objs.SrcPrefixes.Delete(k)
			}
		}
	})
	if err != nil {
		return fail(fmt.Errorf("write pool prefixes: %w", err))
	}
	return nil
}

// putPrefixes writes trie entries, in batches where the kernel takes
// them for a trie (one syscall for thousands of entries), else one by one,
// and returns how many it wrote.
func (d *Datapath) putPrefixes(keys []balancerSrcPrefixKey, vals []balancerSrcPrefixValue) (int, error) {
	const chunk = 8192
	done := 0
	for done < len(keys) && d.trieBatch != batchRefused {
		end := min(done+chunk, len(keys))
		n, err := d.objs.SrcPrefixes.BatchUpdate(keys[done:end], vals[done:end], nil)
		if errors.Is(err, ebpf.ErrNotSupported) && done == 0 {
			d.trieBatch = batchRefused
			break
		}
		done += n
		if err != nil {
			x, _ := prefixOf(keys[min(done, len(keys)-1)])
			return done, fmt.Errorf("prefix %s: %w", x, err)
		}
	}
	for i := done; i < len(keys); i++ {
		if err := d.objs.SrcPrefixes.Put(keys[i], vals[i]); err != nil {
			x, _ := prefixOf(keys[i])
			return i, fmt.Errorf("prefix %s: %w", x, err)
		}
	}
	return len(keys), nil
}

// batchRefused marks a kernel that refused batch updates of the trie.
const batchRefused = 1

// dropPools deletes what old's pools wrote that e no longer uses, once e's
// meta is written (e nil: the VIP is gone): prefixes, then pool_rings
// words (stored 0), then the rings' extents, retired: a reader that loaded
// an old word before the store reads its extent within the grace period.
func (d *Datapath) dropPools(old, e *vipEntry) error {
	if old == nil || (len(old.pools) == 0 && len(old.poolPrefixes) == 0) {
		return nil
	}
	var newPrefixes map[netip.Prefix]uint32
	ids := make(map[uint32]bool)
	rings := make(map[extent]bool)
	if e != nil {
		newPrefixes = e.poolPrefixes
		for _, pe := range e.pools {
			ids[pe.id] = true
			rings[pe.ring] = true
		}
	}
	var gone []balancerSrcPrefixKey
	for x := range old.poolPrefixes {
		if _, ok := newPrefixes[x]; !ok {
			gone = append(gone, srcPrefixKey(old.index, balancerFulcrumSrcKindSRC_KIND_POOL, x))
		}
	}
	errs := []error{d.deletePrefixes(gone)}
	for _, o := range old.pools {
		if !ids[o.id] {
			if err := d.poolWords.store(o.id, 0); err != nil {
				errs = append(errs, fmt.Errorf("delete ring of pool %s: %w", o.name, err))
			}
		}
		if !rings[o.ring] {
			d.arena.retire(o.ring)
		}
	}
	return errors.Join(errs...)
}

// deletePrefixes deletes trie entries, in batches where the kernel takes
// them; a batch that fails (an entry already gone stops it) is retried
// one by one.
func (d *Datapath) deletePrefixes(keys []balancerSrcPrefixKey) error {
	const chunk = 8192
	var errs []error
	for len(keys) > 0 {
		batch := keys[:min(chunk, len(keys))]
		keys = keys[len(batch):]
		if d.trieBatch != batchRefused {
			_, err := d.objs.SrcPrefixes.BatchDelete(batch, nil)
			if err == nil {
				continue
			}
			if errors.Is(err, ebpf.ErrNotSupported) {
				d.trieBatch = batchRefused
			}
		}
		for _, k := range batch {
			if err := d.objs.SrcPrefixes.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				x, _ := prefixOf(k)
				errs = append(errs, fmt.Errorf("delete pool prefix %s: %w", x, err))
			}
		}
	}
	return errors.Join(errs...)
}

// adoptPools gives the adopted VIPs with VIP_F_POOLS the pools the maps
// hold under their index (known by id, not by name: see adoptedPools),
// claims their rings' extents, and deletes the entries of other indexes:
// left by a crash between writes.
func (d *Datapath) adoptPools(flagged map[uint16]*vipEntry) error {
	var staleIDs []uint32
	// The words through the mapping: a scan of memory, where iterating the
	// array would take two syscalls per id, used or not.
	for i := range d.poolWords.words {
		id := uint32(i)
		ring, flags, present := unpackPool(d.poolWords.load(id))
		if !present {
			continue
		}
		e := flagged[uint16(id/PoolsPerVIP)]
		if e == nil {
			staleIDs = append(staleIDs, id)
			continue
		}
		pe := &poolEntry{name: fmt.Sprintf("#%d", id%PoolsPerVIP), id: id, flags: flags}
		if flags&uint8(balancerFulcrumPoolFlagsPOOL_F_DROP) != 0 {
			pe.fallback = FallbackDrop
		}
		if flags == 0 {
			pe.ring = ring
			if err := d.arena.claim(pe.ring); err != nil {
				return fmt.Errorf("adopt ring of a pool of vip %s: %w", e.vip, err)
			}
		}
		e.pools = append(e.pools, pe)
	}
	var stale []balancerSrcPrefixKey
	var k balancerSrcPrefixKey
	var pv balancerSrcPrefixValue
	pit := d.objs.SrcPrefixes.Iterate()
	for pit.Next(&k, &pv) {
		if k.Kind != uint8(balancerFulcrumSrcKindSRC_KIND_POOL) {
			continue
		}
		x, ok := prefixOf(k)
		e := flagged[k.VipIndex]
		if !ok || e == nil {
			stale = append(stale, k)
			continue
		}
		if e.poolPrefixes == nil {
			e.poolPrefixes = make(map[netip.Prefix]uint32)
		}
		e.poolPrefixes[x] = pv.Pool
	}
	if err := pit.Err(); err != nil {
		return fmt.Errorf("read %s: %w", balancerMapSrcPrefixes, err)
	}
	for _, e := range flagged {
		e.cfg.Pools, e.poolsAdopted = adoptedPools, true
		slices.SortFunc(e.pools, func(a, b *poolEntry) int { return int(a.id) - int(b.id) })
	}
	for _, k := range stale {
		if err := d.objs.SrcPrefixes.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete stale pool prefix of vip index %d: %w", k.VipIndex, err)
		}
	}
	for _, id := range staleIDs {
		if err := d.poolWords.store(id, 0); err != nil {
			return fmt.Errorf("delete stale pool %d: %w", id, err)
		}
	}
	return nil
}

// poolOf returns the pool of e that holds client a, by longest prefix as
// the trie matches, or nil.
func poolOf(e *vipEntry, a netip.Addr) *poolEntry {
	if len(e.poolPrefixes) == 0 {
		return nil
	}
	a = a.Unmap()
	for bits := a.BitLen(); bits >= 0; bits-- {
		x, _ := a.Prefix(bits)
		if id, ok := e.poolPrefixes[x]; ok {
			for _, pe := range e.pools {
				if pe.id == id {
					return pe
				}
			}
			return nil
		}
	}
	return nil
}

// PoolState is a pool as the datapath holds it.
type PoolState struct {
	Name string
	// Prefixes counts the pool's client prefixes.
	Prefixes int
	Backends []netip.Addr
	Fallback PoolFallback
	// Down is set while no backend of the pool is live: its clients get
	// the fallback.
	Down bool
}

// poolStates returns e's pools, by name.
func poolStates(e *vipEntry) []PoolState {
	if len(e.pools) == 0 {
		return nil
	}
	counts := make(map[uint32]int)
	for _, id := range e.poolPrefixes {
		counts[id]++
	}
	out := make([]PoolState, len(e.pools))
	for i, pe := range e.pools {
		out[i] = PoolState{Name: pe.name, Prefixes: counts[pe.id], Backends: pe.backends, Fallback: pe.fallback, Down: pe.flags != 0}
	}
	slices.SortFunc(out, func(a, b PoolState) int { return strings.Compare(a.Name, b.Name) })
	return out
}

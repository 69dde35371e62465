package datapath

// What a migration carries from the old pins to the new ones: the
// connection table, its backend ids translated, and the counters.

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
)

// tables are the maps a migration reads or writes, of one pin set.
type tables struct {
	vipsV4, vipsV6, backends, ctV4, ctV6, stats, vipStats, backendStats *ebpf.Map
	// ctKeysV4 and ctKeysV6 are the tuple records of the bucketed tables
	// (layout 4 on); nil in older pins, whose ct_* are LRU hashes keyed by
	// the tuple.
	ctKeysV4, ctKeysV6 *ebpf.Map
	// vipMetas holds the VIPs' metas (layout 5 on); nil in older pins,
	// whose VIP maps hold them.
	vipMetas *ebpf.Map
	owned    bool
}

// openTables opens the maps of the pins in dir. Layouts 1 and 2 have the
// same formats; layout 3 added the timeouts to vip_meta (eachVIP reads
// either) and a counter to the end of the verdict table (copyCounters
// carries the old ones over); layout 4 made ct_* bucketed arrays with
// their tuple records ct_keys_* (copyConntrack reads either), added the
// ring offset to vip_meta (the rings themselves are not copied: the new
// configuration writes its own) and ct_evicted to the verdict table.
func openTables(dir string) (*tables, error) {
	t := &tables{owned: true}
	for _, f := range []struct {
		m    **ebpf.Map
		name string
	}{
		{&t.vipsV4, balancerMapVipsV4}, {&t.vipsV6, balancerMapVipsV6}, {&t.backends, balancerMapBackends},
		{&t.ctV4, balancerMapCtV4}, {&t.ctV6, balancerMapCtV6}, {&t.stats, balancerMapStats},
		{&t.vipStats, balancerMapVipStats}, {&t.backendStats, balancerMapBackendStats},
	} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, f.name), nil)
		if err != nil {
			t.close()
			return nil, fmt.Errorf("open pinned map %s in %s: %w", f.name, dir, err)
		}
		*f.m = m
	}
	var ctFormat error
	if t.ctV4.Type() == ebpf.LRUHash {
		ctFormat = errors.Join(
			sameFormat(t.ctV4, balancerMapCtV4, balancerCtKeyV4{}, balancerCtValue{}),
			sameFormat(t.ctV6, balancerMapCtV6, balancerCtKeyV6{}, balancerCtValue{}))
	} else {
		for _, f := range []struct {
			m    **ebpf.Map
			name string
		}{{&t.ctKeysV4, balancerMapCtKeysV4}, {&t.ctKeysV6, balancerMapCtKeysV6}} {
			m, err := ebpf.LoadPinnedMap(filepath.Join(dir, f.name), nil)
			if err != nil {
				t.close()
				return nil, fmt.Errorf("open pinned map %s in %s: %w", f.name, dir, err)
			}
			*f.m = m
		}
		ctFormat = errors.Join(
			sameFormat(t.ctV4, balancerMapCtV4, uint32(0), balancerCtBucket{}),
			sameFormat(t.ctV6, balancerMapCtV6, uint32(0), balancerCtBucket{}),
			sameFormat(t.ctKeysV4, balancerMapCtKeysV4, uint32(0), balancerCtKeyV4{}),
			sameFormat(t.ctKeysV6, balancerMapCtKeysV6, uint32(0), balancerCtKeyV6{}))
	}
	metaFormat := errors.Join(
		sameFormat(t.vipsV4, balancerMapVipsV4, balancerVipKeyV4{}, balancerVipMeta{}, vipMetaV2{}, vipMetaV3{}),
		sameFormat(t.vipsV6, balancerMapVipsV6, balancerVipKeyV6{}, balancerVipMeta{}, vipMetaV2{}, vipMetaV3{}))
	if t.vipsV4.ValueSize() == 4 { // layout 5 on: the metas are in vip_metas
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, balancerMapVipMetas), nil)
		if err != nil {
			t.close()
			return nil, fmt.Errorf("open pinned map %s in %s: %w", balancerMapVipMetas, dir, err)
		}
		t.vipMetas = m
		metaFormat = errors.Join(
			sameFormat(t.vipsV4, balancerMapVipsV4, balancerVipKeyV4{}, uint32(0)),
			sameFormat(t.vipsV6, balancerMapVipsV6, balancerVipKeyV6{}, uint32(0)),
			sameFormat(t.vipMetas, balancerMapVipMetas, uint32(0), balancerVipSlot{}))
	}
	if err := errors.Join(
		ctFormat,
		sameFormat(t.backends, balancerMapBackends, uint32(0), balancerBackend{}),
		metaFormat,
	); err != nil {
		t.close()
		return nil, fmt.Errorf("read the pins in %s: %w", dir, err)
	}
	return t, nil
}

// sameFormat checks that a pinned map's keys and values are the size of
// the Go types this build reads them as: value, or an older layout's
// (olderValues) that the reader converts.
func sameFormat(m *ebpf.Map, name string, key, value any, olderValues ...any) error {
	if int(m.KeySize()) == binary.Size(key) {
		for _, v := range append([]any{value}, olderValues...) {
			if int(m.ValueSize()) == binary.Size(v) {
				return nil
			}
		}
	}
	return fmt.Errorf("%s has %d-byte keys and %d-byte values, want %d and %d", name, m.KeySize(), m.ValueSize(), binary.Size(key), binary.Size(value))
}

func tablesOf(o *balancerObjects) *tables {
	return &tables{vipsV4: o.VipsV4, vipsV6: o.VipsV6, vipMetas: o.VipMetas, backends: o.Backends, ctV4: o.CtV4, ctV6: o.CtV6,
		ctKeysV4: o.CtKeysV4, ctKeysV6: o.CtKeysV6, stats: o.Stats, vipStats: o.VipStats, backendStats: o.BackendStats}
}

func (t *tables) close() {
	if !t.owned {
		return
	}
	for _, m := range []*ebpf.Map{t.vipsV4, t.vipsV6, t.vipMetas, t.backends, t.ctV4, t.ctV6, t.ctKeysV4, t.ctKeysV6, t.stats, t.vipStats, t.backendStats} {
		if m != nil {
			m.Close()
		}
	}
}

// backendKey names a backend independently of its id: what a connection
// entry's backend id is translated through.
type backendKey struct {
	vip  VIP
	addr netip.Addr
}

type backendRef struct {
	id  uint32
	gen uint16
}

// index reads a pin set's live backends: by id, and by VIP and address;
// and its VIPs by index.
func (t *tables) index() (byID map[uint32]backendKey, gens map[uint32]uint16, byKey map[backendKey]backendRef, vips map[uint16]VIP, err error) {
	vips = make(map[uint16]VIP)
	if err := eachVIP(t.vipsV4, t.vipsV6, t.vipMetas, func(v VIP, m balancerVipMeta, _ uint32) { vips[m.Index] = v }); err != nil {
		return nil, nil, nil, nil, err
	}
	byID = make(map[uint32]backendKey)
	gens = make(map[uint32]uint16)
	byKey = make(map[backendKey]backendRef)
	err = eachBackend(t.backends, func(id uint32, b balancerBackend) {
		vip, ok := vips[b.VipIndex]
		if !ok || b.Flags&uint8(balancerFulcrumBackendFlagsBACKEND_F_LIVE) == 0 {
			return
		}
		k := backendKey{vip: vip, addr: backendAddr(b)}
		byID[id], gens[id] = k, b.Gen
		byKey[k] = backendRef{id: id, gen: b.Gen}
	})
	return byID, gens, byKey, vips, err
}

// copyConntrack copies the connection entries of src into dst, each with
// its backend translated to dst's id for the same VIP and address. Entries
// of a backend that is stale in src or absent from dst are dropped: the
// fast path would re-hash their flows anyway. With missingOnly, entries
// dst has already are left alone (the late copy after the swap, when the
// new program writes dst).
func copyConntrack(src, dst *tables, missingOnly bool) (kept, dropped int, err error) {
	srcByID, srcGen, _, _, err := src.index()
	if err != nil {
		return 0, 0, err
	}
	_, _, dstByKey, _, err := dst.index()
	if err != nil {
		return 0, 0, err
	}
	convert := func(v balancerCtValue) (balancerCtValue, bool) {
		k, ok := srcByID[v.Backend]
		if !ok || srcGen[v.Backend] != v.BackendGen {
			return v, false
		}
		ref, ok := dstByKey[k]
		if !ok {
			return v, false
		}
		// Everything but the backend carries over: the state and the
		// last-seen time, so an entry keeps its timeout and idle age.
		v.Backend, v.BackendGen = ref.id, ref.gen
		return v, true
	}
	for _, v4 := range []bool{true, false} {
		entries, err := src.connEntries(v4)
		if err != nil {
			return kept, dropped, err
		}
		k, d, err := copyTable(entries, dst, v4, convert, missingOnly)
		kept, dropped = kept+k, dropped+d
		if err != nil {
			return kept, dropped, err
		}
	}
	return kept, dropped, nil
}

// connEntry is a connection entry of either table format.
type connEntry struct {
	f Flow
	v balancerCtValue
}

// connEntries reads one family's connection table whole: an LRU hash of
// layout 3 and before, or a bucketed table.
func (t *tables) connEntries(v4 bool) ([]connEntry, error) {
	m, keys := t.ctV6, t.ctKeysV6
	if v4 {
		m, keys = t.ctV4, t.ctKeysV4
	}
	var out []connEntry
	if keys != nil {
		var err error
		walkTable(m, keys, v4, func(e TableEntry, werr error) bool {
			if werr != nil {
				err = werr
				return false
			}
			out = append(out, connEntry{e.Flow, balancerCtValue{Backend: e.Backend, BackendGen: e.BackendGen, State: uint8(e.State), LastSeen: e.LastSeen}})
			return true
		})
		return out, err
	}
	if v4 {
		ks, vs, err := readAll[balancerCtKeyV4](m)
		for i, k := range ks {
			out = append(out, connEntry{flowOfV4(k), vs[i]})
		}
		return out, err
	}
	ks, vs, err := readAll[balancerCtKeyV6](m)
	for i, k := range ks {
		out = append(out, connEntry{flowOfV6(k), vs[i]})
	}
	return out, err
}

// copyTable writes one family's converted entries into dst's table. A
// full copy writes the whole table at once, oldest entry first, so that
// where dst's buckets are too few the newest entries stay. With
// missingOnly, the flows dst holds already are left alone and the others
// written one bucket at a time (the new program writes dst meanwhile).
func copyTable(entries []connEntry, dst *tables, v4 bool, convert func(balancerCtValue) (balancerCtValue, bool), missingOnly bool) (kept, dropped int, err error) {
	buckets, keys := dst.ctV6, dst.ctKeysV6
	if v4 {
		buckets, keys = dst.ctV4, dst.ctKeysV4
	}
	have := make(map[Flow]bool)
	if missingOnly {
		walkTable(buckets, keys, v4, func(e TableEntry, werr error) bool {
			if werr != nil {
				err = werr
				return false
			}
			have[e.Flow] = true
			return true
		})
		if err != nil {
			return 0, 0, err
		}
	}
	var out []connEntry
	for _, e := range entries {
		if have[e.f] {
			continue
		}
		v, ok := convert(e.v)
		if !ok {
			dropped++
			continue
		}
		out = append(out, connEntry{e.f, v})
	}
	if missingOnly {
		for _, e := range out {
			if _, err := putConntrack(buckets, keys, e.f, e.v); err != nil {
				return kept, dropped, err
			}
			kept++
		}
		return kept, dropped, nil
	}
	// last_seen is in jiffies and wraps: order by age from the newest.
	var newest uint32
	for _, e := range out {
		if int32(e.v.LastSeen-newest) > 0 {
			newest = e.v.LastSeen
		}
	}
	slices.SortStableFunc(out, func(a, b connEntry) int { return cmp.Compare(newest-b.v.LastSeen, newest-a.v.LastSeen) })
	img := newTableImage(buckets.MaxEntries(), v4)
	for _, e := range out {
		img.add(e.f, e.v, true)
	}
	if err := img.write(buckets, keys); err != nil {
		return 0, dropped, err
	}
	return len(out), dropped, nil
}

// readAll reads an LRU hash connection table (layout 3 and before) whole,
// in batches.
func readAll[K any](m *ebpf.Map) ([]K, []balancerCtValue, error) {
	const chunk = 4096
	var keys []K
	var vals []balancerCtValue
	kb := make([]K, chunk)
	vb := make([]balancerCtValue, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, kb, vb, nil)
		keys = append(keys, kb[:n]...)
		vals = append(vals, vb[:n]...)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return keys, vals, nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

// copyCounters carries the per-CPU counters over: the verdict table (the
// same enum in every layout this build reads, only ever grown at the end),
// a VIP's and a backend's to the index or id they have now. It returns
// what it reset.
func copyCounters(src, dst *tables) ([]string, error) {
	var reset []string
	if msg, err := copyVerdicts(src.stats, dst.stats); err != nil {
		return nil, err
	} else if msg != "" {
		reset = append(reset, msg)
	}
	srcByID, _, _, srcVIPs, err := src.index()
	if err != nil {
		return nil, err
	}
	_, _, dstByKey, dstVIPs, err := dst.index()
	if err != nil {
		return nil, err
	}
	dstIndex := make(map[VIP]uint16, len(dstVIPs))
	for i, v := range dstVIPs {
		dstIndex[v] = i
	}
	var c []balancerCounter
	for i, v := range srcVIPs {
		j, ok := dstIndex[v]
		if !ok {
			continue
		}
		if err := src.vipStats.Lookup(uint32(i), &c); err != nil {
			return nil, fmt.Errorf("read counters of vip %s: %w", v, err)
		}
		if err := dst.vipStats.Put(uint32(j), c); err != nil {
			return nil, fmt.Errorf("write counters of vip %s: %w", v, err)
		}
	}
	for id, k := range srcByID {
		ref, ok := dstByKey[k]
		if !ok {
			continue
		}
		if err := src.backendStats.Lookup(id, &c); err != nil {
			return nil, fmt.Errorf("read counters of backend %s of vip %s: %w", k.addr, k.vip, err)
		}
		if err := dst.backendStats.Put(ref.id, c); err != nil {
			return nil, fmt.Errorf("write counters of backend %s of vip %s: %w", k.addr, k.vip, err)
		}
	}
	return reset, nil
}

// copyVerdicts copies the verdict table. Counters are only ever added at
// the end of enum fulcrum_stat (layout 3 added ct_expired, layout 4
// drop_source_range), so an older, shorter table's counters are the same
// counters by index, and the new ones start at zero. A table that is
// longer, or not whole counters, is another enum: it is reset, and the
// returned message says so.
func copyVerdicts(src, dst *ebpf.Map) (string, error) {
	const word = 8 // one __u64 counter
	have, want := src.ValueSize(), dst.ValueSize()
	if have > want || have%word != 0 {
		return fmt.Sprintf("verdict counters: the old table has %d bytes a CPU, this one %d", have, want), nil
	}
	old := make([][]uint64, ebpf.MustPossibleCPU())
	for cpu := range old {
		old[cpu] = make([]uint64, have/word)
	}
	if err := src.Lookup(uint32(0), old); err != nil {
		return "", fmt.Errorf("read verdict counters: %w", err)
	}
	v := make([]balancerStatTable, len(old))
	for cpu := range old {
		copy(v[cpu].Count[:], old[cpu])
	}
	if err := dst.Put(uint32(0), v); err != nil {
		return "", fmt.Errorf("write verdict counters: %w", err)
	}
	return "", nil
}

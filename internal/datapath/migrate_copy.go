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
	"runtime"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// tables are the maps a migration reads or writes, of one pin set.
type tables struct {
	vipsV4, vipsV6, backends, ctV4, ctV6, stats, vipStats, backendStats *ebpf.Map
	owned                                                               bool
}

// openTables opens the maps of the pins in dir. Layouts 1 and 2 have the
// same formats; layout 3 added the timeouts to vip_meta (eachVIP reads
// either) and a counter to the end of the verdict table (copyCounters
// carries the old ones over); layout 4 the ring offset to vip_meta (the
// rings themselves are not copied: the new configuration writes its own).
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
	if err := errors.Join(
		sameFormat(t.ctV4, balancerMapCtV4, balancerCtKeyV4{}, balancerCtValue{}),
		sameFormat(t.ctV6, balancerMapCtV6, balancerCtKeyV6{}, balancerCtValue{}),
		sameFormat(t.backends, balancerMapBackends, uint32(0), balancerBackend{}),
		sameFormat(t.vipsV4, balancerMapVipsV4, balancerVipKeyV4{}, balancerVipMeta{}, vipMetaV2{}, vipMetaV3{}),
		sameFormat(t.vipsV6, balancerMapVipsV6, balancerVipKeyV6{}, balancerVipMeta{}, vipMetaV2{}, vipMetaV3{}),
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
	return &tables{vipsV4: o.VipsV4, vipsV6: o.VipsV6, backends: o.Backends, ctV4: o.CtV4, ctV6: o.CtV6,
		stats: o.Stats, vipStats: o.VipStats, backendStats: o.BackendStats}
}

func (t *tables) close() {
	if !t.owned {
		return
	}
	for _, m := range []*ebpf.Map{t.vipsV4, t.vipsV6, t.backends, t.ctV4, t.ctV6, t.stats, t.vipStats, t.backendStats} {
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
	if err := eachVIP(t.vipsV4, t.vipsV6, func(v VIP, m balancerVipMeta) { vips[m.Index] = v }); err != nil {
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
	k4, d4, err := copyTable[balancerCtKeyV4](src.ctV4, dst.ctV4, convert, missingOnly)
	if err != nil {
		return 0, 0, fmt.Errorf("copy %s: %w", balancerMapCtV4, err)
	}
	k6, d6, err := copyTable[balancerCtKeyV6](src.ctV6, dst.ctV6, convert, missingOnly)
	if err != nil {
		return 0, 0, fmt.Errorf("copy %s: %w", balancerMapCtV6, err)
	}
	return k4 + k6, d4 + d6, nil
}

// copyTable copies one connection table, converting each value.
func copyTable[K comparable](src, dst *ebpf.Map, convert func(balancerCtValue) (balancerCtValue, bool), missingOnly bool) (kept, dropped int, err error) {
	keys, vals, err := readAll[K](src)
	if err != nil {
		return 0, 0, err
	}
	var have map[K]bool
	if missingOnly {
		dk, _, err := readAll[K](dst)
		if err != nil {
			return 0, 0, err
		}
		have = make(map[K]bool, len(dk))
		for _, k := range dk {
			have[k] = true
		}
	}
	type entry struct {
		k K
		v balancerCtValue
	}
	var out []entry
	for i, k := range keys {
		if have[k] {
			continue
		}
		v, ok := convert(vals[i])
		if !ok {
			dropped++
			continue
		}
		out = append(out, entry{k, v})
	}
	if missingOnly {
		// Few, and the new program may make the same entries meanwhile:
		// one at a time, and a newer entry wins.
		for _, e := range out {
			err := dst.Update(e.k, e.v, ebpf.UpdateNoExist)
			if errors.Is(err, ebpf.ErrKeyExist) {
				continue
			}
			if err != nil {
				return kept, dropped, err
			}
			kept++
		}
		return kept, dropped, nil
	}
	// Oldest first, so that if dst is smaller its LRU evicts the oldest.
	// last_seen is in jiffies and wraps: order by age from the newest.
	var newest uint32
	for _, e := range out {
		if int32(e.v.LastSeen-newest) > 0 {
			newest = e.v.LastSeen
		}
	}
	slices.SortStableFunc(out, func(a, b entry) int { return cmp.Compare(newest-b.v.LastSeen, newest-a.v.LastSeen) })
	ks := make([]K, len(out))
	vs := make([]balancerCtValue, len(out))
	for i, e := range out {
		ks[i], vs[i] = e.k, e.v
	}
	if err := writeSpread(dst, ks, vs); err != nil {
		return 0, dropped, err
	}
	return len(out), dropped, nil
}

// readAll reads a hash map whole, in batches.
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

// writeSpread writes entries into an LRU table with a free list per CPU
// (BPF_F_NO_COMMON_LRU): an insert takes an element from the free list of
// the CPU it runs on, which holds only max_entries/CPUs, and past that
// evicts that CPU's own entries. So the entries are dealt out to one
// thread per CPU this process may run on, each bound to its CPU, as the
// program's inserts were spread over the CPUs that took the packets.
func writeSpread[K any](m *ebpf.Map, keys []K, vals []balancerCtValue) error {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return fmt.Errorf("read cpu affinity: %w", err)
	}
	var cpus []int
	for c := 0; c < len(set)*64; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		cpus = []int{-1}
	}
	errs := make([]error, len(cpus))
	var wg sync.WaitGroup
	for i, cpu := range cpus {
		var ks []K
		var vs []balancerCtValue
		for j := i; j < len(keys); j += len(cpus) {
			ks = append(ks, keys[j])
			vs = append(vs, vals[j])
		}
		if len(ks) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if cpu >= 0 {
				// The thread keeps its affinity: it is never handed back to
				// the scheduler, and ends with this goroutine.
				runtime.LockOSThread()
				var one unix.CPUSet
				one.Set(cpu)
				if err := unix.SchedSetaffinity(0, &one); err != nil {
					errs[i] = fmt.Errorf("bind to cpu %d: %w", cpu, err)
					return
				}
			}
			const chunk = 4096
			for len(ks) > 0 {
				n := min(chunk, len(ks))
				if _, err := m.BatchUpdate(ks[:n], vs[:n], nil); err != nil {
					errs[i] = err
					return
				}
				ks, vs = ks[n:], vs[n:]
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// statTableV2 is the verdict table of layouts 1 and 2: the counters up to
// ct_guard.
type statTableV2 struct {
	Count [balancerFulcrumStatSTAT_CT_GUARD + 1]uint64
}

// copyCounters carries the per-CPU counters over: the verdict table whole
// (the same enum in every layout this build reads), a VIP's and a
// backend's to the index or id they have now. It returns what it reset.
func copyCounters(src, dst *tables) ([]string, error) {
	var reset []string
	switch src.stats.ValueSize() {
	case dst.stats.ValueSize():
		var v []balancerStatTable
		if err := src.stats.Lookup(uint32(0), &v); err != nil {
			return nil, fmt.Errorf("read verdict counters: %w", err)
		}
		if err := dst.stats.Put(uint32(0), v); err != nil {
			return nil, fmt.Errorf("write verdict counters: %w", err)
		}
	case uint32(binary.Size(statTableV2{})):
		// Counters are only ever added at the end of the enum: the old
		// table's are the same counters by index.
		var old []statTableV2
		if err := src.stats.Lookup(uint32(0), &old); err != nil {
			return nil, fmt.Errorf("read verdict counters: %w", err)
		}
		v := make([]balancerStatTable, len(old))
		for cpu := range old {
			copy(v[cpu].Count[:], old[cpu].Count[:])
		}
		if err := dst.stats.Put(uint32(0), v); err != nil {
			return nil, fmt.Errorf("write verdict counters: %w", err)
		}
	default:
		reset = append(reset, fmt.Sprintf("verdict counters: the old table has %d bytes a CPU, this one %d", src.stats.ValueSize(), dst.stats.ValueSize()))
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

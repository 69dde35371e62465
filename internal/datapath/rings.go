package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// ReadRings reads the Maglev ring of every VIP from the maps pinned in
// dir, as the fast path sees them: for each VIP, the address of the
// backend in each slot. Backend ids are left out, so that rings written by
// different daemons (which may number their backends differently) compare
// equal when they send each slot to the same backend. A slot of a ring
// without active backends reads as the invalid Addr. It reads the pins
// only: no daemon need run, and a running one is not disturbed.
func ReadRings(dir string) (map[VIP][]netip.Addr, error) {
	open := func(name string) (*ebpf.Map, error) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("read rings: open pinned %s: %w", name, err)
		}
		return m, nil
	}
	var maps []*ebpf.Map
	defer func() {
		for _, m := range maps {
			m.Close()
		}
	}()
	get := map[string]*ebpf.Map{}
	for _, name := range []string{balancerMapVipsV4, balancerMapVipsV6, balancerMapBackends, balancerMapRings} {
		m, err := open(name)
		if err != nil {
			return nil, err
		}
		maps = append(maps, m)
		get[name] = m
	}
	addrs := make(map[uint32]netip.Addr)
	err := eachBackend(get[balancerMapBackends], func(id uint32, b balancerBackend) {
		if b.Flags&uint8(balancerFulcrumBackendFlagsBACKEND_F_LIVE) != 0 {
			addrs[id] = backendAddr(b)
		}
	})
	if err != nil {
		return nil, err
	}
	indexes := make(map[VIP]uint32)
	if err := eachVIP(get[balancerMapVipsV4], get[balancerMapVipsV6], func(v VIP, m balancerVipMeta) {
		indexes[v] = uint32(m.Index)
	}); err != nil {
		return nil, err
	}
	out := make(map[VIP][]netip.Addr, len(indexes))
	for v, idx := range indexes {
		var id ebpf.MapID
		if err := get[balancerMapRings].Lookup(idx, &id); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				out[v] = nil // a VIP without backends has no ring
				continue
			}
			return nil, fmt.Errorf("read ring of vip %s: %w", v, err)
		}
		ring, err := ebpf.NewMapFromID(id)
		if err != nil {
			return nil, fmt.Errorf("read ring of vip %s: %w", v, err)
		}
		slots, err := readSlots(ring)
		ring.Close()
		if err != nil {
			return nil, fmt.Errorf("read ring of vip %s: %w", v, err)
		}
		r := make([]netip.Addr, len(slots))
		for i, bid := range slots {
			if bid == maglev.Unassigned {
				continue // no backend has weight: the slot drops
			}
			a, ok := addrs[bid]
			if !ok {
				return nil, fmt.Errorf("read ring of vip %s: slot %d names backend %d, which is not live", v, i, bid)
			}
			r[i] = a
		}
		out[v] = r
	}
	return out, nil
}

// readSlots reads a whole ring, in slot order.
func readSlots(ring *ebpf.Map) ([]uint32, error) {
	n := ring.MaxEntries()
	keys := make([]uint32, n)
	vals := make([]uint32, n)
	var cursor ebpf.MapBatchCursor
	got, err := ring.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, err
	}
	if got != int(n) {
		return nil, fmt.Errorf("read %d of %d slots", got, n)
	}
	out := make([]uint32, n)
	for i, k := range keys {
		out[k] = vals[i]
	}
	return out, nil
}

// RingDigest is the FNV-1a digest of a ring read by ReadRings: two rings
// have the same digest when each slot names the same backend address.
func RingDigest(ring []netip.Addr) uint64 {
	h := fnv.New64a()
	var n [4]byte
	for _, a := range ring {
		b := a.AsSlice()
		binary.LittleEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	return h.Sum64()
}

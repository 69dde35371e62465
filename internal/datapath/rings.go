package datapath

import (
	"encoding/binary"
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
// only: no daemon need run, and a running one is not disturbed. The maps
// are opened read-only but for the ring arena, which the kernel maps into
// memory only through a writable descriptor; it is mapped read-only.
func ReadRings(dir string) (map[VIP][]netip.Addr, error) {
	open := func(name string) (*ebpf.Map, error) {
		opts := &ebpf.LoadPinOptions{ReadOnly: name != balancerMapRingArena}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), opts)
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
	for _, name := range []string{balancerMapVipsV4, balancerMapVipsV6, balancerMapVipMetas, balancerMapBackends, balancerMapRingArena} {
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
	arena := get[balancerMapRingArena]
	size := arena.MaxEntries() * ringChunkSlots
	rings := make(map[VIP]extent)
	if err := eachVIP(get[balancerMapVipsV4], get[balancerMapVipsV6], get[balancerMapVipMetas], func(v VIP, m balancerVipMeta, _ uint32) {
		rings[v] = extent{m.RingOffset, m.RingSize}
	}); err != nil {
		return nil, err
	}
	out := make(map[VIP][]netip.Addr, len(rings))
	for v, e := range rings {
		slots, err := readExtent(arena, size, e)
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

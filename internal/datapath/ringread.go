package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// RingDigest reads the VIP's ring as the fast path sees it, from the
// kernel, and returns the FNV-1a digest of its slots' backend addresses
// (each in its 16-byte form; an unassigned slot, of a VIP with no backend
// of weight above zero, as 16 bytes of 0xff). Two datapaths that map every
// slot to the same backend give the same digest, whatever backend ids each
// assigned; a slot naming another VIP's backend or none is an error. It reads every slot, so it is
// for tests and diagnostics, not for a hot path.
func (d *Datapath) RingDigest(vip VIP) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.vips[vip]
	if !ok {
		return 0, fmt.Errorf("ring of vip %s: no such vip", vip)
	}
	var ring *ebpf.Map
	if err := d.objs.Rings.Lookup(uint32(e.index), &ring); err != nil {
		return 0, fmt.Errorf("ring of vip %s: %w", vip, err)
	}
	defer ring.Close()
	n := int(ring.MaxEntries())
	if n != int(e.cfg.RingSize) {
		return 0, fmt.Errorf("ring of vip %s: %d slots, want %d", vip, n, e.cfg.RingSize)
	}
	keys := make([]uint32, n)
	ids := make([]uint32, n)
	var cursor ebpf.MapBatchCursor
	got, err := ring.BatchLookup(&cursor, keys, ids, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, fmt.Errorf("ring of vip %s: %w", vip, err)
	}
	if got != n {
		return 0, fmt.Errorf("ring of vip %s: read %d of %d slots", vip, got, n)
	}
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i, id := range ids {
		if keys[i] != uint32(i) {
			return 0, fmt.Errorf("ring of vip %s: slot %d read out of order", vip, i)
		}
		addr := [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		if id != maglev.Unassigned {
			b, ok := e.byID[id]
			if !ok {
				return 0, fmt.Errorf("ring of vip %s: slot %d names backend id %d, not one of the vip's", vip, i, id)
			}
			addr = b.Addr.As16()
		}
		for _, c := range addr {
			h = (h ^ uint64(c)) * prime
		}
	}
	return h, nil
}

package datapath

import (
	"fmt"
	"net/netip"

	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// RingDigest reads the VIP's ring as the fast path sees it, from the
// kernel, and returns its RingDigest: two datapaths that map every slot to
// the same backend address give the same digest, whatever backend ids each
// assigned. A slot naming another VIP's backend is an error. It reads
// every slot, so it is for tests and diagnostics, not for a hot path.
func (d *Datapath) RingDigest(vip VIP) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.vips[vip]
	if !ok {
		return 0, fmt.Errorf("ring of vip %s: no such vip", vip)
	}
	if e.ring.size != e.cfg.RingSize {
		return 0, fmt.Errorf("ring of vip %s: %d slots, want %d", vip, e.ring.size, e.cfg.RingSize)
	}
	slots, err := d.arena.read(e.ring)
	if err != nil {
		return 0, fmt.Errorf("ring of vip %s: %w", vip, err)
	}
	addrs := make([]netip.Addr, len(slots))
	for i, id := range slots {
		if id == maglev.Unassigned {
			continue // no backend has weight: the slot drops
		}
		b, ok := e.byID[id]
		if !ok {
			return 0, fmt.Errorf("ring of vip %s: slot %d names backend id %d, not one of the vip's", vip, i, id)
		}
		addrs[i] = b.Addr
	}
	return RingDigest(addrs), nil
}

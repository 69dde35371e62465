package datapath

import (
	"sync/atomic"

	"github.com/cilium/ebpf"
)

// A ring that a swap retired is free once the swap returns: the update of
// the map of maps waited for an RCU grace period, and the fast path reads
// a ring only inside one (XDP runs in softirq with RCU held, BPF_PROG_RUN
// under rcu_read_lock), so no program still holds it. The next change of
// the same VIP mostly moves a few slots (adding or removing one of N
// backends moves about 1/N), so rather than writing a whole new ring it can
// rewrite the retired one where it differs and swap that in: what the
// fast path sees is still one whole ring or the other. The datapath keeps
// one such ring, of the VIP a change of one VIP last swapped, with its
// contents: bounded memory, whatever the number of VIPs.

// ringCache holds the rings made or kept ahead of the changes that need
// them: the spare (ringwrite.go) and the recycled ring.
type ringCache struct {
	spare    atomic.Pointer[ringWriter]
	recycled atomic.Pointer[recycledRing]
	// last is the table of the live ring of lastVIP, as the last change
	// of that one VIP swapped it in; nil when unknown. d.mu guards both.
	lastVIP VIP
	last    []uint32
}

// recycledRing is a retired ring of vip and what it holds.
type recycledRing struct {
	vip   VIP
	ring  *ebpf.Map
	table []uint32
}

// maxRewrite is the most slots a rewrite of a recycled ring writes, with a
// batched update at about 150 ns a slot; a change that moves more takes a
// fresh ring written by the program.
const maxRewrite = 8192

// takeRecycled returns the recycled ring if it is vip's and holds size
// slots.
func (d *Datapath) takeRecycled(vip VIP, size int) *recycledRing {
	r := d.cache.recycled.Load()
	if r == nil || r.vip != vip || len(r.table) != size || !d.cache.recycled.CompareAndSwap(r, nil) {
		return nil
	}
	return r
}

// rewrite makes the recycled ring hold table, writing the slots that
// differ; false (and nothing written) if they are more than maxRewrite.
func (r *recycledRing) rewrite(table []uint32) (bool, error) {
	var keys, values []uint32
	for i, id := range table {
		if r.table[i] == id {
			continue
		}
		if len(keys) == maxRewrite {
			return false, nil
		}
		keys, values = append(keys, uint32(i)), append(values, id)
	}
	if len(keys) == 0 {
		return true, nil
	}
	_, err := r.ring.BatchUpdate(keys, values, nil)
	return err == nil, err
}

// retiring returns the ring that the swaps will retire, to recycle, if
// they are of one VIP whose live ring's contents are known; nil otherwise.
// d.mu is held.
func (d *Datapath) retiring(swaps []*pendingVIP) *recycledRing {
	if len(swaps) != 1 {
		return nil
	}
	p := swaps[0]
	if p.old == nil || d.cache.last == nil || d.cache.lastVIP != p.e.vip || len(d.cache.last) != int(p.old.cfg.RingSize) {
		return nil
	}
	var ring *ebpf.Map
	if err := d.objs.Rings.Lookup(uint32(p.e.index), &ring); err != nil {
		return nil
	}
	return &recycledRing{vip: p.e.vip, ring: ring, table: d.cache.last}
}

// swapped keeps what the swaps leave for the next change: the retired
// ring (from retiring), if its swap worked, and the table now live if they
// were of one VIP. d.mu is held.
func (d *Datapath) swapped(swaps []*pendingVIP, retired *recycledRing) {
	ok := len(swaps) == 1 && swaps[0].swapErr == nil
	if retired != nil {
		if ok {
			if old := d.cache.recycled.Swap(retired); old != nil {
				old.ring.Close()
			}
		} else {
			retired.ring.Close() // still live, or its swap uncertain
		}
	}
	if len(swaps) == 0 {
		return // no ring changed: last, if known, is still live
	}
	d.cache.lastVIP, d.cache.last = VIP{}, nil
	if ok && swaps[0].table != nil {
		d.cache.lastVIP, d.cache.last = swaps[0].e.vip, swaps[0].table
	}
}

// forgetRing drops what the cache knows of vip's ring, when vip goes.
// d.mu is held.
func (d *Datapath) forgetRing(vip VIP) {
	if d.cache.lastVIP == vip {
		d.cache.lastVIP, d.cache.last = VIP{}, nil
	}
	if r := d.cache.recycled.Load(); r != nil && r.vip == vip && d.cache.recycled.CompareAndSwap(r, nil) {
		r.ring.Close()
	}
}

// closeRings releases the spare and the recycled ring.
func (d *Datapath) closeRings() {
	d.closeSpare()
	if r := d.cache.recycled.Swap(nil); r != nil {
		r.ring.Close()
	}
}

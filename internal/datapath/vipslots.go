package datapath

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
)

// A VIP's meta is published through vip_metas (bpf/maps.h): Go writes it
// into a slot no key names, then points the VIP's key in vips_v4/vips_v6 at
// the slot. The hash maps hold only the slot number, not the meta: the
// kernel reuses a freed hash element for the next insert at once, so a
// meta read through a hash value pointer could turn into another VIP's
// under a packet. The slot a key named before is retired and reused only a
// grace period later, as a retired ring extent is (arena.go), so a packet
// that read a slot number reads that slot whole and unchanged; the slot
// carries its key, which the packet checks, for the case where it read the
// number from an element already reused for another key (docs/datapath.md,
// "VIP publication").

// metaSlots allocates vip_metas' slots. The ring arena's reclaimer frees
// the retired ones with its extents, after the same grace period.
type metaSlots struct {
	mu      sync.Mutex
	free    []uint32 // a stack, lowest slot on top at first
	retired []uint32
	limit   uint32
}

func newMetaSlots(n uint32) *metaSlots {
	s := &metaSlots{free: make([]uint32, n), limit: n}
	for i := range s.free {
		s.free[i] = n - 1 - uint32(i)
	}
	return s
}

func (s *metaSlots) take() (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.free) == 0 {
		return 0, false
	}
	slot := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	return slot, true
}

// adopt takes the slots that pinned VIPs name (named: slot to VIP) as
// used, and retires every other one: the last daemon may have retired
// some just before it stopped, so none is free before a grace period has
// passed. An out-of-range slot is an error; the slots are then as before.
func (s *metaSlots) adopt(named map[uint32]VIP) error {
	for slot, vip := range named {
		if slot >= s.limit {
			return fmt.Errorf("adopt vip %s: its meta slot %d is outside vip_metas' %d slots", vip, slot, s.limit)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free = s.free[:0]
	s.retired = s.retired[:0]
	for slot := s.limit; slot > 0; slot-- {
		if _, ok := named[slot-1]; !ok {
			s.retired = append(s.retired, slot-1)
		}
	}
	return nil
}

// release frees a slot no key ever named, at once.
func (s *metaSlots) release(slot uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free = append(s.free, slot)
}

// takeRetired hands the retired slots to a reclaim, which frees them
// (putBack) after a grace period, or gives them back on failure.
func (s *metaSlots) takeRetired() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch := s.retired
	s.retired = nil
	return batch
}

func (s *metaSlots) putBack(batch []uint32, free bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if free {
		s.free = append(s.free, batch...)
	} else {
		s.retired = append(s.retired, batch...)
	}
}

// allocSlot returns a free slot of vip_metas. Short of one, it waits for
// the retired slots to be freed, then fails.
func (a *ringArena) allocSlot() (uint32, error) {
	if slot, ok := a.slots.take(); ok {
		return slot, nil
	}
	if err := a.reclaim(); err != nil {
		return 0, fmt.Errorf("vip meta slot: all %d are in use, and freeing retired ones failed: %w", a.slots.limit, err)
	}
	if slot, ok := a.slots.take(); ok {
		return slot, nil
	}
	return 0, fmt.Errorf("vip meta slot: all %d are in use or retired less than a grace period ago", a.slots.limit)
}

// retireSlot hands over a slot that a key named until an update that has
// returned: it is freed after the next grace period.
func (a *ringArena) retireSlot(slot uint32) {
	a.slots.mu.Lock()
	a.slots.retired = append(a.slots.retired, slot)
	a.slots.mu.Unlock()
	a.kickReclaim()
}

// vipSlotValue is the vip_metas value of a VIP's meta: the meta and the
// VIP's key as its hash map holds it.
func vipSlotValue(vip VIP, meta balancerVipMeta) balancerVipSlot {
	v := balancerVipSlot{Meta: meta}
	key := unsafe.Slice((*byte)(unsafe.Pointer(&v.Key)), unsafe.Sizeof(v.Key))
	if vip.Addr.Is4() {
		k := vipKey4(vip)
		copy(key, unsafe.Slice((*byte)(unsafe.Pointer(&k)), unsafe.Sizeof(k)))
	} else {
		k := vipKey6(vip)
		copy(key, unsafe.Slice((*byte)(unsafe.Pointer(&k)), unsafe.Sizeof(k)))
	}
	return v
}

// putVIPKey publishes a VIP's meta: into a fresh slot, then the key points
// at it, and the slot it named before is retired. The address's prefilter
// bit is set first, so no packet to it is passed to the host once the VIP
// is there. On failure e keeps its slot; the fresh one is retired (the
// key may name it: an update that failed may or may not have taken).
func (d *Datapath) putVIPKey(e *vipEntry, meta balancerVipMeta) error {
	slot, err := d.arena.allocSlot()
	if err != nil {
		return err
	}
	if err := d.objs.VipMetas.Put(slot, vipSlotValue(e.vip, meta)); err != nil {
		d.arena.slots.release(slot)
		return fmt.Errorf("write vip meta slot %d: %w", slot, err)
	}
	d.hosts.hold(e.vip.Addr)
	if e.vip.Addr.Is4() {
		err = d.objs.VipsV4.Put(vipKey4(e.vip), slot)
	} else {
		err = d.objs.VipsV6.Put(vipKey6(e.vip), slot)
	}
	if err != nil {
		d.arena.retireSlot(slot)
		return err
	}
	if e.hasSlot {
		d.arena.retireSlot(e.slot)
	}
	e.slot, e.hasSlot = slot, true
	return nil
}

// deleteVIPKey removes a VIP's key; the slot it named is retired.
func (d *Datapath) deleteVIPKey(e *vipEntry) error {
	var err error
	if e.vip.Addr.Is4() {
		err = d.objs.VipsV4.Delete(vipKey4(e.vip))
	} else {
		err = d.objs.VipsV6.Delete(vipKey6(e.vip))
	}
	if err != nil {
		return err
	}
	if e.hasSlot {
		d.arena.retireSlot(e.slot)
		e.hasSlot = false
	}
	return nil
}

// vipMetaOf reads the meta a VIP key's value names: the value is a slot of
// metas (layout 5 on), or, in the pins of older layouts, the meta itself
// (read by eachVIP).
func vipMetaOf(metas *ebpf.Map, slot uint32) (balancerVipMeta, error) {
	if metas == nil {
		return balancerVipMeta{}, fmt.Errorf("vip meta slot %d: the pins have no vip_metas", slot)
	}
	var v balancerVipSlot
	if err := metas.Lookup(slot, &v); err != nil {
		return balancerVipMeta{}, fmt.Errorf("read vip meta slot %d: %w", slot, err)
	}
	return v.Meta, nil
}

package datapath

import (
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Every VIP's Maglev ring lives in one map, the ring arena (bpf/maps.h): an
// array that this process maps (BPF_F_MMAPABLE), where the VIP's ring is the extent of
// slots its meta names (vip_meta.ring_offset, .ring_size). A new ring is
// written into a free extent with one memory copy and published by the
// update of the VIP's key, whose new value names it: no map is created, no
// program loaded, and no update waits for an RCU grace period, where a map
// of maps waits one (~9 ms here) after each update.
//
// The extent a publication retires is reused only after a grace period has
// passed since: a program that read the old meta may still be reading the
// old extent until then (XDP runs inside an RCU read-side section, and so
// does BPF_PROG_RUN). A goroutine waits the grace periods and frees the
// retired extents, off the changes' path; a change that finds no free
// extent large enough waits for it (docs/datapath.md, "Ring publication").

// ringChunkSlots is RING_CHUNK_SLOTS: the slots of one arena element.
var ringChunkSlots = uint32(len(balancerRingChunk{}.Slot))

// DefaultRingSlots is the arena's default capacity in slots (64 Mi, 256
// MiB): RING_ARENA_CHUNKS × RING_CHUNK_SLOTS as compiled, 1023 rings of the
// default size.
const DefaultRingSlots = 1 << 26

// ArenaCapacity returns the capacity Load gives the arena when asked for
// slots (0 = DefaultRingSlots): rounded up to whole elements of
// RING_CHUNK_SLOTS. The config resolves its setting with it, so that what
// it checks is what Load allocates.
func ArenaCapacity(slots uint32) uint32 {
	if slots == 0 {
		slots = DefaultRingSlots
	}
	// In 64 bits: slots near 2^32 would wrap to 0 in 32.
	n := (uint64(slots) + uint64(ringChunkSlots) - 1) / uint64(ringChunkSlots) * uint64(ringChunkSlots)
	return uint32(min(n, math.MaxUint32/uint64(ringChunkSlots)*uint64(ringChunkSlots)))
}

// extent is a run of arena slots.
type extent struct {
	off, size uint32
}

func (e extent) end() uint32 { return e.off + e.size }

// ringArena owns the allocation of the arena map's extents, and writes
// and reads them through mappings of their pages: a ring's pages are mapped
// only while it is written or read, so the arena does not count whole in
// the daemon's resident memory, as one mapping of it would (256 MiB by
// default), for one mmap and munmap per ring (tens of microseconds).
type ringArena struct {
	m    *ebpf.Map
	size uint32 // slots

	mu      sync.Mutex
	free    []extent // by offset, no two adjacent
	retired []extent // unpublished, not yet past a grace period
	// slots are vip_metas' slots (vipslots.go), retired and freed with
	// the extents.
	slots *metaSlots

	// reclaimMu is held for the whole of a reclaim, so that a change
	// short of room that reclaims waits for one in flight to free its
	// extents first.
	reclaimMu sync.Mutex
	// fence is a map of maps with one slot, and fenceInner what is put
	// there: an update of a map of maps returns only after an RCU grace
	// period (the kernel's maybe_wait_bpf_programs, its promise that no
	// program still uses the old value when the update returns).
	fence, fenceInner *ebpf.Map
	kick              chan struct{}
	stop              chan struct{}
	done              chan struct{}
	closeOnce         sync.Once
}

// newRingArena takes the arena map and the number of vip_metas' slots.
// Every slot of both is free; adopt marks the extents (claim) and meta
// slots (metaSlots.adopt) pinned VIPs use.
func newRingArena(m *ebpf.Map, metaSlotCount uint32) (*ringArena, error) {
	inner, err := ebpf.NewMap(&ebpf.MapSpec{Name: "fulcrum_fence", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("create the grace-period fence: %w", err)
	}
	fence, err := ebpf.NewMap(&ebpf.MapSpec{Name: "fulcrum_fence", Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1,
		InnerMap: &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}})
	if err != nil {
		inner.Close()
		return nil, fmt.Errorf("create the grace-period fence: %w", err)
	}
	size := m.MaxEntries() * ringChunkSlots
	a := &ringArena{m: m, size: size, free: []extent{{0, size}}, slots: newMetaSlots(metaSlotCount), fence: fence, fenceInner: inner,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go a.reclaimer()
	return a, nil
}

// close stops the reclaimer; the map and its memory are the objects'.
func (a *ringArena) close() {
	a.closeOnce.Do(func() {
		close(a.stop)
		<-a.done
		a.fence.Close()
		a.fenceInner.Close()
	})
}

// alloc returns a free extent of n slots, the first that fits. Short of
// room, it waits for the retired extents to be freed, then fails.
func (a *ringArena) alloc(n uint32) (extent, error) {
	if e, ok := a.take(n); ok {
		return e, nil
	}
	if err := a.reclaim(); err != nil {
		return extent{}, fmt.Errorf("ring of %d slots: the ring arena is full, and freeing retired rings failed: %w", n, err)
	}
	if e, ok := a.take(n); ok {
		return e, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var free, largest uint32
	for _, f := range a.free {
		free += f.size
		largest = max(largest, f.size)
	}
	return extent{}, fmt.Errorf("ring of %d slots: the ring arena is full: %d of its %d slots are free, in runs of at most %d (raise the ring arena's capacity: ring_arena_slots in the config, datapath.Options.RingSlots)",
		n, free, a.size, largest)
}

// take allocates n slots from the first free run that holds them.
func (a *ringArena) take(n uint32) (extent, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, f := range a.free {
		if f.size < n {
			continue
		}
		if f.size == n {
			a.free = slices.Delete(a.free, i, i+1)
		} else {
			a.free[i] = extent{f.off + n, f.size - n}
		}
		return extent{f.off, n}, true
	}
	return extent{}, false
}

// claim marks e used, for a ring adopted from pins: it must be free.
func (a *ringArena) claim(e extent) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, f := range a.free {
		if f.off > e.off || f.end() < e.end() || e.end() < e.off {
			continue
		}
		rest := []extent{}
		if e.off > f.off {
			rest = append(rest, extent{f.off, e.off - f.off})
		}
		if f.end() > e.end() {
			rest = append(rest, extent{e.end(), f.end() - e.end()})
		}
		a.free = slices.Replace(a.free, i, i+1, rest...)
		return nil
	}
	return fmt.Errorf("ring at slots %d to %d: outside the arena's %d slots, or overlapping another ring", e.off, int64(e.end())-1, a.size)
}

// release frees an extent no meta ever named, at once.
func (a *ringArena) release(e extent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.insertFree(e)
}

// insertFree adds e to the free runs, merged with its neighbours. a.mu is
// held.
func (a *ringArena) insertFree(e extent) {
	i, _ := slices.BinarySearchFunc(a.free, e.off, func(f extent, off uint32) int { return int(int64(f.off) - int64(off)) })
	if i > 0 && a.free[i-1].end() == e.off {
		i--
		e = extent{a.free[i].off, a.free[i].size + e.size}
		a.free = slices.Delete(a.free, i, i+1)
	}
	if i < len(a.free) && e.end() == a.free[i].off {
		e.size += a.free[i].size
		a.free = slices.Delete(a.free, i, i+1)
	}
	a.free = slices.Insert(a.free, i, e)
}

// retire hands over an extent that a meta named until an update that has
// returned: it is freed after the next grace period.
func (a *ringArena) retire(e extent) {
	if e.size == 0 {
		return
	}
	a.mu.Lock()
	a.retired = append(a.retired, e)
	a.mu.Unlock()
	a.kickReclaim()
}

// kickReclaim asks the reclaimer for a reclaim.
func (a *ringArena) kickReclaim() {
	select {
	case a.kick <- struct{}{}:
	default: // a reclaim is due already
	}
}

// reclaimer frees retired extents in the background, a grace period after
// their retirement.
func (a *ringArena) reclaimer() {
	defer close(a.done)
	for {
		select {
		case <-a.stop:
			return
		case <-a.kick:
			// A failure leaves the extents retired, for the next kick
			// or a change short of room to try again.
			_ = a.reclaim()
		}
	}
}

// reclaim frees every extent and meta slot retired before it was called,
// after a grace period.
func (a *ringArena) reclaim() error {
	a.reclaimMu.Lock()
	defer a.reclaimMu.Unlock()
	a.mu.Lock()
	batch := a.retired
	a.retired = nil
	a.mu.Unlock()
	slots := a.slots.takeRetired()
	if len(batch) == 0 && len(slots) == 0 {
		return nil
	}
	if err := a.gracePeriod(); err != nil {
		a.mu.Lock()
		a.retired = append(a.retired, batch...)
		a.mu.Unlock()
		a.slots.putBack(slots, false)
		return err
	}
	a.mu.Lock()
	for _, e := range batch {
		a.insertFree(e)
	}
	a.mu.Unlock()
	a.slots.putBack(slots, true)
	return nil
}

// gracePeriod returns after an RCU grace period: every program that was
// running when it was called has finished.
func (a *ringArena) gracePeriod() error {
	if err := a.fence.Put(uint32(0), a.fenceInner); err != nil {
		return fmt.Errorf("wait for an rcu grace period: %w", err)
	}
	return nil
}

// write copies table into the extent, which no meta names.
func (a *ringArena) write(e extent, table []uint32) error {
	if uint32(len(table)) != e.size {
		return fmt.Errorf("write ring: %d slots into an extent of %d", len(table), e.size)
	}
	return withExtent(a.m, a.size, e, true, func(slots []uint32) { copy(slots, table) })
}

// read returns a copy of the extent's slots.
func (a *ringArena) read(e extent) ([]uint32, error) {
	return readExtent(a.m, a.size, e)
}

// readExtent reads an extent of the arena map m, of size slots.
func readExtent(m *ebpf.Map, size uint32, e extent) ([]uint32, error) {
	out := make([]uint32, e.size)
	err := withExtent(m, size, e, false, func(slots []uint32) { copy(out, slots) })
	return out, err
}

// withExtent calls f with the extent's slots, in a mapping of the pages
// of the arena map m (of size slots) that hold them, writable if asked.
func withExtent(m *ebpf.Map, size uint32, e extent, writable bool, f func(slots []uint32)) error {
	if e.end() > size || e.end() < e.off {
		return fmt.Errorf("ring at slots %d to %d: outside the arena's %d slots", e.off, int64(e.end())-1, size)
	}
	if e.size == 0 {
		f(nil)
		return nil
	}
	page := uint64(os.Getpagesize())
	first, end := uint64(e.off)*4, uint64(e.end())*4
	start := first / page * page
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	b, err := unix.Mmap(m.FD(), int64(start), int((end+page-1)/page*page-start), prot, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map ring at slot %d: %w", e.off, err)
	}
	f(unsafe.Slice((*uint32)(unsafe.Pointer(&b[first-start])), e.size))
	if err := unix.Munmap(b); err != nil {
		return fmt.Errorf("unmap ring at slot %d: %w", e.off, err)
	}
	return nil
}

// slotBytes is the memory of slots as bytes, in the host's order, which is
// the program's.
func slotBytes(slots []uint32) []byte {
	if len(slots) == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(slots))), len(slots)*4)
}

// ArenaStats is how the ring arena's slots are spent.
type ArenaStats struct {
	// Slots is the capacity, RingSlots rounded up to whole elements.
	Slots uint32
	// Used are the slots of rings that a VIP's meta names, or that a
	// change has written and not yet published.
	Used uint32
	// Retired are the slots of rings no meta names any more, freed a
	// grace period after their retirement (milliseconds, unless the
	// reclaim fails).
	Retired uint32
	// Free are the slots a new ring may take (though a ring needs one
	// run of them: see the error of a change that finds none).
	Free uint32
}

// RingArena returns how the ring arena's slots are spent now.
func (d *Datapath) RingArena() ArenaStats {
	free, retired := d.arena.freeSlots()
	return ArenaStats{Slots: d.arena.size, Used: d.arena.size - free - retired, Retired: retired, Free: free}
}

// freeSlots returns how many slots are free and how many retired.
func (a *ringArena) freeSlots() (free, retired uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, f := range a.free {
		free += f.size
	}
	for _, r := range a.retired {
		retired += r.size
	}
	return free, retired
}

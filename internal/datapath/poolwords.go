package datapath

import (
	"fmt"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// poolWords is pool_rings mapped into this process: one __u64 per pool id,
// packing the pool's ring (bpf/consts.h POOL_RING_*). Go publishes a pool
// with one 8-byte atomic store into the map's memory, never with a map
// update, whose memcpy is not single-copy atomic: the program's one load
// then sees the old word or the new one, whole. An array element is never
// freed, so unlike a hash map's value it cannot turn into another pool's
// under a reader; the extents a word stops naming are retired through the
// arena (a grace period) before reuse, as a VIP's are. Guarded by the
// datapath's mu.
type poolWords struct {
	mem   []byte
	words []uint64
}

// The packing of a pool word: bpf/consts.h POOL_RING_SIZE_SHIFT,
// POOL_RING_SIZE_MASK, POOL_RING_FLAGS_SHIFT.
const (
	poolSizeShift  = 32
	poolSizeMask   = 1<<24 - 1
	poolFlagsShift = 56
	poolPresent    = uint8(balancerFulcrumPoolFlagsPOOL_F_PRESENT)
)

// poolWord packs a pool: its ring's extent and its flags (without
// POOL_F_PRESENT, which it adds). An offset fits 32 bits (the arena holds
// at most 2^30 slots) and a size 24 (a Maglev size is at most 131071).
func poolWord(ring extent, flags uint8) uint64 {
	return uint64(ring.off) | uint64(ring.size&poolSizeMask)<<poolSizeShift | uint64(flags|poolPresent)<<poolFlagsShift
}

// unpackPool returns a pool word's extent and flags (with POOL_F_PRESENT
// cleared), and whether the word is a pool.
func unpackPool(w uint64) (ring extent, flags uint8, present bool) {
	f := uint8(w >> poolFlagsShift)
	return extent{uint32(w), uint32(w>>poolSizeShift) & poolSizeMask}, f &^ poolPresent, f&poolPresent != 0
}

// openPoolWords maps pool_rings writable, its words as they are (adopt
// reads them).
func openPoolWords(m *ebpf.Map) (*poolWords, error) {
	mem, words, err := mapArray[uint64](m, true)
	if err != nil {
		return nil, fmt.Errorf("pool_rings: %w", err)
	}
	return &poolWords{mem: mem, words: words}, nil
}

func (p *poolWords) close() {
	if p != nil && p.mem != nil {
		_ = unix.Munmap(p.mem)
		p.mem, p.words = nil, nil
	}
}

// load returns pool id's word; 0 for an id past the map.
func (p *poolWords) load(id uint32) uint64 {
	if int(id) >= len(p.words) {
		return 0
	}
	return atomic.LoadUint64(&p.words[id])
}

// store publishes pool id's word (0: no pool).
func (p *poolWords) store(id uint32, w uint64) error {
	if int(id) >= len(p.words) {
		return fmt.Errorf("pool id %d: pool_rings holds %d", id, len(p.words))
	}
	atomic.StoreUint64(&p.words[id], w)
	return nil
}

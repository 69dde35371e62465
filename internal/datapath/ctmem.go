package datapath

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Go writes the connection table the way the program does: one way at a
// time, its two words stored with 8-byte atomic operations through a
// writable mapping of the table (the tables are BPF_F_MMAPABLE), in the
// program's order. A map update writes a whole 64-byte bucket, so writing
// one way that way (read the bucket, change the way, write it back) undid
// whatever a packet wrote into another way of the bucket in between: a new
// entry, a state change (TestGoWritesKeepPacketWrites counted 233 to 1738
// packets' writes undone that way in each of five runs).
//
// The words are compare-and-swapped, not just stored, against what the
// read that chose the way found, so that a packet's write to the same way
// that lands between Go's read and Go's stores wins, whole:
//
//   - meta first (the high tag half: a reader between the two stores sees
//     the old ident with the new tag half, a miss, as bpf/conntrack.h
//     ct_write), then ident. Either swap failing means another writer
//     changed the way since the read: Go puts back what it stored, if it
//     is still there, and chooses again from a fresh read.
//   - After both swaps, meta is read again: a packet may have stored its
//     meta between them (a ct_touch of the entry Go replaces, or a new
//     entry whose ident follows), and then the way is the packet's and
//     Go takes its ident back.
//   - An entry is deleted by swapping ident to 0 (an empty way in one
//     store), then meta to 0 unless a packet changed it since.
//
// What remains is the race the program has with itself on two CPUs: a
// packet that read the bucket before Go's write and chose the same way
// (empty, stale or expired when it read it) stores its entry over Go's
// once Go's has landed. The program's write wins; Go's entry is lost as if
// evicted, and the flow takes its ring at its next packet. The counts then
// keep Go's +1 for an entry no longer there (the packet saw no live entry
// to take off), and the tuple Go recorded for the way may land after the
// packet's, which hides the packet's entry from the walks until its flow
// writes it again; the periodic walk (CorrectCounts) corrects the counts
// either way. Go writes nothing a packet does not also write, so a torn
// read is still a miss.

// ctRetries bounds how often one write chooses again after another writer
// changed its way: each try spans a few hundred nanoseconds, and only a
// write to the very same way in that window fails one.
const ctRetries = 16

// ctMem is the writable mapping of one family's buckets and tuple record.
type ctMem struct {
	bmem, kmem []byte
	buckets    []balancerCtBucket
	k4         []balancerCtKeyV4
	k6         []balancerCtKeyV6
}

// ctMaps holds the mappings of both families, made at the first write
// (most daemons never install or flush) and unmapped by Close. Writers
// hold mu shared, so Close cannot unmap memory a write is storing to.
type ctMaps struct {
	mu     sync.RWMutex
	v4, v6 *ctMem
	closed bool
}

// ctWriter returns the mapping of the flow family's table with d.ct.mu held
// shared; the caller calls done when its writes are over.
func (d *Datapath) ctWriter(v4 bool) (t *ctMem, done func(), err error) {
	d.ct.mu.RLock()
	if t := d.ct.of(v4); t != nil {
		return t, d.ct.mu.RUnlock, nil
	}
	d.ct.mu.RUnlock()
	d.ct.mu.Lock()
	if d.ct.closed {
		d.ct.mu.Unlock()
		return nil, nil, errors.New("write the connection table: the datapath is closed")
	}
	if d.ct.of(v4) == nil {
		buckets, keys := ctTables(v4, &d.objs)
		m, err := mapCT(buckets, keys, v4)
		if err != nil {
			d.ct.mu.Unlock()
			return nil, nil, err
		}
		if v4 {
			d.ct.v4 = m
		} else {
			d.ct.v6 = m
		}
	}
	d.ct.mu.Unlock()
	return d.ctWriter(v4)
}

func (c *ctMaps) of(v4 bool) *ctMem {
	if v4 {
		return c.v4
	}
	return c.v6
}

// close unmaps both tables; later writes fail.
func (c *ctMaps) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.v4.close()
	c.v6.close()
	c.v4, c.v6, c.closed = nil, nil, true
}

// mapCT maps a family's buckets and tuple record writable.
func mapCT(buckets, keys *ebpf.Map, v4 bool) (*ctMem, error) {
	t := &ctMem{}
	var err error
	if t.bmem, t.buckets, err = mapArray[balancerCtBucket](buckets, true); err != nil {
		return nil, err
	}
	if v4 {
		t.kmem, t.k4, err = mapArray[balancerCtKeyV4](keys, true)
	} else {
		t.kmem, t.k6, err = mapArray[balancerCtKeyV6](keys, true)
	}
	if err != nil {
		_ = unix.Munmap(t.bmem)
		return nil, err
	}
	return t, nil
}

func (t *ctMem) close() {
	if t != nil {
		_ = unix.Munmap(t.bmem)
		_ = unix.Munmap(t.kmem)
	}
}

// mapArray maps an mmapable array map whole and returns the mapping and
// its elements as Vs: the Go type must be exactly one element (a value
// rounded up to 8 bytes). Only the pages touched become resident in this
// process; they are the kernel's own, not a copy.
func mapArray[V any](m *ebpf.Map, writable bool) ([]byte, []V, error) {
	var zero V
	size := int(unsafe.Sizeof(zero))
	if m.Flags()&unix.BPF_F_MMAPABLE == 0 {
		return nil, nil, fmt.Errorf("map %s: not mmapable", m)
	}
	if size != int(m.ValueSize()) || size%8 != 0 {
		return nil, nil, fmt.Errorf("map %s: %d-byte values, want %d (a multiple of 8)", m, m.ValueSize(), size)
	}
	n := int(m.MaxEntries())
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	page := os.Getpagesize()
	mem, err := unix.Mmap(m.FD(), 0, (n*size+page-1)/page*page, prot, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", m, err)
	}
	return mem, unsafe.Slice((*V)(unsafe.Pointer(&mem[0])), n), nil
}

// load reads bucket i, each word once and atomically, as the program's
// readers do (a way being rewritten may read torn: its tag halves then
// disagree).
func (t *ctMem) load(i uint32) (b balancerCtBucket) {
	m := &t.buckets[i]
	for w := range ctWays {
		b.Ident[w] = atomic.LoadUint64(&m.Ident[w])
		b.Meta[w] = atomic.LoadUint64(&m.Meta[w])
	}
	return b
}

// put stores v for the flow at p in way w, which the read seen held;
// false if another writer changed the way since (nothing of Go's is left
// in it then: choose again from a new read). It records the flow's tuple
// once the entry has landed.
func (t *ctMem) put(f Flow, p ctPlace, w int, seen *balancerCtBucket, v balancerCtValue) bool {
	m := &t.buckets[p.bucket]
	ident, meta := p.encode(v)
	oldIdent, oldMeta := seen.Ident[w], seen.Meta[w]
	if !atomic.CompareAndSwapUint64(&m.Meta[w], oldMeta, meta) {
		return false
	}
	if !atomic.CompareAndSwapUint64(&m.Ident[w], oldIdent, ident) {
		// A writer stored its ident since the read, its meta before
		// ours (ours swapped the value the read saw: then put it back)
		// or after (then it is there).
		atomic.CompareAndSwapUint64(&m.Meta[w], meta, oldMeta)
		return false
	}
	if atomic.LoadUint64(&m.Meta[w]) != meta {
		// A packet stored meta between our two swaps: the way is its
		// (a touch of the entry read, or a new entry whose ident is on
		// its way). Take our ident back unless that came already.
		atomic.CompareAndSwapUint64(&m.Ident[w], ident, oldIdent)
		return false
	}
	slot := p.bucket*ctWays + uint32(w)
	if t.k4 != nil {
		t.k4[slot] = keyV4(f)
	} else {
		t.k6[slot] = keyV6(f)
	}
	return true
}

// clear empties way w of bucket i if it still holds the entry the read
// seen found there (its tag and backend: a packet's touch of meta since
// does not stop the delete). It returns the way's meta as the delete
// found it, and whether it deleted.
func (t *ctMem) clear(i uint32, w int, seen *balancerCtBucket) (meta uint64, ok bool) {
	m := &t.buckets[i]
	if !atomic.CompareAndSwapUint64(&m.Ident[w], seen.Ident[w], 0) {
		return 0, false
	}
	meta = atomic.LoadUint64(&m.Meta[w])
	// Tidy only: an empty way's meta means nothing. A writer that chose
	// the way since stores its own, which stays.
	atomic.CompareAndSwapUint64(&m.Meta[w], meta, 0)
	return meta, true
}

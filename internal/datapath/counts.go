package datapath

import (
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The fast path keeps each backend's connection counts in backend_conns
// (bpf/counts.h): +1 as it makes an entry, a move between active and
// inactive as an entry's state crosses established, -1 as it overwrites a
// live entry. What it cannot see, an entry expiring in place, the walk of
// the table corrects (CorrectCounts). Go adjusts the counts for the
// entries it writes or deletes itself (InstallSynced, deleteConntrack).
// The map is mmapable: this process maps it once and reads and adds with
// atomic operations, the same the program uses, without a syscall.

// connCounts is the mapping of backend_conns.
type connCounts struct {
	mem []byte
	c   []balancerConnCount // by backend id
}

// openCounts maps m (backend_conns) whole: 16 bytes a backend id, 4 MiB at
// the compiled capacity, of which only the touched pages are resident.
func openCounts(m *ebpf.Map) (*connCounts, error) {
	n := int(m.MaxEntries())
	size := n * int(unsafe.Sizeof(balancerConnCount{}))
	page := os.Getpagesize()
	mem, err := unix.Mmap(m.FD(), 0, (size+page-1)/page*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the connection counts: %w", err)
	}
	return &connCounts{mem: mem, c: unsafe.Slice((*balancerConnCount)(unsafe.Pointer(&mem[0])), n)}, nil
}

func (k *connCounts) close() {
	if k != nil && k.mem != nil {
		_ = unix.Munmap(k.mem)
		k.mem, k.c = nil, nil
	}
}

// read returns backend id's counts as the fast path has them (signed:
// drift between walks may take one below 0).
func (k *connCounts) read(id uint32) (active, inactive int64) {
	if int(id) >= len(k.c) {
		return 0, 0
	}
	return atomic.LoadInt64(&k.c[id].Active), atomic.LoadInt64(&k.c[id].Inactive)
}

// add adds da and di to backend id's counts.
func (k *connCounts) add(id uint32, da, di int64) {
	if int(id) >= len(k.c) {
		return
	}
	if da != 0 {
		atomic.AddInt64(&k.c[id].Active, da)
	}
	if di != 0 {
		atomic.AddInt64(&k.c[id].Inactive, di)
	}
}

// addState counts d entries in state s's class for backend id.
func (k *connCounts) addState(id uint32, s ConnState, d int64) {
	if s.Active() {
		k.add(id, d, 0)
	} else {
		k.add(id, 0, d)
	}
}

// reset zeroes backend id's counts: an id taken by a new backend starts
// from nothing (the entries of its previous owner are stale).
func (k *connCounts) reset(id uint32) {
	if int(id) < len(k.c) {
		atomic.StoreInt64(&k.c[id].Active, 0)
		atomic.StoreInt64(&k.c[id].Inactive, 0)
	}
}

// countOf converts a signed fast-path count into a ConnCount.
func countOf(active, inactive int64) ConnCount {
	return ConnCount{Active: uint64(max(active, 0)), Inactive: uint64(max(inactive, 0))}
}

// BackendCounts returns every live backend's connection counts as the fast
// path keeps them, by VIP (VIPs with a connection table only): current to
// the packet, corrected by the last walk for entries that expired in
// place (docs/connections.md, "Counts, listing and drain").
func (d *Datapath) BackendCounts() map[VIP]map[netip.Addr]ConnCount {
	owners := d.connOwners()
	out := make(map[VIP]map[netip.Addr]ConnCount)
	for id, o := range owners {
		m := out[o.vip]
		if m == nil {
			m = make(map[netip.Addr]ConnCount)
			out[o.vip] = m
		}
		m[o.addr] = countOf(d.counts.read(id))
	}
	return out
}

// CorrectCounts walks the connection table, counts each backend's live
// entries, and corrects the fast path's counts by what they missed. The
// packets keep changing the counts while the walk runs, so a count is not
// overwritten: it is moved by the difference between the walk's result
// and the count read as the walk started. Changes made during the walk
// are then kept, and the count after the correction is off by at most
// the entries of that backend that changed (made, moved, removed) during
// the walk, which the walk may have seen before or after their change.
// It returns the walk's counts.
func (d *Datapath) CorrectCounts() (map[VIP]map[netip.Addr]ConnCount, error) {
	owners := d.connOwners()
	start := make(map[uint32][2]int64, len(owners))
	for id := range owners {
		a, i := d.counts.read(id)
		start[id] = [2]int64{a, i}
	}
	walked := make(map[uint32]*[2]int64, len(owners))
	err := d.scanLive(func(c *Conn) (bool, error) {
		w := walked[c.id]
		if w == nil {
			w = new([2]int64)
			walked[c.id] = w
		}
		if c.State.Active() {
			w[0]++
		} else {
			w[1]++
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[VIP]map[netip.Addr]ConnCount)
	for id, o := range owners {
		var w [2]int64
		if p := walked[id]; p != nil {
			w = *p
		}
		s := start[id]
		d.counts.add(id, w[0]-s[0], w[1]-s[1])
		if w != [2]int64{} {
			m := out[o.vip]
			if m == nil {
				m = make(map[netip.Addr]ConnCount)
				out[o.vip] = m
			}
			m[o.addr] = countOf(w[0], w[1])
		}
	}
	return out, nil
}

// countReplace adjusts the counts for a write of entry v into a way that
// held old: -1 for old if it was live (the fast path still counted it),
// +1 for v unless it is empty.
func (d *Datapath) countReplace(old balancerCtValue, oldLive bool, v *balancerCtValue) {
	if oldLive {
		d.counts.addState(old.Backend, ConnState(old.State&3), -1)
	}
	if v != nil {
		d.counts.addState(v.Backend, ConnState(v.State&3), 1)
	}
}

package datapath

import (
	"fmt"
	"net/netip"
	"sync/atomic"

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

// openCounts maps m (backend_conns) whole: 32 bytes a backend id, 8 MiB at
// the compiled capacity, of which only the touched pages are resident.
func openCounts(m *ebpf.Map) (*connCounts, error) {
	mem, c, err := mapArray[balancerConnCount](m, true)
	if err != nil {
		return nil, fmt.Errorf("map the connection counts: %w", err)
	}
	return &connCounts{mem: mem, c: c}, nil
}

func (k *connCounts) close() {
	if k != nil && k.mem != nil {
		_ = unix.Munmap(k.mem)
		k.mem, k.c = nil, nil
	}
}

// classes are a backend's counts as the fast path keeps them: active
// (established), inactive (syn, fin, closed), and syn (of the inactive).
// Signed: drift between walks may take one below 0.
type classes [3]int64

// classesOf returns the classes one entry in state s counts in.
func classesOf(s ConnState) classes {
	switch {
	case s.Active():
		return classes{1, 0, 0}
	case s == ConnSYN:
		return classes{0, 1, 1}
	}
	return classes{0, 1, 0}
}

// read returns backend id's counts.
func (k *connCounts) read(id uint32) classes {
	if int(id) >= len(k.c) {
		return classes{}
	}
	c := &k.c[id]
	return classes{atomic.LoadInt64(&c.Active), atomic.LoadInt64(&c.Inactive), atomic.LoadInt64(&c.Syn)}
}

// add adds d to backend id's counts.
func (k *connCounts) add(id uint32, d classes) {
	if int(id) >= len(k.c) {
		return
	}
	c := &k.c[id]
	for i, p := range []*int64{&c.Active, &c.Inactive, &c.Syn} {
		if d[i] != 0 {
			atomic.AddInt64(p, d[i])
		}
	}
}

// addState counts n entries in state s for backend id.
func (k *connCounts) addState(id uint32, s ConnState, n int64) {
	c := classesOf(s)
	k.add(id, classes{c[0] * n, c[1] * n, c[2] * n})
}

// reset zeroes backend id's counts: an id taken by a new backend starts
// from nothing (the entries of its previous owner are stale).
func (k *connCounts) reset(id uint32) {
	if int(id) < len(k.c) {
		c := &k.c[id]
		atomic.StoreInt64(&c.Active, 0)
		atomic.StoreInt64(&c.Inactive, 0)
		atomic.StoreInt64(&c.Syn, 0)
	}
}

// load is what least-conn compares for a backend (bpf/counts.h
// conn_active): its active and syn counts, 0 if below.
func (c classes) load() uint64 { return uint64(max(c[0]+c[2], 0)) }

// count converts the fast path's counts into a ConnCount.
func (c classes) count() ConnCount {
	return ConnCount{Active: uint64(max(c[0], 0)), Inactive: uint64(max(c[1], 0))}
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
		m[o.addr] = d.counts.read(id).count()
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
	start := make(map[uint32]classes, len(owners))
	for id := range owners {
		start[id] = d.counts.read(id)
	}
	walked, err := d.walkCounts()
	if err != nil {
		return nil, err
	}
	out := make(map[VIP]map[netip.Addr]ConnCount)
	for id, o := range owners {
		w, s := walked[id], start[id]
		d.counts.add(id, classes{w[0] - s[0], w[1] - s[1], w[2] - s[2]})
		if w != (classes{}) {
			m := out[o.vip]
			if m == nil {
				m = make(map[netip.Addr]ConnCount)
				out[o.vip] = m
			}
			m[o.addr] = w.count()
		}
	}
	return out, nil
}

// walkCounts counts the table's live entries by backend id and class.
func (d *Datapath) walkCounts() (map[uint32]classes, error) {
	walked := make(map[uint32]classes)
	err := d.scanLive(func(c *Conn) (bool, error) {
		w, one := walked[c.id], classesOf(c.State)
		for i := range w {
			w[i] += one[i]
		}
		walked[c.id] = w
		return false, nil
	})
	return walked, err
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

package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"

	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// fillAll fills the prepared VIPs (see fill) on up to one goroutine per
// CPU, each result in its pendingVIP's err. Filling a VIP is a Maglev build
// (~1.2 ms at M = 65537, shared among VIPs of one shape) and a copy of its
// slots into the ring arena (arena.go), and the VIPs are independent: a
// bulk change of a thousand VIPs takes about the time of a thousand
// divided by the CPUs. No table outlives its fill, so the Go memory is
// that of the goroutines' tables and the shared builds, whatever the count
// of VIPs; their rings wait in the arena until published.
func (d *Datapath) fillAll(pending []*pendingVIP) {
	var sh *shapes
	if len(pending) > 1 {
		sh = &shapes{byKey: make(map[uint64][]*shape)}
	}
	parallel(len(pending), runtime.NumCPU(), func(i int) { pending[i].err = d.fill(pending[i], sh) })
}

// sumRings sets the digest of every adopted VIP's ring, as the arena holds
// it (a ring a build would not give is then rewritten by the next change
// of its VIP), on one goroutine per CPU.
func (d *Datapath) sumRings() error {
	entries := make([]*vipEntry, 0, len(d.vips))
	for _, e := range d.vips {
		entries = append(entries, e)
	}
	errs := make([]error, len(entries))
	parallel(len(entries), runtime.NumCPU(), func(i int) {
		e := entries[i]
		table, err := d.arena.read(e.ring)
		if err != nil {
			errs[i] = fmt.Errorf("read ring of vip %s: %w", e.vip, err)
			return
		}
		e.tableSum = tableSum(table)
		if e.rr.size > 0 {
			seq, err := d.arena.read(e.rr)
			if err != nil {
				errs[i] = fmt.Errorf("read round-robin sequence of vip %s: %w", e.vip, err)
				return
			}
			e.rrSum = tableSum(seq)
		}
	})
	return errors.Join(errs...)
}

// parallel calls f(0) to f(n-1) on up to workers goroutines and returns
// when every call has.
func parallel(n, workers int, f func(i int)) {
	workers = min(workers, n)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				f(i)
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// shapes shares Maglev builds between the VIPs of one bulk change whose
// rings have the same size and whose backends the same addresses and
// weights: a build depends on nothing else (not on the backend ids, which
// differ from VIP to VIP), so such VIPs, common when many services share a
// pool, get one build and a copy with their own ids each. A thousand VIPs
// of one pool build once instead of a thousand times. At most maxShapes
// are kept, for the length of one change.
type shapes struct {
	mu    sync.Mutex
	byKey map[uint64][]*shape
	n     int
}

// maxShapes bounds the builds shapes keeps: 16 rings of at most
// maglev.MaxSize slots, 8 MiB.
const maxShapes = 16

// shape is one shared build.
type shape struct {
	size     uint32
	backends []shapeBackend // by address
	ready    chan struct{}  // closed when slots and err are set
	// slots holds each slot's backend as an index into backends, or
	// maglev.Unassigned.
	slots []uint32
	err   error
}

type shapeBackend struct {
	addr   netip.Addr
	weight uint32
}

// table returns e's ring: the shared build of its shape with e's backend
// ids, or a build of its own once maxShapes are kept.
func (s *shapes) table(e *vipEntry) ([]uint32, error) {
	list := make([]*backendEntry, 0, len(e.backends))
	for _, b := range e.backends {
		list = append(list, b)
	}
	slices.SortFunc(list, func(a, b *backendEntry) int { return a.Addr.Compare(b.Addr) })
	key := shapeKey(e.cfg.RingSize, list)
	s.mu.Lock()
	var sh *shape
	for _, c := range s.byKey[key] {
		if c.is(e.cfg.RingSize, list) {
			sh = c
			break
		}
	}
	switch {
	case sh != nil:
		s.mu.Unlock()
		<-sh.ready
	case s.n >= maxShapes:
		s.mu.Unlock()
		return buildTable(e)
	default:
		sh = &shape{size: e.cfg.RingSize, ready: make(chan struct{})}
		for _, b := range list {
			sh.backends = append(sh.backends, shapeBackend{b.Addr, b.Weight})
		}
		s.byKey[key] = append(s.byKey[key], sh)
		s.n++
		s.mu.Unlock()
		in := make([]maglev.Backend, len(list))
		for i, b := range list {
			in[i] = maglev.Backend{Name: b.Addr.String(), ID: uint32(i), Weight: b.Weight}
		}
		sh.slots, sh.err = maglev.Build(in, sh.size)
		close(sh.ready)
	}
	if sh.err != nil {
		return nil, sh.err
	}
	table := make([]uint32, len(sh.slots))
	for i, at := range sh.slots {
		table[i] = at
		if at != maglev.Unassigned {
			table[i] = list[at].id
		}
	}
	return table, nil
}

// is says whether the shape is that of a ring of size slots over list.
func (sh *shape) is(size uint32, list []*backendEntry) bool {
	return sh.size == size && slices.EqualFunc(sh.backends, list, func(a shapeBackend, b *backendEntry) bool {
		return a.addr == b.Addr && a.weight == b.Weight
	})
}

// shapeKey is an FNV-1a digest of a shape, to find candidates quickly.
func shapeKey(size uint32, list []*backendEntry) uint64 {
	const prime = 1099511628211
	h := (uint64(14695981039346656037) ^ uint64(size)) * prime
	for _, b := range list {
		for _, c := range b.Addr.As16() {
			h = (h ^ uint64(c)) * prime
		}
		h = (h ^ uint64(b.Weight)) * prime
	}
	return h
}

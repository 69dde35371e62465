package datapath

import (
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// Response times (bpf/rtt.h, docs/schedulers.md "least-time"). For a VIP
// with VIPConfig.ResponseTime the fast path keeps a TCP SYN's time and, at
// the flow's first ACK, adds the time since to its backend's samples in
// rt_samples (per CPU, cumulative). The daemon reads their growth with
// ResponseSamples, folds it into an EWMA per backend and writes the result
// with SetBackendCost into backend_cost, which the least-time scheduler
// reads.

// BackendSamples is a backend's passive response-time samples since its id
// was last reset, summed over the CPUs. ID and Gen name the backend entry
// they were read for: a reader that kept earlier figures compares them, as
// a backend that was removed and added again starts over.
type BackendSamples struct {
	ID    uint32
	Gen   uint16
	Sum   time.Duration
	Count uint64
}

// ResponseSamples returns the passive samples of every backend of vip, by
// address. A VIP that does not measure has none (no error).
func (d *Datapath) ResponseSamples(vip VIP) (map[netip.Addr]BackendSamples, error) {
	d.mu.Lock()
	e := d.vips[vip]
	var ids []BackendSamples
	var addrs []netip.Addr
	if e != nil && e.cfg.ResponseTime {
		for a, b := range e.backends {
			ids = append(ids, BackendSamples{ID: b.id, Gen: b.gen})
			addrs = append(addrs, a)
		}
	}
	d.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("vip %s is not configured", vip)
	}
	out := make(map[netip.Addr]BackendSamples, len(ids))
	per := make([]balancerRtSample, ebpf.MustPossibleCPU())
	for i, s := range ids {
		if err := d.objs.RtSamples.Lookup(s.ID, per); err != nil {
			return nil, fmt.Errorf("vip %s: read response times of %s: %w", vip, addrs[i], err)
		}
		var sum uint64
		for _, c := range per {
			sum += c.SumNs
			s.Count += c.Count
		}
		s.Sum = time.Duration(min(sum, math.MaxInt64))
		out[addrs[i]] = s
	}
	return out, nil
}

// SetBackendCost writes the response time of vip's backend addr into
// backend_cost, in µs, rounded up so that a measured backend never reads 0
// (not measured). 0 clears it.
func (d *Datapath) SetBackendCost(vip VIP, addr netip.Addr, rt time.Duration) error {
	b := d.backendOf(vip, addr)
	if b == nil {
		return fmt.Errorf("vip %s has no backend %s", vip, addr)
	}
	return d.objs.BackendCost.Put(b.id, CostMicros(rt))
}

// BackendCost reads back what backend_cost holds for vip's backend addr,
// in µs (0 = not measured).
func (d *Datapath) BackendCost(vip VIP, addr netip.Addr) (uint32, error) {
	b := d.backendOf(vip, addr)
	if b == nil {
		return 0, fmt.Errorf("vip %s has no backend %s", vip, addr)
	}
	var us uint32
	err := d.objs.BackendCost.Lookup(b.id, &us)
	return us, err
}

// backendOf returns vip's backend addr as written, nil if there is none.
func (d *Datapath) backendOf(vip VIP, addr netip.Addr) *backendEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.vips[vip]; e != nil {
		return e.backends[addr]
	}
	return nil
}

// CostMicros is rt in whole µs, rounded up, at most the field's range.
func CostMicros(rt time.Duration) uint32 {
	if rt <= 0 {
		return 0
	}
	us := (rt + time.Microsecond - 1) / time.Microsecond
	return uint32(min(us, math.MaxUint32))
}

// resetCosts clears the cost of backend ids that a VIP just took, so a
// new backend never inherits the cost of the id's previous owner (its
// samples need no reset: readers compare ID and Gen).
func resetCosts(m *ebpf.Map, fresh []*backendEntry) error {
	if len(fresh) == 0 {
		return nil
	}
	ids := make([]uint32, len(fresh))
	for i, b := range fresh {
		ids[i] = b.id
	}
	_, err := m.BatchUpdate(ids, make([]uint32, len(ids)), nil)
	return err
}

package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Stat is one of the fast path's verdict and event counters.
type Stat uint32

// The counters, in the order of enum fulcrum_stat.
const (
	StatPassNotIP       = Stat(balancerFulcrumStatSTAT_PASS_NOT_IP)
	StatPassNoVIP       = Stat(balancerFulcrumStatSTAT_PASS_NO_VIP)
	StatPassNotL4       = Stat(balancerFulcrumStatSTAT_PASS_NOT_L4)
	StatPassUnparseable = Stat(balancerFulcrumStatSTAT_PASS_UNPARSEABLE)
	StatPassNotUnicast  = Stat(balancerFulcrumStatSTAT_PASS_NOT_UNICAST)
	StatDropFragment    = Stat(balancerFulcrumStatSTAT_DROP_FRAGMENT)
	StatDropMalformed   = Stat(balancerFulcrumStatSTAT_DROP_MALFORMED)
	StatDropNoBackend   = Stat(balancerFulcrumStatSTAT_DROP_NO_BACKEND)
	StatDropBadMode     = Stat(balancerFulcrumStatSTAT_DROP_BAD_MODE)
	StatDropTooBig      = Stat(balancerFulcrumStatSTAT_DROP_TOO_BIG)
	StatDropNoRoute     = Stat(balancerFulcrumStatSTAT_DROP_NO_ROUTE)
	StatDropEncap       = Stat(balancerFulcrumStatSTAT_DROP_ENCAP)
	StatTxDSR           = Stat(balancerFulcrumStatSTAT_TX_DSR)
	StatTxIPIP          = Stat(balancerFulcrumStatSTAT_TX_IPIP)
	StatCtHit           = Stat(balancerFulcrumStatSTAT_CT_HIT)
	StatCtMiss          = Stat(balancerFulcrumStatSTAT_CT_MISS)
	StatCtSYN           = Stat(balancerFulcrumStatSTAT_CT_SYN)
	StatCtStale         = Stat(balancerFulcrumStatSTAT_CT_STALE)
	StatCtInsertFailed  = Stat(balancerFulcrumStatSTAT_CT_INSERT_FAILED)
	StatCtBypass        = Stat(balancerFulcrumStatSTAT_CT_BYPASS)
	StatFibGateway      = Stat(balancerFulcrumStatSTAT_FIB_GATEWAY)
	StatCtGuard         = Stat(balancerFulcrumStatSTAT_CT_GUARD)
	StatCtExpired       = Stat(balancerFulcrumStatSTAT_CT_EXPIRED)
	StatDropSourceRange = Stat(balancerFulcrumStatSTAT_DROP_SOURCE_RANGE)
	StatCtEvicted       = Stat(balancerFulcrumStatSTAT_CT_EVICTED)
	StatCtExportFull    = Stat(balancerFulcrumStatSTAT_CT_EXPORT_FULL)
	StatDropPoolDown    = Stat(balancerFulcrumStatSTAT_DROP_POOL_DOWN)
	StatPoolFallback    = Stat(balancerFulcrumStatSTAT_POOL_FALLBACK)
	StatSchedRR         = Stat(balancerFulcrumStatSTAT_SCHED_RR)
	StatRTSample        = Stat(balancerFulcrumStatSTAT_RT_SAMPLE)
	StatRTLost          = Stat(balancerFulcrumStatSTAT_RT_LOST)
	StatSchedLCExact    = Stat(balancerFulcrumStatSTAT_SCHED_LC_EXACT)
	StatSchedLCTwo      = Stat(balancerFulcrumStatSTAT_SCHED_LC_TWO)
	StatSchedLTExact    = Stat(balancerFulcrumStatSTAT_SCHED_LT_EXACT)
	StatSchedLTTwo      = Stat(balancerFulcrumStatSTAT_SCHED_LT_TWO)
	numStats            = int(balancerFulcrumStatSTAT_MAX)
)

var statNames = [...]string{
	StatPassNotIP:       "pass_not_ip",
	StatPassNoVIP:       "pass_no_vip",
	StatPassNotL4:       "pass_not_l4",
	StatPassUnparseable: "pass_unparseable",
	StatPassNotUnicast:  "pass_not_unicast",
	StatDropFragment:    "drop_fragment",
	StatDropMalformed:   "drop_malformed",
	StatDropNoBackend:   "drop_no_backend",
	StatDropBadMode:     "drop_bad_mode",
	StatDropTooBig:      "drop_too_big",
	StatDropNoRoute:     "drop_no_route",
	StatDropEncap:       "drop_encap",
	StatTxDSR:           "tx_dsr",
	StatTxIPIP:          "tx_ipip",
	StatCtHit:           "ct_hit",
	StatCtMiss:          "ct_miss",
	StatCtSYN:           "ct_syn",
	StatCtStale:         "ct_stale",
	StatCtInsertFailed:  "ct_insert_failed",
	StatCtBypass:        "ct_bypass",
	StatFibGateway:      "fib_gateway",
	StatCtGuard:         "ct_guard",
	StatCtExpired:       "ct_expired",
	StatDropSourceRange: "drop_source_range",
	StatCtEvicted:       "ct_evicted",
	StatCtExportFull:    "ct_export_full",
	StatDropPoolDown:    "drop_pool_down",
	StatPoolFallback:    "pool_fallback",
	StatSchedRR:         "sched_rr",
	StatRTSample:        "rt_sample",
	StatRTLost:          "rt_lost",
	StatSchedLCExact:    "sched_least_conn_exact",
	StatSchedLCTwo:      "sched_least_conn_two_choices",
	StatSchedLTExact:    "sched_least_time_exact",
	StatSchedLTTwo:      "sched_least_time_two_choices",
}

// Compile-time checks that every counter has a name and no name is extra.
var (
	_ [numStats - len(statNames)]struct{}
	_ [len(statNames) - numStats]struct{}
)

func (s Stat) String() string {
	if int(s) < len(statNames) {
		return statNames[s]
	}
	return fmt.Sprintf("stat(%d)", uint32(s))
}

// IsVerdict reports whether the counter counts packets by their final
// action (pass, drop, tx), as opposed to an event such as a
// connection-table hit. Every packet the program sees counts exactly one
// verdict. Counters are only added at the end of the enum (a migration
// keeps them by index), so a verdict added later sits after the events.
func (s Stat) IsVerdict() bool {
	return s <= StatTxIPIP || s == StatDropSourceRange || s == StatDropPoolDown
}

// AllStats lists every counter.
func AllStats() []Stat {
	out := make([]Stat, numStats)
	for i := range out {
		out[i] = Stat(i)
	}
	return out
}

// Counter is a packet and byte count.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// Counters is a snapshot of the fast path's counters, summed over CPUs.
type Counters struct {
	Stats    [numStats]uint64
	VIPs     map[VIP]Counter
	Backends map[VIP]map[netip.Addr]Counter
	// Decisions is, per VIP whose scheduler decides new flows itself
	// (round-robin, least-conn, least-time), how many new flows it gave
	// a backend: the picks of the VIP's rr_cursors slot, summed over the
	// CPUs. Scheduler names each such VIP's scheduler.
	Decisions map[VIP]uint64
	Scheduler map[VIP]string
}

// Stat returns one counter of the snapshot.
func (c *Counters) Stat(s Stat) uint64 {
	if int(s) < len(c.Stats) {
		return c.Stats[s]
	}
	return 0
}

// Counters reads every counter from the maps now: one lookup for the
// verdict counters and one batch lookup (BPF_MAP_LOOKUP_BATCH, Linux 5.6)
// per counterBatch VIP indexes and per counterBatch backend ids in use, so a
// thousand VIPs cost a handful of syscalls, not one per VIP and backend.
//
// The lookups run without d.mu, so that a scrape or the rate sampler never
// holds up a change of the VIPs. Which index belongs to which VIP and
// backend is taken under the lock before the read and checked under it
// after: an index freed and reused in between (its counter zeroed for its
// new owner) would otherwise report the new owner's count under the old
// name. If the VIPs changed during the read, it is read again; after
// unlockedCounterReads such attempts the last read holds the lock, so a
// stream of changes cannot starve it.
//
// Both locked steps are O(1) while the VIPs do not change (see
// ownerChanges): the owners are copied once per change, not per call, and
// the check compares one counter. Only after a change do they cost
// O(VIPs + backends).
func (d *Datapath) Counters() (Counters, error) {
	for range unlockedCounterReads {
		d.mu.Lock()
		owners := d.counterOwners()
		d.mu.Unlock()
		if countersReadHook != nil {
			countersReadHook()
		}
		c, err := d.readCounters(owners)
		if err != nil {
			return Counters{}, err
		}
		d.mu.Lock()
		same := d.ownersUnchanged(owners)
		d.mu.Unlock()
		if same {
			return c, nil
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.readCounters(d.counterOwners())
}

// unlockedCounterReads is how many times Counters reads without the lock
// before it reads with it.
const unlockedCounterReads = 3

// countersReadHook, if set, runs after Counters copied the owners and
// before it reads without the lock, so that tests can change the VIPs there.
var countersReadHook func()

// counterBatch is the most entries one batch lookup reads: 64 KiB of
// buffer per CPU. The VIP counters (at most MaxVIPs = 4096) take one call,
// the backend counters one per 4096 ids in use.
const counterBatch = 4096

// counterOwners says which VIP owns each VIP index and which backend each
// backend id, as the datapath held them at one moment. It is never changed
// once made, so that the readers of one moment share it (d.owners).
type counterOwners struct {
	// changes is d.ownerChanges when the owners were copied.
	changes uint64
	vips    []vipOwner
	// backends holds the backends of every VIP, those of vips[i] at
	// [vips[i].first, vips[i].end): two allocations, not one per VIP.
	backends []backendOwner
	// vipEnd and backendEnd are one past the highest index and id in use:
	// the allocators hand out the low ones first, so the read stops there.
	vipEnd, backendEnd uint32
	// rrEnd is one past the highest index of a VIP whose scheduler
	// counts its decisions, 0 if there is none: the cursors are not read
	// then.
	rrEnd uint32
}

type vipOwner struct {
	vip        VIP
	index      uint16
	gen        uint16
	first, end uint32
	// sched names the VIP's scheduler if it counts its decisions
	// (round-robin, least-conn, least-time), else "": they are read.
	sched string
}

type backendOwner struct {
	addr netip.Addr
	id   uint32
	gen  uint16
}

// counterOwners returns the owners of the counters now; d.mu must be held.
// They are copied only if the VIPs changed since the last copy.
func (d *Datapath) counterOwners() *counterOwners {
	if o := d.owners; o != nil && o.changes == d.ownerChanges {
		return o
	}
	n := 0
	for _, e := range d.vips {
		n += len(e.backends)
	}
	o := &counterOwners{changes: d.ownerChanges, vips: make([]vipOwner, 0, len(d.vips)), backends: make([]backendOwner, 0, n)}
	for _, e := range d.vips {
		v := vipOwner{vip: e.vip, index: e.index, gen: e.gen, first: uint32(len(o.backends))}
		if e.cfg.countsDecisions() {
			v.sched = e.cfg.scheduler()
		}
		o.vipEnd = max(o.vipEnd, uint32(e.index)+1)
		if v.sched != "" {
			o.rrEnd = max(o.rrEnd, uint32(e.index)+1)
		}
		for _, b := range e.backends {
			o.backends = append(o.backends, backendOwner{addr: b.Addr, id: b.id, gen: b.gen})
			o.backendEnd = max(o.backendEnd, b.id+1)
		}
		v.end = uint32(len(o.backends))
		o.vips = append(o.vips, v)
	}
	d.owners = o
	return o
}

// ownersUnchanged reports whether every VIP and backend of o still has its
// index or id, with the same generation; d.mu must be held. A reused index
// always gets a new generation, so an unchanged one means the counter read
// belonged to its owner all along. VIPs added since o are not in the read
// and need not be: the read is then the state of the moment o was taken.
//
// If no owner changed at all since o (ownerChanges), that is the answer
// without looking at each; a change elsewhere (a weight, another VIP)
// costs the comparison of each, not a read again.
func (d *Datapath) ownersUnchanged(o *counterOwners) bool {
	if o.changes == d.ownerChanges {
		return true
	}
	for _, v := range o.vips {
		e := d.vips[v.vip]
		if e == nil || e.index != v.index || e.gen != v.gen {
			return false
		}
		for _, b := range o.backends[v.first:v.end] {
			now := e.backends[b.addr]
			if now == nil || now.id != b.id || now.gen != b.gen {
				return false
			}
		}
	}
	return true
}

// readCounters reads the counters and names them by o.
func (d *Datapath) readCounters(o *counterOwners) (Counters, error) {
	c := Counters{VIPs: make(map[VIP]Counter, len(o.vips)), Backends: make(map[VIP]map[netip.Addr]Counter, len(o.vips))}
	var perCPU []balancerStatTable
	if err := d.objs.Stats.Lookup(uint32(0), &perCPU); err != nil {
		return Counters{}, fmt.Errorf("read stats: %w", err)
	}
	for _, cpu := range perCPU {
		for i, v := range cpu.Count {
			c.Stats[i] += v
		}
	}
	vips, err := sumCounters(d.objs.VipStats, o.vipEnd)
	if err != nil {
		return Counters{}, fmt.Errorf("read vip counters: %w", err)
	}
	backends, err := sumCounters(d.objs.BackendStats, o.backendEnd)
	if err != nil {
		return Counters{}, fmt.Errorf("read backend counters: %w", err)
	}
	var picks []uint64
	if o.rrEnd > 0 {
		if picks, err = sumRRPicks(d.objs.RrCursors, o.rrEnd); err != nil {
			return Counters{}, fmt.Errorf("read scheduler decisions: %w", err)
		}
		c.Decisions = make(map[VIP]uint64)
		c.Scheduler = make(map[VIP]string)
	}
	for _, v := range o.vips {
		c.VIPs[v.vip] = vips[v.index]
		if v.sched != "" {
			c.Decisions[v.vip] = picks[v.index]
			c.Scheduler[v.vip] = v.sched
		}
		bs := make(map[netip.Addr]Counter, v.end-v.first)
		for _, b := range o.backends[v.first:v.end] {
			bs[b.addr] = backends[b.id]
		}
		c.Backends[v.vip] = bs
	}
	return c, nil
}

// sumCounters reads entries [0, n) of m, a per-CPU array of counters, with
// batch lookups of up to counterBatch entries, and sums each over the CPUs.
func sumCounters(m *ebpf.Map, n uint32) ([]Counter, error) {
	return sumPerCPU(m, n, func(sum *Counter, v *balancerCounter) {
		sum.Packets += v.Packets
		sum.Bytes += v.Bytes
	})
}

// sumPerCPU reads entries [0, n) of m, a per-CPU array of V, with batch
// lookups of up to counterBatch entries, and folds each entry's values of
// every CPU into one S with add.
func sumPerCPU[V, S any](m *ebpf.Map, n uint32, add func(*S, *V)) ([]S, error) {
	out := make([]S, n)
	if n == 0 {
		return out, nil
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	// Slices of exactly the batch's size let cilium/ebpf hand them to the
	// kernel as they are, without a copy.
	keys := make([]uint32, min(n, counterBatch))
	values := make([]V, len(keys)*cpus)
	var cursor ebpf.MapBatchCursor
	read := uint32(0)
	for read < n {
		k := int(min(n-read, counterBatch))
		got, err := m.BatchLookup(&cursor, keys[:k], values[:k*cpus], nil)
		// ErrKeyNotExist: the lookup reached the array's last entry.
		end := errors.Is(err, ebpf.ErrKeyNotExist)
		if err != nil && !end {
			return nil, err
		}
		for i, key := range keys[:got] {
			if key >= n {
				return nil, fmt.Errorf("batch lookup returned index %d, want one below %d", key, n)
			}
			for j := range values[i*cpus : (i+1)*cpus] {
				add(&out[key], &values[i*cpus+j])
			}
		}
		read += uint32(got)
		if end || got == 0 {
			break
		}
	}
	if read < n {
		return nil, fmt.Errorf("batch lookup read %d of %d entries", read, n)
	}
	return out, nil
}

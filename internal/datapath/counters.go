package datapath

import (
	"fmt"
	"net/netip"
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
// verdict.
func (s Stat) IsVerdict() bool {
	return s <= StatTxIPIP
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
}

// Stat returns one counter of the snapshot.
func (c *Counters) Stat(s Stat) uint64 {
	if int(s) < len(c.Stats) {
		return c.Stats[s]
	}
	return 0
}

// Counters reads every counter from the maps now.
func (d *Datapath) Counters() (Counters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := Counters{VIPs: make(map[VIP]Counter), Backends: make(map[VIP]map[netip.Addr]Counter)}
	var perCPU []balancerStatTable
	if err := d.objs.Stats.Lookup(uint32(0), &perCPU); err != nil {
		return c, fmt.Errorf("read stats: %w", err)
	}
	for _, cpu := range perCPU {
		for i, v := range cpu.Count {
			c.Stats[i] += v
		}
	}
	for vip, e := range d.vips {
		total, err := sumCounter(d, true, uint32(e.index))
		if err != nil {
			return c, fmt.Errorf("read stats of vip %s: %w", vip, err)
		}
		c.VIPs[vip] = total
		bs := make(map[netip.Addr]Counter, len(e.backends))
		for addr, b := range e.backends {
			total, err := sumCounter(d, false, b.id)
			if err != nil {
				return c, fmt.Errorf("read stats of backend %s: %w", addr, err)
			}
			bs[addr] = total
		}
		c.Backends[vip] = bs
	}
	return c, nil
}

func sumCounter(d *Datapath, vip bool, index uint32) (Counter, error) {
	m := d.objs.BackendStats
	if vip {
		m = d.objs.VipStats
	}
	var perCPU []balancerCounter
	if err := m.Lookup(index, &perCPU); err != nil {
		return Counter{}, err
	}
	var c Counter
	for _, v := range perCPU {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c, nil
}

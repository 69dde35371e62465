package datapath

import (
	"fmt"
)

// Least time (VIPConfig.LeastTime, bpf/sched.h, docs/schedulers.md
// "least-time"): least-conn's choice (leastconn.go: the same pool, exact
// scan and two choices) with each backend's load multiplied by its
// response time in backend_cost, and a margin a candidate must beat the
// best so far by.

// LeastTimeMargin is bpf/sched.h's hysteresis as a fraction: a candidate
// replaces the best backend so far only if its cost is lower by more than
// this part of the best's (1 >> LT_MARGIN_SHIFT).
const LeastTimeMargin = 1.0 / (1 << ltMarginShift)

// ltMarginShift is LT_MARGIN_SHIFT.
const ltMarginShift = 3

// schedLoadMax and ltRTMax are SCHED_LOAD_MAX and LT_RT_MAX: the largest
// load and response time (µs) the comparison takes.
const (
	schedLoadMax = 1<<24 - 1
	ltRTMax      = 1<<22 - 1
)

// beats is sched.h's sched_wins for candidate c against the best so far:
// whether c's cost is lower (least-time: by more than the margin), and,
// for least-time, whether it is lower but within the margin. A side
// without a response time makes both compare on load alone.
func (c *LeastConnCandidate) beats(best *LeastConnCandidate, lt bool) (beat, withinMargin bool) {
	r, br := uint64(1), uint64(1)
	if lt && c.RT != 0 && best.RT != 0 {
		r, br = min(uint64(c.RT), ltRTMax), min(uint64(best.RT), ltRTMax)
	}
	x := min(c.Active+1, schedLoadMax) * r * uint64(best.Weight)
	bx := min(best.Active+1, schedLoadMax) * br * uint64(c.Weight)
	lower := x < bx
	if lt {
		bx -= bx >> ltMarginShift
	}
	return x < bx, lower && x >= bx
}

// costOf reads backend_cost[id] (µs, 0 = not measured); an error reads as
// not measured, which is also what explain then shows.
func (d *Datapath) costOf(id uint32) uint32 {
	var us uint32
	if err := d.objs.BackendCost.Lookup(id, &us); err != nil {
		return 0
	}
	return us
}

// checkLeastScheduler refuses what least-conn and least-time cannot do:
// they need the connection table (its counts, and the entry that keeps a
// flow where they sent it) and the 5-tuple hash, are one scheduler each,
// and do not take pools (a pool's clients take its Maglev ring).
func (c VIPConfig) checkLeastScheduler(vip VIP) error {
	name := "least-conn"
	if c.LeastTime {
		name = "least-time"
	}
	if c.LeastConn && c.LeastTime {
		return fmt.Errorf("vip %s: least-conn and least-time are two schedulers: choose one", vip)
	}
	if !c.LeastConn && !c.LeastTime {
		return nil
	}
	if c.NoConntrack || c.SourceHash {
		return fmt.Errorf("vip %s: %s needs the connection table and the 5-tuple hash (no conntrack off, no source hash)", vip, name)
	}
	if c.RoundRobin {
		return fmt.Errorf("vip %s: %s and round robin are two schedulers: choose one", vip, name)
	}
	if !c.Pools.IsZero() {
		return fmt.Errorf("vip %s: %s does not take source-prefix pools: a pool's clients take its Maglev ring", vip, name)
	}
	return nil
}

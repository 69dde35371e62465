package vrrp

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a Router's state and counters.
type Stats struct {
	State State `json:"state"`
	// Priority is the effective priority: the configured one plus the
	// offset, as advertised.
	Priority int `json:"priority"`
	// Master is the primary address of the master as last heard (ours when
	// master); invalid when unknown.
	Master netip.Addr `json:"master"`
	// MasterAdvertInterval is Master_Adver_Interval in centiseconds: ours
	// when master, the master's as learned from its advertisements when
	// backup.
	MasterAdvertInterval int `json:"master_advert_interval"`

	AdvertsSent          uint64 `json:"adverts_sent"`
	AdvertsReceived      uint64 `json:"adverts_received"` // valid, of our VRID
	PriorityZeroSent     uint64 `json:"priority_zero_sent"`
	PriorityZeroReceived uint64 `json:"priority_zero_received"`
	// AddressMismatches counts received advertisements whose address list
	// differs from ours: accepted, as RFC 5798 §7.1 says, and logged.
	AddressMismatches uint64 `json:"address_mismatches"`
	GratuitousSent    uint64 `json:"gratuitous_sent"` // ARP / NA frames
	SendErrors        uint64 `json:"send_errors"`
	// Dropped counts received packets by DropReason name.
	Dropped     map[string]uint64 `json:"dropped"`
	Transitions uint64            `json:"transitions"`
	// BecameMaster counts transitions to Master.
	BecameMaster   uint64    `json:"became_master"`
	LastTransition time.Time `json:"last_transition"`

	// Timing of the advertisements, to tell a late master from a late
	// network when a backup takes over by mistake (docs/vrrp.md).
	//
	// WorstSendDelay is the longest a master's advertisement waited
	// after it was due before the protocol thread sent it (a late
	// wake-up); a takeover's first advertisement counts from the
	// Master_Down_Timer. LateSends counts those more than half an interval late.
	// WorstSendCall is the longest the send call took: the packet is
	// handed to the driver early in it, but the kernel then runs the
	// network softirq work pending on the CPU in the caller's context,
	// which delays the thread, not that advertisement.
	WorstSendDelay time.Duration `json:"worst_send_delay_ns"`
	LateSends      uint64        `json:"late_sends"`
	WorstSendCall  time.Duration `json:"worst_send_call_ns"`
	// WorstAdvertGap is the longest time a backup went between two
	// advertisements of the master it follows, by the kernel's receive
	// times. LateAdverts counts the gaps longer than 1.5 intervals.
	WorstAdvertGap time.Duration `json:"worst_advert_gap_ns"`
	LateAdverts    uint64        `json:"late_adverts"`
	// GuardSent counts the advertisements a guard thread sent because the
	// protocol thread was held up past their due time by more than a
	// quarter interval (its CPU stalled; guard.go). AdvertsSent includes
	// them.
	GuardSent uint64 `json:"guard_sent"`
}

// Stats returns a snapshot of the state and the counters.
func (r *Router) Stats() Stats {
	s := Stats{
		State:                r.State(),
		Priority:             int(r.priority.Load()),
		MasterAdvertInterval: int(r.masterInt.Load()),
		AdvertsSent:          r.sent.Load(),
		AdvertsReceived:      r.received.Load(),
		PriorityZeroSent:     r.zeroSent.Load(),
		PriorityZeroReceived: r.zeroReceived.Load(),
		AddressMismatches:    r.mismatches.Load(),
		GratuitousSent:       r.garpSent.Load(),
		SendErrors:           r.sendErrors.Load(),
		Dropped:              make(map[string]uint64, numDropReasons),
		Transitions:          r.transitions.Load(),
		BecameMaster:         r.becameMaster.Load(),
		WorstSendDelay:       time.Duration(r.worstSend.Load()),
		LateSends:            r.lateSends.Load(),
		WorstSendCall:        time.Duration(r.worstCall.Load()),
		WorstAdvertGap:       time.Duration(r.worstGap.Load()),
		LateAdverts:          r.lateAdverts.Load(),
		GuardSent:            r.guardSent.Load(),
	}
	if ns := r.lastTrans.Load(); ns != 0 {
		s.LastTransition = time.Unix(0, ns)
	}
	r.masterMu.Lock()
	s.Master = r.master
	r.masterMu.Unlock()
	for i := range r.dropped {
		s.Dropped[DropReason(i).String()] = r.dropped[i].Load()
	}
	return s
}

// noteSend records how late an advertisement was sent (the master's side
// of a false failover) and how long the send call took, and logs them when
// either was over half an interval: every new worst, the others at most
// once a second.
func (r *Router) noteSend(late, took time.Duration) {
	worse := storeMax(&r.worstSend, int64(late))
	worse = storeMax(&r.worstCall, int64(took)) || worse
	half := cs(r.m.advertInt) / 2
	if late > half {
		r.lateSends.Add(1)
	}
	if late > half || took > half {
		// A new worst is always worth a line; the rest are sampled.
		if now := time.Now(); worse || now.Sub(r.lateLog) >= time.Second {
			r.lateLog = now
			r.log.Warn("vrrp: advertisement sent late or slowly", "late", late, "send_call", took,
				"interval", cs(r.m.advertInt), "late_sends", r.lateSends.Load())
		}
	}
}

// noteGuarded logs, at most once a second, that the loop woke held up by
// late, its guards having sent the advertisements due meanwhile.
func (r *Router) noteGuarded(late time.Duration) {
	if now := time.Now(); now.Sub(r.lateLog) >= time.Second {
		r.lateLog = now
		r.log.Warn("vrrp: protocol thread held up; its guard threads sent the advertisements due meanwhile",
			"late", late, "interval", cs(r.m.advertInt), "guard_sent", r.guardSent.Load())
	}
}

// storeMax raises a to v if v is larger, and reports whether it did.
func storeMax(a *atomic.Int64, v int64) bool {
	for {
		old := a.Load()
		if v <= old {
			return false
		}
		if a.CompareAndSwap(old, v) {
			return true
		}
	}
}

// noteGap records the time between two advertisements of the master a
// backup follows (the backup's side of a false failover) and logs it when
// it was over 1.5 intervals: every new worst, the others at most once a
// second.
func (r *Router) noteGap(gap time.Duration) {
	worse := storeMax(&r.worstGap, int64(gap))
	if gap > cs(r.m.masterInt)*3/2 {
		r.lateAdverts.Add(1)
		if now := time.Now(); worse || now.Sub(r.lateLog) >= time.Second {
			r.lateLog = now
			r.log.Warn("vrrp: advertisements from the master late", "gap", gap, "interval", cs(r.m.masterInt),
				"master_down", cs(r.m.downInterval()), "late_adverts", r.lateAdverts.Load())
		}
	}
}

package daemon

import (
	"context"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/health"
	"github.com/fulcrum-lb/fulcrum/internal/reconcile"
)

// rtInterval is how often the daemon folds response-time samples: the
// issue's "at most every 100 ms", so a least-time choice follows a slower
// backend within a few folds.
const rtInterval = 100 * time.Millisecond

// rtBothStale is how long, under source both, a backend's passive EWMA
// stays its cost after its last handshake; past it the probes' EWMA is.
// An idle backend gets no handshakes, and its passive value would
// otherwise be frozen at whatever it was when traffic stopped.
const rtBothStale = 10 * time.Second

// ewma is an exponentially weighted moving average in time: a sample's
// weight halves every half-life after it. A fold at dt after the last one
// moves the value by alpha = 1 - 2^(-dt/halfLife) towards the new sample
// (with a 1 s half-life and a fold every 100 ms, alpha = 0.067; after ten
// folds the old value weighs half, after 10 s a thousandth). Folds that
// bring no sample leave it as is. The first sample is the value.
type ewma struct {
	v  float64 // ns
	at time.Time
}

func (e *ewma) add(sample time.Duration, now time.Time, halfLife time.Duration) {
	if e.at.IsZero() {
		e.v, e.at = float64(sample), now
		return
	}
	alpha := 1 - math.Exp2(-float64(now.Sub(e.at))/float64(halfLife))
	e.v += alpha * (float64(sample) - e.v)
	e.at = now
}

// value is the average, 0 before the first sample.
func (e *ewma) value() time.Duration { return time.Duration(math.Round(e.v)) }

// toward is the average at now as if the time since its last sample had
// brought samples of ref: it moves from the value to ref as a sample
// would, by 1 - 2^(-dt/halfLife). A real sample at now then replaces
// that part of ref (add's alpha is the same), so a backend that gets a
// sample after a long gap takes it nearly whole. ref 0 (nothing to move
// toward) and an empty average leave the value as it is.
func (e *ewma) toward(ref time.Duration, now time.Time, halfLife time.Duration) time.Duration {
	if e.at.IsZero() || ref <= 0 || !now.After(e.at) {
		return e.value()
	}
	keep := math.Exp2(-float64(now.Sub(e.at)) / float64(halfLife))
	return time.Duration(math.Round(float64(ref) + (e.v-float64(ref))*keep))
}

// rtKey names one backend of one VIP.
type rtKey struct {
	vip     datapath.VIP
	backend netip.Addr
}

// rtEstimate is a backend's response-time state.
type rtEstimate struct {
	passive, active ewma
	// The passive samples as last read, and the backend entry they were
	// read for: a new entry (a backend removed and added) starts over.
	id       uint32
	gen      uint16
	sum      time.Duration
	count    uint64
	baseline bool   // sum and count are set
	answered uint64 // the probes' answer count last folded
	written  uint32 // the cost in µs last written to backend_cost
}

// BackendRT is a backend's response times as the API and the metrics show
// them. Zero durations are not measured yet.
type BackendRT struct {
	Source  config.ResponseSource
	Passive time.Duration
	Active  time.Duration
	// Cost is what backend_cost holds: the source's EWMA, or under both
	// the passive one while recent (rtBothStale) and else the active one.
	Cost time.Duration
}

// rtSource is what the folder reads: the fast path's samples and costs,
// and the health checker's statuses; tests replace it.
type rtSource interface {
	ResponseSamples(vip datapath.VIP) (map[netip.Addr]datapath.BackendSamples, error)
	SetBackendCost(vip datapath.VIP, backend netip.Addr, rt time.Duration) error
}

// rtFolder folds the response-time samples of the VIPs with response_time
// into an EWMA per backend and writes the cost the fast path reads.
type rtFolder struct {
	src      rtSource
	vips     func() []config.VIP // the desired VIPs
	statuses func() []health.Status

	mu    sync.Mutex
	ests  map[rtKey]*rtEstimate
	shown map[datapath.VIP]map[netip.Addr]BackendRT
}

func newRTFolder(src rtSource, vips func() []config.VIP, statuses func() []health.Status) *rtFolder {
	return &rtFolder{src: src, vips: vips, statuses: statuses, ests: make(map[rtKey]*rtEstimate)}
}

// run folds every rtInterval until ctx ends.
func (f *rtFolder) run(ctx context.Context) {
	t := time.NewTicker(rtInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			f.fold(now)
		}
	}
}

// fold takes the samples since the last fold.
func (f *rtFolder) fold(now time.Time) {
	var active map[rtKey]health.Status
	vips := f.vips()
	for _, v := range vips {
		if v.ResponseTime.Active() {
			active = make(map[rtKey]health.Status)
			for _, s := range f.statuses() {
				active[rtKey{s.VIP, s.Backend}] = s
			}
			break
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := make(map[rtKey]bool)
	shown := make(map[datapath.VIP]map[netip.Addr]BackendRT)
	for _, v := range vips {
		rt := v.ResponseTime
		if rt == nil {
			continue
		}
		vip := reconcile.Key(v)
		var samples map[netip.Addr]datapath.BackendSamples
		if rt.Passive() {
			// An error (the VIP is not written yet, or was just
			// removed) leaves the passive EWMAs as they are.
			samples, _ = f.src.ResponseSamples(vip)
		}
		m := make(map[netip.Addr]BackendRT, len(v.Backends))
		ests := make([]*rtEstimate, len(v.Backends))
		for i, b := range v.Backends {
			k := rtKey{vip, b.Address}
			seen[k] = true
			e := f.ests[k]
			if e == nil {
				e = &rtEstimate{}
				f.ests[k] = e
			}
			ests[i] = e
			if s, ok := samples[b.Address]; ok {
				e.foldPassive(s, now, rt.HalfLife)
			}
			if s, ok := active[k]; ok && rt.Active() && s.Answered != e.answered {
				e.answered = s.Answered
				e.active.add(s.ResponseTime, now, rt.HalfLife)
			}
		}
		refs := passiveRefs(v, ests)
		for i, b := range v.Backends {
			e := ests[i]
			shownRT := BackendRT{Source: rt.Source, Passive: e.passive.value(), Active: e.active.value(), Cost: e.cost(rt, now, refs[i])}
			m[b.Address] = shownRT
			if us := datapath.CostMicros(shownRT.Cost); us != e.written {
				if f.src.SetBackendCost(vip, b.Address, shownRT.Cost) == nil {
					e.written = us
				}
			}
		}
		shown[vip] = m
	}
	// Backends no longer measured: their state goes, and a cost written
	// for a backend that still exists is cleared (errors for the gone).
	for k, e := range f.ests {
		if !seen[k] {
			if e.written != 0 {
				_ = f.src.SetBackendCost(k.vip, k.backend, 0)
			}
			delete(f.ests, k)
		}
	}
	f.shown = shown
}

// foldPassive folds the growth of s since the last read as one sample,
// its mean.
func (e *rtEstimate) foldPassive(s datapath.BackendSamples, now time.Time, halfLife time.Duration) {
	if !e.baseline || s.ID != e.id || s.Gen != e.gen || s.Count < e.count {
		e.id, e.gen, e.sum, e.count, e.baseline = s.ID, s.Gen, s.Sum, s.Count, true
		return
	}
	n := s.Count - e.count
	sum := s.Sum - e.sum
	e.sum, e.count = s.Sum, s.Count
	if n > 0 {
		e.passive.add(sum/time.Duration(n), now, halfLife)
	}
}

// cost is the backend's cost under rt's source. ref, when not 0, is what
// its passive average moves toward while it gets no handshakes
// (passiveRefs: a least-time VIP's).
func (e *rtEstimate) cost(rt *config.ResponseTime, now time.Time, ref time.Duration) time.Duration {
	passive := e.passive.toward(ref, now, rt.HalfLife)
	switch rt.Source {
	case config.ResponsePassive:
		return passive
	case config.ResponseActive:
		return e.active.value()
	}
	if !e.passive.at.IsZero() && now.Sub(e.passive.at) <= rtBothStale {
		return passive
	}
	if !e.active.at.IsZero() {
		return e.active.value()
	}
	return passive
}

// passiveRefs returns, for each backend of a least-time VIP v measuring
// passively (ests in v.Backends' order), the median of the other
// backends' passive averages (the lower middle one of an even count; 0
// when no other backend has one); all 0 for any other VIP.
//
// Least-time's recovery rule: a backend that least-time judged slow gets
// few or no new flows, so few or no handshakes measure it, and its
// average would stay at its slow value long after the backend recovered,
// starving it. Instead its cost moves toward the VIP's typical time with
// the half-life while it gets no handshakes, until it wins new flows
// again; their handshakes then measure it afresh (docs/schedulers.md,
// "Recovery").
func passiveRefs(v config.VIP, ests []*rtEstimate) []time.Duration {
	refs := make([]time.Duration, len(ests))
	if v.Scheduler != config.SchedulerLeastTime || !v.ResponseTime.Passive() {
		return refs
	}
	vals := make([]time.Duration, 0, len(ests))
	for _, e := range ests {
		if !e.passive.at.IsZero() {
			vals = append(vals, e.passive.value())
		}
	}
	for i, e := range ests {
		others := vals
		if !e.passive.at.IsZero() {
			others = slices.Clone(vals)
			if j := slices.Index(others, e.passive.value()); j >= 0 {
				others = slices.Delete(others, j, j+1)
			}
		}
		if len(others) == 0 {
			continue
		}
		others = slices.Clone(others)
		slices.Sort(others)
		refs[i] = others[(len(others)-1)/2]
	}
	return refs
}

// snapshot returns the backends' response times as of the last fold.
func (f *rtFolder) snapshot() map[datapath.VIP]map[netip.Addr]BackendRT {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shown
}

// BackendResponseTimes implements metrics.ResponseSource.
func (d *Daemon) BackendResponseTimes() map[datapath.VIP]map[netip.Addr]map[string]time.Duration {
	if d.rt == nil {
		return nil
	}
	out := make(map[datapath.VIP]map[netip.Addr]map[string]time.Duration)
	for vip, m := range d.rt.snapshot() {
		bs := make(map[netip.Addr]map[string]time.Duration, len(m))
		for a, rt := range m {
			s := make(map[string]time.Duration, 2)
			if rt.Passive > 0 {
				s[string(config.ResponsePassive)] = rt.Passive
			}
			if rt.Active > 0 {
				s[string(config.ResponseActive)] = rt.Active
			}
			bs[a] = s
		}
		out[vip] = bs
	}
	return out
}

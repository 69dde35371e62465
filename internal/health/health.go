// Package health probes backends (tcp connect, http(s) GET, udp
// request/reply) and turns the results into up/down states with rise/fall
// hysteresis. It only observes: a transition is handed to a callback, and the
// daemon passes it on to the reconciler, which decides what the datapath does
// with a down backend.
//
// Each target (one backend of one VIP) is probed by its own goroutine, so a
// target never runs two probes at once and a slow backend delays no other.
// First probes are spread over the interval so that many targets do not fire
// together.
package health

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// State is a target's health. internal/reconcile uses the same type for the
// state it acts on.
type State int

// Target states. A target is Unknown until rise successes or fall failures
// in a row have been seen.
const (
	Unknown State = iota
	Up
	Down
)

func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return "unknown"
}

// MarshalText renders the state as its name, for JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Target is one backend of one VIP with the check that applies to it.
// A target is identified by VIP and Backend; Check may change between two
// calls to Checker.Set.
type Target struct {
	VIP     datapath.VIP
	Backend netip.Addr
	Check   config.HealthCheck // resolved: Port set, defaults applied
	// Mode is the VIP's forwarding mode and MAC the backend's configured
	// MAC (nil: resolved). Only through-datapath checks use them: their
	// probes reach the backend as the VIP's traffic does.
	Mode config.Mode
	MAC  net.HardwareAddr
}

// Steerer has the data path steer the probes of through-datapath checks:
// packets carrying a mark go to one target's backend (internal/healthsteer
// does it at tc egress; the daemon implements this interface).
type Steerer interface {
	// Steer makes packets with mark reach t's backend. The checker calls
	// it from t's goroutine before t's first probe and again before the
	// probe after a failed one (so a changed route or MAC is picked up);
	// an error fails that probe.
	Steer(ctx context.Context, mark uint32, t Target) error
	// Unsteer removes mark's steering once its target is gone; the mark
	// may be given to another target afterwards.
	Unsteer(mark uint32)
}

// DefaultMarkBase and DefaultMarkCount are the socket marks of
// through-datapath probes unless Options say otherwise: 0x46430000 to
// 0x4643ffff, one per target. They match pkg/healthsteer's defaults.
const (
	DefaultMarkBase  uint32 = 0x46430000
	DefaultMarkCount uint32 = 1 << 16
)

// Status is the observed state of a target.
type Status struct {
	Target
	State State
	// Since is the time of the last transition, zero while unknown.
	Since time.Time
	// LastError is the error of the last failed probe, "" if no probe has
	// failed yet. It is kept after later successes, for diagnosis.
	LastError string
	// LastLatency is how long the last probe took, failed or not.
	LastLatency time.Duration
	// ResponseTime is how long the last successful probe took: the
	// connect time of a tcp check, the time to the response (read up to
	// its size limit) of an http(s) one, to the reply of a udp one; 0
	// before the first success. A failed probe says nothing of how fast
	// the backend answers, so it leaves it. It is least-time's active
	// source (docs/schedulers.md).
	ResponseTime time.Duration
	// Answered counts the successful probes, so that a reader of
	// ResponseTime tells a new measurement from one it has seen.
	Answered uint64
	// ConsecutiveOK and ConsecutiveFail count the probes in a row that
	// succeeded or failed; one of them is always 0.
	ConsecutiveOK, ConsecutiveFail int
}

// Transition is a change of a target's state.
type Transition struct {
	Target
	From, To State
	// Err is the error of the probe that caused a transition to Down.
	Err string
}

// Options configure a Checker.
type Options struct {
	// Log receives one line per transition; nil discards them.
	Log *slog.Logger
	// OnChange is called on every transition, from the checker's
	// goroutines (one per target, so the calls for one target are in
	// order). It must not block long: the target is not probed meanwhile.
	OnChange func(Transition)
	// Observe, if not nil, is called after every probe with the check
	// kind (tcp, http, https, udp), its latency and whether it succeeded.
	Observe func(kind string, latency time.Duration, ok bool)
	// Steer steers through-datapath probes; without it such checks fail
	// with an error saying so.
	Steer Steerer
	// MarkBase and MarkCount are the socket marks given to
	// through-datapath targets, [MarkBase, MarkBase+MarkCount); zero
	// values mean DefaultMarkBase and DefaultMarkCount. They must match
	// the steering program's range.
	MarkBase, MarkCount uint32
}

// key identifies a target.
type key struct {
	vip     datapath.VIP
	backend netip.Addr
}

// Checker probes a set of targets.
type Checker struct {
	log      *slog.Logger
	onChange func(Transition)
	observe  func(string, time.Duration, bool)

	// probe runs one probe; tests replace it.
	probe func(ctx context.Context, t *target) error

	steer               Steerer
	markBase, markCount uint32

	mu       sync.Mutex
	targets  map[key]*target
	marks    map[uint32]bool // marks held by through-datapath targets
	nextMark uint32          // where the search for a free mark starts
	running  bool            // within Run
	wg       sync.WaitGroup  // target goroutines
	live     int             // target goroutines running, for tests
}

// target is the checker's record of one target.
type target struct {
	key  key
	wake chan struct{} // the check's interval changed: reschedule

	// steered is whether the mark's steering is in place; only the
	// target's goroutine uses it.
	steered bool

	// guarded by Checker.mu
	stop    context.CancelFunc // ends the goroutine; nil when none runs
	running bool               // the goroutine has not exited yet
	check   config.HealthCheck
	prober  prober
	removed bool
	status  Status
	// mark is the socket mark of a through-datapath target, 0 for
	// others. It is fixed for the record's life: a target that starts or
	// stops checking through the data path is replaced by a new record.
	mark uint32
}

// New returns a checker with no targets. Call Run to start probing.
func New(opts Options) *Checker {
	c := &Checker{
		log:       opts.Log,
		onChange:  opts.OnChange,
		observe:   opts.Observe,
		steer:     opts.Steer,
		markBase:  opts.MarkBase,
		markCount: opts.MarkCount,
		targets:   make(map[key]*target),
		marks:     make(map[uint32]bool),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.markBase == 0 {
		c.markBase = DefaultMarkBase
	}
	if c.markCount == 0 {
		c.markCount = DefaultMarkCount
	}
	c.probe = c.runProbe
	return c
}

// Set replaces the target set: targets that stay (same VIP and backend)
// keep their state and schedule, and a changed check applies from their
// next probe; new ones start Unknown; removed ones stop, without a
// transition. A target that starts or stops checking through the data
// path, or whose mode or MAC changes while it does, starts afresh as a new
// one. Targets whose check cannot be run (no port, unknown type, no mark
// left) are left out and logged. Safe to call at any time, before Run
// included.
func (c *Checker) Set(targets []Target) {
	want := make(map[key]Target, len(targets))
	for _, t := range targets {
		hc, err := resolve(t)
		if err != nil {
			c.log.Error("health check left out", "vip", t.VIP.String(), "backend", t.Backend.String(), "err", err)
			continue
		}
		t.Check = hc
		want[key{t.VIP, t.Backend}] = t
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	for k, t := range c.targets {
		if w, ok := want[k]; !ok || !sameSteering(t.status.Target, w) {
			c.remove(t)
		}
	}
	for k, w := range want {
		hc := w.Check
		t, ok := c.targets[k]
		if ok {
			if sameCheck(t.check, hc) {
				continue
			}
			rescheduled := t.check.Interval != hc.Interval
			t.prober.close()
			t.check, t.prober = hc, newProber(hc, t.mark)
			t.status.Check = hc
			if rescheduled {
				select {
				case t.wake <- struct{}{}:
				default:
				}
			}
			continue
		}
		var mark uint32
		if hc.ThroughDatapath {
			var ok bool
			if mark, ok = c.allocMark(); !ok {
				c.log.Error("health check left out", "vip", k.vip.String(), "backend", k.backend.String(),
					"err", fmt.Sprintf("no socket mark left for a through-datapath check: %d are in use", c.markCount))
				continue
			}
		}
		w.MAC = slices.Clone(w.MAC)
		t = &target{
			key:    k,
			wake:   make(chan struct{}, 1),
			check:  hc,
			prober: newProber(hc, mark),
			mark:   mark,
			status: Status{Target: w},
		}
		c.targets[k] = t
		if c.running {
			c.start(t)
		}
	}
}

// remove drops t from the set and stops its goroutine. Its mark is
// released at once if no goroutine runs, else by the goroutine as it
// exits, so that a Steer in flight cannot outlive the release. c.mu must
// be held.
func (c *Checker) remove(t *target) {
	t.removed = true
	t.prober.close()
	if t.stop != nil {
		t.stop()
	}
	delete(c.targets, t.key)
	if !t.running {
		c.releaseMark(t)
	}
}

// allocMark returns a free mark of the range. c.mu must be held.
func (c *Checker) allocMark() (uint32, bool) {
	if uint32(len(c.marks)) >= c.markCount {
		return 0, false
	}
	for {
		m := c.markBase + c.nextMark
		c.nextMark = (c.nextMark + 1) % c.markCount
		if !c.marks[m] {
			c.marks[m] = true
			return m, true
		}
	}
}

// releaseMark removes t's steering and frees its mark. c.mu must be held.
func (c *Checker) releaseMark(t *target) {
	if t.mark == 0 {
		return
	}
	if c.steer != nil {
		c.steer.Unsteer(t.mark)
	}
	delete(c.marks, t.mark)
	t.mark = 0
}

// sameSteering reports whether a target record made for a can serve b:
// through-datapath targets are steered by mode and MAC, fixed per record.
func sameSteering(a, b Target) bool {
	if a.Check.ThroughDatapath != b.Check.ThroughDatapath {
		return false
	}
	return !a.Check.ThroughDatapath || (a.Mode == b.Mode && slices.Equal(a.MAC, b.MAC))
}

// Run probes the targets until ctx ends, then stops every probe and
// returns nil once all of its goroutines have exited. It returns an error
// at once if the checker is already running.
func (c *Checker) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("health checker is already running")
	}
	c.running = true
	for _, t := range c.targets {
		c.start(t)
	}
	c.mu.Unlock()

	<-ctx.Done()

	c.mu.Lock()
	c.running = false
	for _, t := range c.targets {
		if t.stop != nil {
			t.stop()
			t.stop = nil
		}
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// Statuses returns the status of every target, sorted by VIP then backend.
func (c *Checker) Statuses() []Status {
	c.mu.Lock()
	out := make([]Status, 0, len(c.targets))
	for _, t := range c.targets {
		s := t.status
		s.Check.ExpectStatus = slices.Clone(s.Check.ExpectStatus)
		s.MAC = slices.Clone(s.MAC)
		out = append(out, s)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int {
		if c := a.VIP.Addr.Compare(b.VIP.Addr); c != 0 {
			return c
		}
		if c := cmp.Compare(a.VIP.Port, b.VIP.Port); c != 0 {
			return c
		}
		if c := cmp.Compare(a.VIP.Proto, b.VIP.Proto); c != 0 {
			return c
		}
		return a.Backend.Compare(b.Backend)
	})
	return out
}

// start launches t's goroutine, which runs until t.stop is called (by Set
// when t is removed, by Run when its context ends). c.mu must be held.
func (c *Checker) start(t *target) {
	ctx, cancel := context.WithCancel(context.Background())
	t.stop = cancel
	t.running = true
	t.steered = false // the steering may have gone with an earlier Run
	c.wg.Add(1)
	c.live++
	go func() {
		defer func() {
			c.mu.Lock()
			c.live--
			t.running = false
			if t.removed {
				c.releaseMark(t)
			}
			c.mu.Unlock()
			c.wg.Done()
		}()
		c.loop(ctx, t)
	}()
}

// loop probes t every interval until ctx ends. The first probe comes at a
// random point of the first interval.
func (c *Checker) loop(ctx context.Context, t *target) {
	c.mu.Lock()
	interval := t.check.Interval
	c.mu.Unlock()
	var last time.Time // start of the last probe
	next := time.Now().Add(rand.N(interval))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
			c.mu.Lock()
			interval = t.check.Interval
			c.mu.Unlock()
			if last.IsZero() {
				next = time.Now().Add(rand.N(interval))
			} else {
				next = last.Add(interval)
			}
			timer.Reset(time.Until(next))
			continue
		case <-timer.C:
		}

		last = time.Now()
		c.probeOnce(ctx, t)
		if ctx.Err() != nil {
			return
		}
		// Keep to the grid of the schedule; a probe that overran its
		// slot (it cannot by more than its timeout) is followed by the
		// next one at once rather than by a burst.
		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now
		}
		timer.Reset(time.Until(next))
	}
}

// probeOnce runs one probe of t and records its result.
func (c *Checker) probeOnce(ctx context.Context, t *target) {
	c.mu.Lock()
	hc := t.check
	c.mu.Unlock()

	pctx, cancel := context.WithTimeout(ctx, hc.Timeout)
	start := time.Now()
	err := c.probe(pctx, t)
	latency := time.Since(start)
	cancel()
	if ctx.Err() != nil {
		return // stopped or removed mid-probe: the result means nothing
	}
	if c.observe != nil {
		c.observe(hc.Type, latency, err == nil)
	}

	c.mu.Lock()
	if t.removed {
		c.mu.Unlock()
		return
	}
	s := &t.status
	s.LastLatency = latency
	from := s.State
	to := from
	if err == nil {
		s.ResponseTime = latency
		s.Answered++
		s.ConsecutiveOK++
		s.ConsecutiveFail = 0
		if from != Up && s.ConsecutiveOK >= hc.Rise {
			to = Up
		}
	} else {
		s.LastError = err.Error()
		s.ConsecutiveFail++
		s.ConsecutiveOK = 0
		if from != Down && s.ConsecutiveFail >= hc.Fall {
			to = Down
		}
	}
	if to == from {
		c.mu.Unlock()
		return
	}
	s.State = to
	s.Since = time.Now()
	tr := Transition{Target: s.Target, From: from, To: to}
	tr.Check.ExpectStatus = slices.Clone(tr.Check.ExpectStatus)
	if to == Down {
		tr.Err = s.LastError
	}
	c.mu.Unlock()

	attrs := []any{"vip", tr.VIP.String(), "backend", tr.Backend.String(), "check", hc.Type, "from", from.String()}
	if to == Up {
		c.log.Info("backend up", append(attrs, "successes", hc.Rise)...)
	} else {
		c.log.Warn("backend down", append(attrs, "failures", hc.Fall, "err", tr.Err)...)
	}
	if c.onChange != nil {
		c.onChange(tr)
	}
}

// resolve checks that t's check can be run and fills what a resolved check
// may still lack: a port (the VIP's) and the settings config.Parse defaults.
func resolve(t Target) (config.HealthCheck, error) {
	hc := t.Check
	hc.ExpectStatus = slices.Clone(hc.ExpectStatus)
	switch hc.Type {
	case "tcp", "http", "https", "udp":
	default:
		return hc, fmt.Errorf("unknown check type %q", hc.Type)
	}
	if !t.Backend.IsValid() {
		return hc, errors.New("no backend address")
	}
	if hc.Port == 0 {
		hc.Port = t.VIP.Port
	}
	if hc.Port == 0 {
		return hc, errors.New("no port to probe: the VIP serves every port and the check sets none")
	}
	if hc.Interval <= 0 {
		hc.Interval = config.DefaultHealthInterval
	}
	if hc.Timeout <= 0 || hc.Timeout > hc.Interval {
		hc.Timeout = min(config.DefaultHealthTimeout, hc.Interval)
	}
	if hc.Rise < 1 {
		hc.Rise = config.DefaultHealthRise
	}
	if hc.Fall < 1 {
		hc.Fall = config.DefaultHealthFall
	}
	if hc.Path == "" && (hc.Type == "http" || hc.Type == "https") {
		hc.Path = "/"
	}
	if len(hc.ExpectStatus) == 0 && (hc.Type == "http" || hc.Type == "https") {
		hc.ExpectStatus = []int{200}
	}
	return hc, nil
}

// sameCheck reports whether two checks are identical.
func sameCheck(a, b config.HealthCheck) bool {
	return a.Type == b.Type && a.Interval == b.Interval && a.Timeout == b.Timeout &&
		a.Rise == b.Rise && a.Fall == b.Fall && a.Port == b.Port && a.Path == b.Path &&
		slices.Equal(a.ExpectStatus, b.ExpectStatus) && a.Host == b.Host &&
		a.SkipVerify == b.SkipVerify && a.Payload == b.Payload && a.Expect == b.Expect &&
		a.Source == b.Source && a.OnDown == b.OnDown && a.AllDown == b.AllDown &&
		a.ThroughDatapath == b.ThroughDatapath
}

// Targets returns the targets of the given VIPs: one per backend whose
// check (its own, or the one it inherits from its VIP, as config.Parse
// resolves them) is not "none".
func Targets(vips []config.VIP) []Target {
	var out []Target
	for _, v := range vips {
		proto, err := datapath.ParseProto(v.Protocol)
		if err != nil {
			continue // config.Parse admits only valid protocols
		}
		key := datapath.VIP{Addr: v.Address, Port: v.Port, Proto: proto}
		for _, b := range v.Backends {
			if b.HealthCheck == nil {
				continue
			}
			hc := *b.HealthCheck
			hc.ExpectStatus = slices.Clone(hc.ExpectStatus)
			out = append(out, Target{VIP: key, Backend: b.Address, Check: hc, Mode: v.Mode, MAC: slices.Clone(b.MAC)})
		}
	}
	return out
}

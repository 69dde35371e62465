package daemon

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/health"
)

func TestEWMA(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var e ewma
	if e.value() != 0 {
		t.Fatalf("empty EWMA = %v, want 0", e.value())
	}
	e.add(10*time.Millisecond, t0, time.Second)
	if e.value() != 10*time.Millisecond {
		t.Fatalf("first sample: %v, want it whole, 10ms", e.value())
	}
	// One half-life later a sample moves the value half-way.
	e.add(30*time.Millisecond, t0.Add(time.Second), time.Second)
	if e.value() != 20*time.Millisecond {
		t.Fatalf("a sample one half-life on: %v, want 20ms", e.value())
	}
	// Folds every 100 ms of a constant sample: after ten (one half-life)
	// the distance to it halves, after 100 (ten) it is within 2^-10.
	e = ewma{}
	e.add(0, t0, time.Second)
	at := t0
	for i := 1; i <= 100; i++ {
		at = at.Add(rtInterval)
		e.add(time.Second, at, time.Second)
		if i == 10 {
			if d := math.Abs(float64(e.value()) - float64(time.Second/2)); d > float64(time.Microsecond) {
				t.Errorf("after one half-life of folds: %v, want 500ms", e.value())
			}
		}
	}
	if gap := time.Second - e.value(); gap < 0 || float64(gap) > float64(time.Second)/1024+float64(time.Microsecond) {
		t.Errorf("after ten half-lives of folds: %v, want within 1/1024 of 1s", e.value())
	}
}

// fakeRT is an rtSource whose samples the test sets.
type fakeRT struct {
	samples map[netip.Addr]datapath.BackendSamples
	costs   map[netip.Addr]time.Duration
	writes  int
}

func (f *fakeRT) ResponseSamples(datapath.VIP) (map[netip.Addr]datapath.BackendSamples, error) {
	return f.samples, nil
}

func (f *fakeRT) SetBackendCost(_ datapath.VIP, b netip.Addr, rt time.Duration) error {
	f.costs[b] = rt
	f.writes++
	return nil
}

// TestRTFold folds passive samples and probe answers as the daemon does:
// the first read is a baseline, each later one's mean is a sample, a new
// backend entry starts over, both prefers recent passive samples, and a
// cost is written only when it changes.
func TestRTFold(t *testing.T) {
	a, b := netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12")
	v := config.VIP{Address: netip.MustParseAddr("203.0.113.10"), Port: 80, Protocol: "tcp",
		Backends:     []config.Backend{{Address: a}, {Address: b}},
		ResponseTime: &config.ResponseTime{Source: config.ResponseBoth, HalfLife: time.Second}}
	src := &fakeRT{samples: map[netip.Addr]datapath.BackendSamples{
		a: {ID: 1, Gen: 1, Sum: 5 * time.Second, Count: 100}, // before the folder: not a sample
	}, costs: map[netip.Addr]time.Duration{}}
	var statuses []health.Status
	vips := []config.VIP{v}
	f := newRTFolder(src, func() []config.VIP { return vips }, func() []health.Status { return statuses })
	key := datapath.VIP{Addr: v.Address, Port: 80, Proto: datapath.TCP}
	t0 := time.Unix(1000, 0)
	rt := func(addr netip.Addr) BackendRT { return f.snapshot()[key][addr] }

	f.fold(t0)
	if got := rt(a); got.Cost != 0 || got.Passive != 0 || src.writes != 0 {
		t.Fatalf("after the baseline: %+v, %d writes, want nothing measured, nothing written", got, src.writes)
	}
	// Four handshakes of 10, 20, 30, 40 ms: one sample, their mean.
	src.samples[a] = datapath.BackendSamples{ID: 1, Gen: 1, Sum: 5*time.Second + 100*time.Millisecond, Count: 104}
	// b is probed: 3 ms.
	statuses = []health.Status{{Target: health.Target{VIP: key, Backend: b}, ResponseTime: 3 * time.Millisecond, Answered: 1}}
	f.fold(t0.Add(rtInterval))
	if got := rt(a); got.Passive != 25*time.Millisecond || got.Cost != 25*time.Millisecond {
		t.Errorf("a after four handshakes: %+v, want passive and cost 25ms", got)
	}
	if got := rt(b); got.Active != 3*time.Millisecond || got.Cost != 3*time.Millisecond || got.Passive != 0 {
		t.Errorf("b after one probe: %+v, want active and cost 3ms (no passive sample)", got)
	}
	if src.costs[a] != 25*time.Millisecond || src.costs[b] != 3*time.Millisecond || src.writes != 2 {
		t.Errorf("costs written %v in %d writes, want a 25ms, b 3ms in 2", src.costs, src.writes)
	}
	// No new samples, the same answer: nothing moves, nothing written.
	f.fold(t0.Add(2 * rtInterval))
	if src.writes != 2 || rt(a).Cost != 25*time.Millisecond {
		t.Errorf("a fold without samples wrote %d times (want 2), a's cost %v", src.writes, rt(a).Cost)
	}
	// b's entry is replaced (removed, added): its counters are another
	// backend's, a baseline again. a's passive samples go stale under
	// both: past rtBothStale its cost is the probes' once it has one.
	src.samples[b] = datapath.BackendSamples{ID: 7, Gen: 3, Sum: time.Hour, Count: 9}
	f.fold(t0.Add(3 * rtInterval))
	if got := rt(b); got.Passive != 0 {
		t.Errorf("b's first read of a new entry made a sample: %+v", got)
	}
	statuses = append(statuses, health.Status{Target: health.Target{VIP: key, Backend: a}, ResponseTime: 7 * time.Millisecond, Answered: 4})
	late := t0.Add(rtInterval + rtBothStale + time.Millisecond)
	f.fold(late)
	if got := rt(a); got.Cost != 7*time.Millisecond || got.Passive != 25*time.Millisecond {
		t.Errorf("a with stale handshakes and a probe: %+v, want cost 7ms (active), passive kept 25ms", got)
	}
	// A VIP that stops measuring: its costs are cleared.
	vips = []config.VIP{{Address: v.Address, Port: 80, Protocol: "tcp", Backends: v.Backends}}
	f.fold(late.Add(rtInterval))
	if src.costs[a] != 0 || src.costs[b] != 0 || len(f.snapshot()) != 0 {
		t.Errorf("after response_time went: costs %v, shown %v, want all cleared", src.costs, f.snapshot())
	}
}

// TestRTFoldLeastTimeRecovery: under least-time, a backend that gets no
// handshakes (least-time judged it slow) has its cost move toward the
// median of the others' passive times with the half-life, so it wins new
// flows again and is measured afresh; a handshake after the gap is taken
// nearly whole. The same backend of a VIP of another scheduler keeps its
// last measured cost.
func TestRTFoldLeastTimeRecovery(t *testing.T) {
	a, b, c := netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12"), netip.MustParseAddr("198.18.0.13")
	for _, sched := range []config.Scheduler{config.SchedulerLeastTime, config.SchedulerLeastConn} {
		v := config.VIP{Address: netip.MustParseAddr("203.0.113.10"), Port: 80, Protocol: "tcp", Scheduler: sched,
			Backends:     []config.Backend{{Address: a}, {Address: b}, {Address: c}},
			ResponseTime: &config.ResponseTime{Source: config.ResponsePassive, HalfLife: time.Second}}
		// a and b answer in 100 µs and 300 µs, c in 20 ms; one
		// handshake each per fold while it gets them.
		const fast, fast2, slow = 100 * time.Microsecond, 300 * time.Microsecond, 20 * time.Millisecond
		src := &fakeRT{samples: map[netip.Addr]datapath.BackendSamples{a: {ID: 1, Gen: 1}, b: {ID: 2, Gen: 1}, c: {ID: 3, Gen: 1}},
			costs: map[netip.Addr]time.Duration{}}
		f := newRTFolder(src, func() []config.VIP { return []config.VIP{v} }, func() []health.Status { return nil })
		key := datapath.VIP{Addr: v.Address, Port: 80, Proto: datapath.TCP}
		add := func(addr netip.Addr, d time.Duration) {
			s := src.samples[addr]
			s.Sum += d
			s.Count++
			src.samples[addr] = s
		}
		t0 := time.Unix(1000, 0)
		f.fold(t0) // the baseline
		add(a, fast)
		add(b, fast2)
		add(c, slow)
		f.fold(t0.Add(rtInterval))
		if got := f.snapshot()[key][c].Cost; got != slow {
			t.Fatalf("%s: c's cost after its handshake %v, want %v", sched, got, slow)
		}
		// c gets no handshakes for ten half-lives (100 folds); a and b
		// go on.
		at := t0.Add(rtInterval)
		var afterOne time.Duration
		for i := 1; i <= 100; i++ {
			at = at.Add(rtInterval)
			add(a, fast)
			add(b, fast2)
			f.fold(at)
			if i == 10 {
				afterOne = f.snapshot()[key][c].Cost
			}
		}
		got := f.snapshot()[key][c]
		if sched != config.SchedulerLeastTime {
			if got.Cost != slow || afterOne != slow {
				t.Errorf("%s: c's cost %v after one half-life, %v after ten, want it kept at %v", sched, afterOne, got.Cost, slow)
			}
			continue
		}
		// The others' median of two is the lower: a's 100 µs.
		if want := fast + (slow-fast)/2; afterOne < want-time.Microsecond || afterOne > want+time.Microsecond {
			t.Errorf("c's cost after one half-life without handshakes %v, want half-way to a's %v: %v", afterOne, fast, want)
		}
		if d := got.Cost - fast; d < 0 || d > (slow-fast)/1000 {
			t.Errorf("c's cost after ten half-lives %v, want within 1/1000 of the way to %v", got.Cost, fast)
		}
		if got.Passive != slow || src.costs[c] != got.Cost {
			t.Errorf("c: passive %v (want its last measure %v kept), written %v (want the cost %v)", got.Passive, slow, src.costs[c], got.Cost)
		}
		// Still slow: its next handshake, after the gap, is taken nearly
		// whole (1 - 2^-10 of it), so it does not keep the fast cost.
		add(c, slow)
		f.fold(at.Add(rtInterval))
		if got := f.snapshot()[key][c].Cost; got < slow-slow/500 {
			t.Errorf("c's cost after a slow handshake following ten half-lives %v, want nearly %v", got, slow)
		}
	}
}

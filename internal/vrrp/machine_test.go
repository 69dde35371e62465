package vrrp

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The state machine runs here on a simulated clock and network: every
// advertisement reaches every other connected node after a fixed latency,
// and the simulation jumps from event to event, so timings are exact.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type change struct {
	at       time.Duration // since t0
	from, to State
	why      string
}

type simNode struct {
	name  string
	m     machine
	net   *simNet
	up    bool // running and connected
	cut   bool // partitioned away from the others
	sent  []uint8
	sends []time.Duration
	log   []change
}

func (n *simNode) advertise(priority uint8) {
	n.sent = append(n.sent, priority)
	n.sends = append(n.sends, n.net.now.Sub(t0))
	n.net.broadcast(n, priority)
}

func (n *simNode) transition(from, to State, why string) {
	n.log = append(n.log, change{n.net.now.Sub(t0), from, to, why})
}

// became returns when the node last entered state s, or -1.
func (n *simNode) became(s State) time.Duration {
	for i := len(n.log) - 1; i >= 0; i-- {
		if n.log[i].to == s {
			return n.log[i].at
		}
	}
	return -1
}

func (n *simNode) history() string {
	var b strings.Builder
	for _, c := range n.log {
		fmt.Fprintf(&b, "%v %s→%s (%s); ", c.at, c.from, c.to, c.why)
	}
	return b.String()
}

type delivery struct {
	at       time.Time
	to       *simNode
	src      netip.Addr
	priority uint8
	interval int
}

type simNet struct {
	t       *testing.T
	now     time.Time
	latency time.Duration
	nodes   []*simNode
	queue   []delivery
}

func newSim(t *testing.T) *simNet {
	return &simNet{t: t, now: t0, latency: time.Millisecond}
}

type nodeOpts struct {
	priority     uint8
	interval     int
	preempt      bool
	preemptDelay time.Duration
	addr         string
}

func (s *simNet) add(name string, o nodeOpts) *simNode {
	if o.interval == 0 {
		o.interval = 10
	}
	n := &simNode{name: name, net: s}
	n.m = machine{
		out: n, priority: o.priority, advertInt: o.interval, masterInt: o.interval,
		preempt: o.preempt, preemptDelay: o.preemptDelay, primary: netip.MustParseAddr(o.addr),
	}
	s.nodes = append(s.nodes, n)
	return n
}

func (s *simNet) start(n *simNode) {
	n.up = true
	n.m.start(s.now, "startup")
}

func (s *simNet) stop(n *simNode) {
	n.m.shutdown("shutdown")
	n.up = false
}

// kill makes a node vanish without a word (power off, link cut).
func (s *simNet) kill(n *simNode) {
	n.up = false
	n.m.adverAt, n.m.downAt = time.Time{}, time.Time{}
}

func (s *simNet) broadcast(from *simNode, priority uint8) {
	if from.cut {
		return
	}
	for _, n := range s.nodes {
		if n != from && !n.cut {
			s.queue = append(s.queue, delivery{s.now.Add(s.latency), n, from.m.primary, priority, from.m.advertInt})
		}
	}
}

// run processes events until d after t0.
func (s *simNet) run(d time.Duration) {
	end := t0.Add(d)
	for {
		// Earliest event: a delivery or a timer.
		var at time.Time
		di := -1
		for i, q := range s.queue {
			if at.IsZero() || q.at.Before(at) {
				at, di = q.at, i
			}
		}
		var tn *simNode
		for _, n := range s.nodes {
			if nx := n.m.next(); n.up && !nx.IsZero() && (at.IsZero() || nx.Before(at)) {
				at, tn, di = nx, n, -1
			}
		}
		if at.IsZero() || at.After(end) {
			s.now = end
			return
		}
		s.now = at
		if di >= 0 {
			q := s.queue[di]
			s.queue = append(s.queue[:di], s.queue[di+1:]...)
			if q.to.up {
				q.to.m.receive(s.now, q.src, q.priority, q.interval)
			}
			continue
		}
		tn.m.tick(s.now)
	}
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func expectState(t *testing.T, n *simNode, want State) {
	t.Helper()
	if n.m.state != want {
		t.Errorf("%s is %s, want %s; history: %s", n.name, n.m.state, want, n.history())
	}
}

func TestSkewAndDownInterval(t *testing.T) {
	for _, tc := range []struct {
		priority        uint8
		interval        int
		skew, downIntvl int
	}{
		{100, 10, 6, 36}, // the defaults: 360 ms
		{200, 10, 2, 32},
		{254, 10, 0, 30},
		{1, 10, 9, 39},
		{100, 2, 1, 7}, // 20 ms interval: 70 ms
		{200, 2, 0, 6},
		{100, 100, 60, 360},
		{1, 4095, 4079, 16364},
	} {
		m := machine{priority: tc.priority, masterInt: tc.interval}
		if m.skew() != tc.skew || m.downInterval() != tc.downIntvl {
			t.Errorf("priority %d, interval %d cs: skew %d, down interval %d; want %d, %d",
				tc.priority, tc.interval, m.skew(), m.downInterval(), tc.skew, tc.downIntvl)
		}
	}
}

func TestElection(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 200, preempt: true, addr: "198.18.0.2"})
	b := s.add("b", nodeOpts{priority: 100, preempt: true, addr: "198.18.0.3"})
	s.start(a)
	s.start(b)
	s.run(5 * time.Second)
	expectState(t, a, Master)
	expectState(t, b, Backup)
	// a's master-down interval: 3×100 ms + (56×10/256 = 2 cs) = 320 ms.
	if got := a.became(Master); got != ms(320) {
		t.Errorf("a became master at %v, want 320ms", got)
	}
	if b.became(Master) >= 0 {
		t.Errorf("b was master: %s", b.history())
	}
	if b.m.master != a.m.primary {
		t.Errorf("b's master is %s, want %s", b.m.master, a.m.primary)
	}
	// a advertised every 100 ms since.
	if n := len(a.sent); n < 46 || n > 48 {
		t.Errorf("a sent %d advertisements in 4.68 s as master, want 47±1", n)
	}
}

func TestSimFailover(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 200, preempt: true, addr: "198.18.0.2"})
	b := s.add("b", nodeOpts{priority: 100, preempt: true, addr: "198.18.0.3"})
	s.start(a)
	s.start(b)
	s.run(time.Second)
	s.kill(a)
	last := a.sends[len(a.sends)-1]
	s.run(3 * time.Second)
	expectState(t, b, Master)
	// b's master-down interval is 3×100 ms + 6 cs = 360 ms after the last
	// advertisement it heard (sent 1 ms earlier).
	if got, want := b.became(Master), last+s.latency+ms(360); got != want {
		t.Errorf("b became master at %v, want %v (last advertisement from a at %v)", got, want, last)
	}
}

func TestSimFailover20ms(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 200, interval: 2, preempt: true, addr: "198.18.0.2"})
	b := s.add("b", nodeOpts{priority: 100, interval: 2, preempt: true, addr: "198.18.0.3"})
	s.start(a)
	s.start(b)
	s.run(time.Second)
	expectState(t, a, Master)
	s.kill(a)
	last := a.sends[len(a.sends)-1]
	s.run(2 * time.Second)
	if got, want := b.became(Master), last+s.latency+ms(70); got != want {
		t.Errorf("b became master at %v, want %v (3×20 ms + 10 ms skew after %v)", got, want, last)
	}
}

func TestPreemption(t *testing.T) {
	for _, preempt := range []bool{true, false} {
		t.Run(fmt.Sprintf("preempt=%v", preempt), func(t *testing.T) {
			s := newSim(t)
			a := s.add("a", nodeOpts{priority: 200, preempt: preempt, addr: "198.18.0.2"})
			b := s.add("b", nodeOpts{priority: 100, preempt: true, addr: "198.18.0.3"})
			s.start(b)
			s.run(time.Second)
			expectState(t, b, Master)
			s.start(a) // at 1 s
			s.run(5 * time.Second)
			if !preempt {
				expectState(t, a, Backup)
				expectState(t, b, Master)
				return
			}
			expectState(t, a, Master)
			expectState(t, b, Backup)
			// a discards b's advertisements and takes over when its own
			// master-down timer (320 ms) runs out; b yields on a's first
			// advertisement.
			if got := a.became(Master); got != time.Second+ms(320) {
				t.Errorf("a became master at %v, want 1.32s", got)
			}
			if got := b.became(Backup); got != time.Second+ms(321) {
				t.Errorf("b became backup at %v, want 1.321s", got)
			}
		})
	}
}

func TestPreemptDelay(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 200, preempt: true, preemptDelay: 2 * time.Second, addr: "198.18.0.2"})
	b := s.add("b", nodeOpts{priority: 100, preempt: true, addr: "198.18.0.3"})
	s.start(b)
	s.run(time.Second)
	s.start(a) // at 1 s: no preemption before 3 s
	s.run(2900 * time.Millisecond)
	expectState(t, a, Backup)
	s.run(5 * time.Second)
	expectState(t, a, Master)
	expectState(t, b, Backup)
	got := a.became(Master)
	// After 3 s a discards b's advertisements; the timer reset by the last
	// one accepted runs out 320 ms later.
	if got < 3*time.Second+ms(220) || got > 3*time.Second+ms(320) {
		t.Errorf("a became master at %v, want within [3.22s, 3.32s]", got)
	}
}

func TestPriorityZero(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 200, preempt: true, addr: "198.18.0.2"})
	b := s.add("b", nodeOpts{priority: 100, preempt: true, addr: "198.18.0.3"})
	s.start(a)
	s.start(b)
	s.run(time.Second)
	s.stop(a) // at 1 s: advertises priority 0
	if got := a.sent[len(a.sent)-1]; got != 0 {
		t.Errorf("a's last advertisement has priority %d, want 0", got)
	}
	expectState(t, a, Initialize)
	s.run(2 * time.Second)
	expectState(t, b, Master)
	// b takes over after its skew time, 6 cs, not the 360 ms down interval.
	if got, want := b.became(Master), time.Second+s.latency+ms(60); got != want {
		t.Errorf("b became master at %v, want %v", got, want)
	}
}

func TestHandover(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 200, preempt: true, addr: "198.18.0.2"})
	b := s.add("b", nodeOpts{priority: 100, preempt: true, addr: "198.18.0.3"})
	s.start(a)
	s.start(b)
	s.run(time.Second)
	a.m.handover(s.now)
	expectState(t, a, Backup)
	s.run(5 * time.Second)
	// b took over after its skew time, and a, though of higher priority,
	// has not taken mastership back.
	expectState(t, b, Master)
	expectState(t, a, Backup)
	if got, want := b.became(Master), time.Second+s.latency+ms(60); got != want {
		t.Errorf("b became master at %v, want %v", got, want)
	}
	a.m.resume()
	s.run(6 * time.Second)
	expectState(t, a, Master)
	expectState(t, b, Backup)

	// A handed-over router still takes over when no master is left.
	a.m.handover(s.now)
	s.run(7 * time.Second)
	expectState(t, b, Master)
	s.kill(b)
	s.run(8 * time.Second)
	expectState(t, a, Master)
}

// TestSplitBrain: a partition makes both routers master; when it heals,
// the RFC's rules leave one master within one advertisement interval.
func TestSplitBrain(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pa, pb     uint8
		addA, addB string
		winner     string
	}{
		{"higher priority wins", 100, 200, "198.18.0.2", "198.18.0.3", "b"},
		{"tie: higher primary address wins", 150, 150, "198.18.0.2", "198.18.0.3", "b"},
		{"tie: higher primary address wins (other side)", 150, 150, "198.18.0.9", "198.18.0.3", "a"},
		{"ipv6 tie", 150, 150, "fe80::2", "fe80::10", "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t)
			a := s.add("a", nodeOpts{priority: tc.pa, preempt: false, addr: tc.addA})
			b := s.add("b", nodeOpts{priority: tc.pb, preempt: false, addr: tc.addB})
			a.cut = true
			s.start(a)
			s.start(b)
			s.run(2 * time.Second)
			expectState(t, a, Master)
			expectState(t, b, Master)
			a.cut = false // heal at 2 s
			s.run(4 * time.Second)
			win, lose := a, b
			if tc.winner == "b" {
				win, lose = b, a
			}
			expectState(t, win, Master)
			expectState(t, lose, Backup)
			if got := lose.became(Backup); got > 2*time.Second+ms(100)+s.latency {
				t.Errorf("%s stepped down at %v, want within one interval of the heal at 2s", lose.name, got)
			}
			if win.became(Master) > 2*time.Second {
				t.Errorf("the winner changed state after the heal: %s", win.history())
			}
		})
	}
}

func TestBackupLearnsInterval(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 200, interval: 100, preempt: true, addr: "198.18.0.2"}) // 1 s
	b := s.add("b", nodeOpts{priority: 100, interval: 2, preempt: true, addr: "198.18.0.3"})   // 20 ms
	s.start(a)
	s.run(5 * time.Second)
	s.start(b)
	s.run(10 * time.Second)
	expectState(t, a, Master)
	expectState(t, b, Backup)
	if b.m.masterInt != 100 {
		t.Errorf("b's Master_Adver_Interval = %d cs, want 100 (learned from a)", b.m.masterInt)
	}
	s.kill(a)
	last := a.sends[len(a.sends)-1]
	s.run(20 * time.Second)
	// 3×1 s + (156×100/256 = 60 cs) = 3.6 s.
	if got, want := b.became(Master), last+s.latency+3600*time.Millisecond; got != want {
		t.Errorf("b became master at %v, want %v", got, want)
	}
}

func TestOwner(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 255, addr: "198.18.0.2"})
	b := s.add("b", nodeOpts{priority: 254, preempt: true, addr: "198.18.0.3"})
	s.start(b)
	s.run(time.Second)
	expectState(t, b, Master)
	s.start(a)
	expectState(t, a, Master) // at once
	s.run(2 * time.Second)
	expectState(t, b, Backup)
	if got := b.became(Backup); got != time.Second+s.latency {
		t.Errorf("b stepped down at %v, want 1.001s", got)
	}
}

// TestSickMaster: a master whose priority drops below its backup's is
// preempted by it.
func TestSickMaster(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 200, preempt: true, addr: "198.18.0.2"})
	b := s.add("b", nodeOpts{priority: 100, preempt: true, addr: "198.18.0.3"})
	s.start(a)
	s.start(b)
	s.run(time.Second)
	n := len(a.sent)
	a.m.setPriority(s.now, 50)
	if len(a.sent) != n+1 || a.sent[n] != 50 {
		t.Errorf("a did not advertise its new priority at once: %v", a.sent[n:])
	}
	s.run(3 * time.Second)
	expectState(t, b, Master)
	expectState(t, a, Backup)
	// b discards the priority-50 advertisements: its timer, reset by the
	// last priority-200 one, runs out 360 ms after it.
	if got, want := b.became(Master), a.sends[n-1]+s.latency+ms(360); got != want {
		t.Errorf("b became master at %v, want %v", got, want)
	}
	a.m.setPriority(s.now, 200)
	s.run(5 * time.Second)
	expectState(t, a, Master)
}

func TestMasterIgnoresWeaker(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 200, addr: "198.18.0.2"})
	s.start(a)
	s.run(time.Second)
	now := s.now
	if a.m.receive(now, netip.MustParseAddr("198.18.0.9"), 100, 10) {
		t.Errorf("master accepted a lower-priority advertisement")
	}
	if a.m.receive(now, netip.MustParseAddr("198.18.0.1"), 200, 10) {
		t.Errorf("master accepted an equal-priority advertisement from a lower address")
	}
	expectState(t, a, Master)
	// Priority 0 from someone else: advertise at once.
	n := len(a.sent)
	a.m.receive(now, netip.MustParseAddr("198.18.0.9"), 0, 10)
	if len(a.sent) != n+1 {
		t.Errorf("master did not answer a priority-0 advertisement with its own")
	}
}

func TestFaultAndRestart(t *testing.T) {
	s := newSim(t)
	a := s.add("a", nodeOpts{priority: 200, preempt: true, addr: "198.18.0.2"})
	b := s.add("b", nodeOpts{priority: 100, preempt: true, addr: "198.18.0.3"})
	s.start(a)
	s.start(b)
	s.run(time.Second)
	a.m.fault("interface down")
	a.up = false
	expectState(t, a, Fault)
	if !a.m.next().IsZero() {
		t.Errorf("timers run in Fault")
	}
	s.run(2 * time.Second)
	expectState(t, b, Master)
	s.start(a) // the interface is back
	s.run(3 * time.Second)
	expectState(t, a, Master)
	expectState(t, b, Backup)
}

// The VRRP agent sends Stats to the daemon as JSON: every field must
// survive the trip.
func TestStatsJSONRoundTrip(t *testing.T) {
	want := Stats{
		State: Master, Priority: 200, Master: netip.MustParseAddr("198.18.0.2"), MasterAdvertInterval: 2,
		AdvertsSent: 1, AdvertsReceived: 2, PriorityZeroSent: 3, PriorityZeroReceived: 4, AddressMismatches: 5,
		GratuitousSent: 6, SendErrors: 7, Dropped: map[string]uint64{"bad_ttl": 8}, Transitions: 9, BecameMaster: 10,
		LastTransition: time.Unix(1700000000, 123456789), WorstSendDelay: 11, LateSends: 12, WorstSendCall: 13,
		WorstAdvertGap: 14, LateAdverts: 15,
	}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got Stats
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if !got.LastTransition.Equal(want.LastTransition) {
		t.Errorf("last transition %s, want %s", got.LastTransition, want.LastTransition)
	}
	got.LastTransition, want.LastTransition = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	for _, s := range []State{Initialize, Backup, Master, Fault} {
		var x State
		if err := x.UnmarshalText([]byte(s.String())); err != nil || x != s {
			t.Errorf("%s: read back as %s, %v", s, x, err)
		}
	}
	var x State
	if err := x.UnmarshalText([]byte("primary")); err == nil || !strings.Contains(err.Error(), `"primary"`) {
		t.Errorf("unknown state: %v, want an error naming it", err)
	}
}

func TestOptionsRealtime(t *testing.T) {
	for in, want := range map[int]int{0: DefaultRealtimePriority, -1: 0, 1: 1, 99: 99} {
		if got, err := (Options{RealtimePriority: in}).Realtime(); got != want || err != nil {
			t.Errorf("RealtimePriority %d: %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := (Options{RealtimePriority: 100}).Realtime(); err == nil || !strings.Contains(err.Error(), "100 is over 99") {
		t.Errorf("RealtimePriority 100: %v, want an error naming it", err)
	}
}

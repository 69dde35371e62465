package health

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// vipOn returns VIP 203.0.113.1:port/tcp.
func vipOn(port uint16) datapath.VIP {
	return datapath.VIP{Addr: netip.MustParseAddr("203.0.113.1"), Port: port, Proto: datapath.TCP}
}

// vipN returns the n-th test VIP, 203.0.113.0/24 port 1000+n.
func vipN(n int) datapath.VIP {
	return datapath.VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(n % 256)}), Port: uint16(1000 + n), Proto: datapath.TCP}
}

// recorder collects transitions.
type recorder struct {
	mu  sync.Mutex
	trs []Transition
	// stamp, if set, is called in OnChange and its result kept with the
	// transition (e.g. the probe count at that moment).
	stamp  func(Transition) int
	stamps []int
}

func (r *recorder) onChange(tr Transition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trs = append(r.trs, tr)
	if r.stamp != nil {
		r.stamps = append(r.stamps, r.stamp(tr))
	}
}

func (r *recorder) all() []Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.trs)
}

// of returns the transitions of the target with backend b in VIP v.
func (r *recorder) of(v datapath.VIP, b netip.Addr) []Transition {
	var out []Transition
	for _, tr := range r.all() {
		if tr.VIP == v && tr.Backend == b {
			out = append(out, tr)
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for concurrent writes, for logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.FieldsFunc(s.b.String(), func(r rune) bool { return r == '\n' })
}

// start runs c until the returned stop is called (or the test ends); stop
// waits for Run to return and fails the test if it returns an error.
func start(t *testing.T, c *Checker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or 10 s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func statusOf(c *Checker, v datapath.VIP, b netip.Addr) (Status, bool) {
	for _, s := range c.Statuses() {
		if s.VIP == v && s.Backend == b {
			return s, true
		}
	}
	return Status{}, false
}

func fast(typ string, port uint16, rise, fall int) config.HealthCheck {
	return config.HealthCheck{Type: typ, Port: port, Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond,
		Rise: rise, Fall: fall}
}

// scripted replaces c's probes: probe n (1-based) of a target succeeds if
// script[n-1] is '+' and fails if it is '-'; past the end of the script
// the last result repeats. It returns the probe count of a VIP.
func scripted(c *Checker, script map[datapath.VIP]string) func(datapath.VIP) int {
	var mu sync.Mutex
	counts := make(map[datapath.VIP]int)
	c.probe = func(ctx context.Context, t *target) error {
		mu.Lock()
		counts[t.key.vip]++
		n := counts[t.key.vip]
		mu.Unlock()
		s := script[t.key.vip]
		if s[min(n, len(s))-1] == '+' {
			return nil
		}
		return fmt.Errorf("scripted failure %d", n)
	}
	return func(v datapath.VIP) int {
		mu.Lock()
		defer mu.Unlock()
		return counts[v]
	}
}

type step struct {
	probe    int // the probe (1-based) after which it happens
	from, to State
}

func TestStateMachine(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rise, fall int
		script     string
		want       []step
	}{
		{"up after rise", 2, 3, "++", []step{{2, Unknown, Up}}},
		{"down after fall", 2, 3, "---", []step{{3, Unknown, Down}}},
		{"alternating stays unknown", 2, 3, "+-+-+-+-+-+-+-", nil},
		{"flapping while up holds", 2, 3, "++-+--+--+-+--++", []step{{2, Unknown, Up}}},
		{"flapping while down holds", 2, 3, "---+-+--+-+---", []step{{3, Unknown, Down}}},
		{"down and back", 2, 3, "++-+--+--+---+-++", []step{{2, Unknown, Up}, {13, Up, Down}, {17, Down, Up}}},
		{"rise 1 fall 1 follows every probe", 1, 1, "+-+-+", []step{
			{1, Unknown, Up}, {2, Up, Down}, {3, Down, Up}, {4, Up, Down}, {5, Down, Up}}},
		{"rise 3", 3, 2, "--+++", []step{{2, Unknown, Down}, {5, Down, Up}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := vipOn(80)
			rec := &recorder{}
			c := New(Options{OnChange: rec.onChange})
			count := scripted(c, map[datapath.VIP]string{v: tc.script})
			rec.stamp = func(tr Transition) int { return count(tr.VIP) }
			hc := config.HealthCheck{Type: "tcp", Port: 80, Interval: 2 * time.Millisecond, Timeout: time.Millisecond,
				Rise: tc.rise, Fall: tc.fall}
			c.Set([]Target{{VIP: v, Backend: loopback, Check: hc}})
			stop := start(t, c)
			waitFor(t, "the script to be played", func() bool { return count(v) > len(tc.script)+5 })
			stop()

			var got []step
			rec.mu.Lock()
			for i, tr := range rec.trs {
				if rec.stamps[i] <= len(tc.script) { // past it, the last result repeats
					got = append(got, step{rec.stamps[i], tr.From, tr.To})
				}
			}
			rec.mu.Unlock()
			if !slices.Equal(got, tc.want) {
				t.Fatalf("script %s, rise %d fall %d: got transitions %v, want %v", tc.script, tc.rise, tc.fall, got, tc.want)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	v := vipOn(80)
	c := New(Options{})
	count := scripted(c, map[datapath.VIP]string{v: "---++"})
	hc := fast("tcp", 80, 2, 3)
	c.Set([]Target{{VIP: v, Backend: loopback, Check: hc}})

	s, ok := statusOf(c, v, loopback)
	if !ok || s.State != Unknown || !s.Since.IsZero() || s.LastError != "" {
		t.Fatalf("before Run: got %+v, want an unknown target with no transition and no error", s)
	}
	before := time.Now()
	start(t, c)
	waitFor(t, "down", func() bool { s, _ := statusOf(c, v, loopback); return s.State == Down })
	s, _ = statusOf(c, v, loopback)
	if s.Since.Before(before) || s.LastError != "scripted failure 3" || s.ConsecutiveFail != 3 || s.ConsecutiveOK != 0 {
		t.Fatalf("down: got since %s error %q ok %d fail %d, want since after %s, error of probe 3, 0 ok, 3 failures",
			s.Since, s.LastError, s.ConsecutiveOK, s.ConsecutiveFail, before)
	}
	waitFor(t, "up", func() bool { s, _ := statusOf(c, v, loopback); return s.State == Up })
	waitFor(t, "more probes", func() bool { return count(v) > 7 })
	s, _ = statusOf(c, v, loopback)
	if s.ConsecutiveOK < 2 || s.ConsecutiveFail != 0 || s.LastError != "scripted failure 3" || s.Check.Port != 80 {
		t.Fatalf("up: got %+v, want 2+ successes, no failure, the last error kept", s)
	}
}

// TestResponseTime: a successful probe's duration is the target's response
// time and counts as an answer; a failed one (here one that takes longer)
// changes neither.
func TestResponseTime(t *testing.T) {
	v := vipOn(80)
	c := New(Options{})
	const slow = 20 * time.Millisecond
	var mu sync.Mutex
	n := 0
	c.probe = func(ctx context.Context, tg *target) error {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		if k%2 == 0 { // every other probe fails, fast
			return fmt.Errorf("scripted failure %d", k)
		}
		time.Sleep(slow) // the probe's duration under test
		return nil
	}
	hc := fast("tcp", 80, 1, 5)
	hc.Timeout = 200 * time.Millisecond
	hc.Interval = 200 * time.Millisecond
	c.Set([]Target{{VIP: v, Backend: loopback, Check: hc}})
	if s, _ := statusOf(c, v, loopback); s.ResponseTime != 0 || s.Answered != 0 {
		t.Fatalf("before any probe: response time %v, %d answers, want 0, 0", s.ResponseTime, s.Answered)
	}
	start(t, c)
	var s Status // the status read when the condition held
	waitFor(t, "two answers and a failure after them", func() bool {
		s, _ = statusOf(c, v, loopback)
		return s.Answered >= 2 && s.ConsecutiveFail >= 1
	})
	if s.ResponseTime < slow || s.ResponseTime > hc.Timeout {
		t.Errorf("response time %v after a failed probe, want the last success's, %v to %v", s.ResponseTime, slow, hc.Timeout)
	}
	if s.LastLatency >= slow {
		t.Errorf("last latency %v, want the failed probe's, under %v", s.LastLatency, slow)
	}
}

// TestFlappingServer plays a script on a real HTTP server: the checker must
// make exactly the transitions that rise 2 and fall 3 call for, and log one
// line for each.
func TestFlappingServer(t *testing.T) {
	const script = "++-+--+--+---+-++" // as "down and back" above
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(served.Add(1))
		if script[min(n, len(script))-1] == '-' {
			http.Error(w, "flap", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	var logs syncBuffer
	var observed, observedOK atomic.Int64
	rec := &recorder{stamp: func(Transition) int { return int(served.Load()) }}
	c := New(Options{
		Log:      slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnChange: rec.onChange,
		Observe: func(kind string, latency time.Duration, ok bool) {
			if kind != "http" || latency <= 0 {
				t.Errorf("Observe(%q, %s, %v): want kind http and a positive latency", kind, latency, ok)
			}
			observed.Add(1)
			if ok {
				observedOK.Add(1)
			}
		},
	})
	v := vipOn(80)
	hc := fast("http", port(t, srv.Listener.Addr()), 2, 3)
	// Long enough that no probe times out on a loaded machine: the script
	// must be played probe for probe.
	hc.Interval, hc.Timeout = 100*time.Millisecond, 100*time.Millisecond
	c.Set([]Target{{VIP: v, Backend: loopback, Check: hc}})
	stop := start(t, c)
	waitFor(t, "the script to be played", func() bool { return served.Load() > int64(len(script))+5 })
	stop()

	var got []step
	for i, tr := range rec.all() {
		got = append(got, step{rec.stamps[i], tr.From, tr.To})
		if tr.To == Down && !strings.Contains(tr.Err, "status 503") {
			t.Errorf("transition to down: got error %q, want one with status 503", tr.Err)
		}
	}
	want := []step{{2, Unknown, Up}, {13, Up, Down}, {17, Down, Up}}
	if !slices.Equal(got, want) {
		t.Fatalf("got transitions %v, want %v", got, want)
	}

	lines := logs.lines()
	if len(lines) != 3 {
		t.Fatalf("got %d log lines, want one per transition (3):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i, want := range []string{"level=INFO msg=\"backend up\"", "level=WARN msg=\"backend down\"", "level=INFO msg=\"backend up\""} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("log line %d: got %s, want %s", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[1], "status 503") || !strings.Contains(lines[1], "vip=tcp/203.0.113.1:80") ||
		!strings.Contains(lines[1], "backend=127.0.0.1") {
		t.Errorf("down log line: got %s, want the vip, the backend and the error", lines[1])
	}

	// Every probe was observed, except perhaps one cut short by the stop.
	n, obs := served.Load(), observed.Load()
	if obs != n && obs != n-1 {
		t.Fatalf("Observe was called %d times for %d probes served", obs, n)
	}
	if fails := int64(strings.Count(script, "-")); obs-observedOK.Load() != fails {
		t.Fatalf("Observe saw %d failures, want %d", obs-observedOK.Load(), fails)
	}
}

// TestDownWithinBound stops a backend's server: it must be down within
// interval × fall plus one interval (with slack for a loaded machine), and
// come back up when the server returns.
func TestDownWithinBound(t *testing.T) {
	ln, p := listenTCP(t, "127.0.0.1")
	rec := &recorder{}
	c := New(Options{OnChange: rec.onChange})
	v := vipOn(80)
	hc := fast("tcp", p, 2, 3)
	c.Set([]Target{{VIP: v, Backend: loopback, Check: hc}})
	start(t, c)
	waitFor(t, "up", func() bool { return len(rec.all()) == 1 })

	stopped := time.Now()
	ln.Close()
	waitFor(t, "down", func() bool { return len(rec.all()) == 2 })
	took := time.Since(stopped)
	bound := hc.Interval*time.Duration(hc.Fall) + hc.Interval
	const slack = time.Second
	t.Logf("down %s after the server stopped (bound %s)", took, bound)
	if took > bound+slack {
		t.Fatalf("down after %s, want within interval × fall + interval = %s (+%s slack)", took, bound, slack)
	}
	if tr := rec.all()[1]; tr.From != Up || tr.To != Down || !strings.Contains(tr.Err, "connection refused") {
		t.Fatalf("got %+v, want up → down with connection refused", tr)
	}

	ln2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Skipf("port %d was taken meanwhile: %v", p, err)
	}
	defer ln2.Close()
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	waitFor(t, "up again", func() bool { return len(rec.all()) == 3 })
	if tr := rec.all()[2]; tr.From != Down || tr.To != Up {
		t.Fatalf("got %+v, want down → up", tr)
	}
}

// TestUDPRefusedIsDown: a UDP check against a closed port is down after
// fall probes, each ended by the ICMP error rather than the timeout.
func TestUDPRefusedIsDown(t *testing.T) {
	rec := &recorder{}
	c := New(Options{OnChange: rec.onChange})
	v := datapath.VIP{Addr: netip.MustParseAddr("203.0.113.53"), Port: 53, Proto: datapath.UDP}
	hc := fast("udp", closedPort(t, "udp"), 2, 2)
	hc.Payload = "ping"
	hc.Interval, hc.Timeout = 250*time.Millisecond, 250*time.Millisecond
	c.Set([]Target{{VIP: v, Backend: loopback, Check: hc}})
	start(t, c)
	waitFor(t, "down", func() bool { return len(rec.all()) == 1 })
	tr := rec.all()[0]
	if tr.To != Down || !strings.Contains(tr.Err, "connection refused (ICMP port unreachable)") {
		t.Fatalf("got %+v, want down with the ICMP error", tr)
	}
	if s, _ := statusOf(c, v, loopback); s.LastLatency >= hc.Timeout {
		t.Fatalf("last probe took %s, want less than the timeout %s", s.LastLatency, hc.Timeout)
	}
}

// liveTargets returns how many target goroutines are running.
func (c *Checker) liveTargets() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}

// settleGoroutines waits until at most n goroutines run and returns the
// count.
func settleGoroutines(n int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := runtime.NumGoroutine()
		if got <= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSet(t *testing.T) {
	_, p1 := listenTCP(t, "127.0.0.1")
	ln2, p2 := listenTCP(t, "127.0.0.1")
	_, p3 := listenTCP(t, "127.0.0.1")
	dead := closedPort(t, "tcp")
	baseline := runtime.NumGoroutine()

	rec := &recorder{}
	c := New(Options{OnChange: rec.onChange})
	tg := func(n int, p uint16) Target {
		return Target{VIP: vipN(n), Backend: loopback, Check: fast("tcp", p, 2, 2)}
	}
	c.Set([]Target{tg(1, p1), tg(2, p2), tg(3, p3)})
	if n := c.liveTargets(); n != 0 {
		t.Fatalf("before Run: %d target goroutines, want 0", n)
	}
	stop := start(t, c)
	waitFor(t, "three up", func() bool { return len(rec.all()) == 3 })
	if n := c.liveTargets(); n != 3 {
		t.Fatalf("%d target goroutines for 3 targets", n)
	}
	kept, _ := statusOf(c, vipN(1), loopback)
	running := runtime.NumGoroutine()

	// Keep 1, drop 2 and 3, add 4 (pointing at a closed port).
	c.Set([]Target{tg(1, p1), tg(4, dead)})
	ss := c.Statuses()
	if len(ss) != 2 || ss[0].VIP != vipN(1) || ss[1].VIP != vipN(4) {
		t.Fatalf("after Set: got statuses for %v, want VIPs %s and %s", vips(ss), vipN(1), vipN(4))
	}
	if ss[0].State != Up || !ss[0].Since.Equal(kept.Since) {
		t.Fatalf("kept target: got %s since %s, want up since %s", ss[0].State, ss[0].Since, kept.Since)
	}
	if ss[1].State != Unknown {
		t.Fatalf("new target: got %s, want unknown", ss[1].State)
	}
	waitFor(t, "two target goroutines", func() bool { return c.liveTargets() == 2 })
	if got := settleGoroutines(running - 1); got > running-1 {
		t.Fatalf("%d goroutines after removing 2 targets and adding 1, want at most %d", got, running-1)
	}
	waitFor(t, "the new target down", func() bool { return len(rec.of(vipN(4), loopback)) == 1 })

	// A removed target makes no transition, even when its server goes.
	// Time passing is the test here, not a stand-in for a condition: ten
	// intervals in which a target still probing would have failed fall
	// (2) times and gone down.
	ln2.Close()
	time.Sleep(10 * fast("tcp", 0, 2, 2).Interval)
	if trs := rec.of(vipN(2), loopback); len(trs) != 1 {
		t.Fatalf("removed target: got transitions %v, want only its first", trs)
	}

	// A changed check keeps the state and applies from the next probe.
	c.Set([]Target{tg(1, dead), tg(4, dead)})
	waitFor(t, "the changed target down", func() bool { return len(rec.of(vipN(1), loopback)) == 2 })
	if tr := rec.of(vipN(1), loopback)[1]; tr.From != Up || tr.To != Down || tr.Check.Port != dead {
		t.Fatalf("changed target: got %v → %v on port %d, want up → down on port %d", tr.From, tr.To, tr.Check.Port, dead)
	}

	stop()
	if n := c.liveTargets(); n != 0 {
		t.Fatalf("after Run returned: %d target goroutines, want 0", n)
	}
	if got := settleGoroutines(baseline); got > baseline {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Run returned, want at most %d as before:\n%s", got, baseline, buf[:runtime.Stack(buf, true)])
	}

	// Set after Run: stored, not started; a second Run starts them.
	c.Set([]Target{tg(1, p1)})
	if n := c.liveTargets(); n != 0 {
		t.Fatalf("Set after Run: %d target goroutines, want 0", n)
	}
	start(t, c)
	waitFor(t, "the target probed again", func() bool { return c.liveTargets() == 1 })
}

func vips(ss []Status) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.VIP.String())
	}
	return out
}

func TestRunTwice(t *testing.T) {
	c := New(Options{})
	start(t, c)
	waitFor(t, "running", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.running })
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("second Run: got nil, want an error")
	}
}

func TestStatusesSorted(t *testing.T) {
	c := New(Options{})
	a := netip.MustParseAddr("10.0.0.2")
	b := netip.MustParseAddr("10.0.0.10")
	v6 := datapath.VIP{Addr: netip.MustParseAddr("2001:db8::1"), Port: 80, Proto: datapath.TCP}
	udp80 := datapath.VIP{Addr: vipOn(80).Addr, Port: 80, Proto: datapath.UDP}
	hc := fast("tcp", 80, 1, 1)
	c.Set([]Target{
		{VIP: v6, Backend: a, Check: hc},
		{VIP: udp80, Backend: b, Check: hc},
		{VIP: vipOn(443), Backend: a, Check: hc},
		{VIP: vipOn(80), Backend: b, Check: hc},
		{VIP: vipOn(80), Backend: a, Check: hc},
	})
	var got []string
	for _, s := range c.Statuses() {
		got = append(got, s.VIP.String()+" "+s.Backend.String())
	}
	want := []string{
		"tcp/203.0.113.1:80 10.0.0.2", "tcp/203.0.113.1:80 10.0.0.10", "udp/203.0.113.1:80 10.0.0.10",
		"tcp/203.0.113.1:443 10.0.0.2", "tcp/[2001:db8::1]:80 10.0.0.2",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestSetSkipsUnusable(t *testing.T) {
	var logs syncBuffer
	c := New(Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	c.Set([]Target{
		{VIP: vipOn(0), Backend: loopback, Check: config.HealthCheck{Type: "tcp"}},
		{VIP: vipOn(80), Backend: loopback, Check: config.HealthCheck{Type: "tcp"}},
	})
	if ss := c.Statuses(); len(ss) != 1 || ss[0].Check.Port != 80 {
		t.Fatalf("got %+v, want only the target with a port", ss)
	}
	if l := logs.lines(); len(l) != 1 || !strings.Contains(l[0], "no port") {
		t.Fatalf("got log %q, want one line about the missing port", l)
	}
}

// TestSameCheck makes sure sameCheck compares every field of
// config.HealthCheck, including any added later.
func TestSameCheck(t *testing.T) {
	base := config.HealthCheck{Type: "http", ExpectStatus: []int{200}}
	if !sameCheck(base, config.HealthCheck{Type: "http", ExpectStatus: []int{200}}) {
		t.Fatal("equal checks compare different")
	}
	rt := reflect.TypeFor[config.HealthCheck]()
	for i := range rt.NumField() {
		other := base
		other.ExpectStatus = []int{200}
		f := reflect.ValueOf(&other).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.Uint16:
			f.SetUint(f.Uint() + 1)
		case reflect.Slice:
			f.Set(reflect.ValueOf([]int{200, 204}))
		case reflect.Struct: // netip.Addr
			f.Set(reflect.ValueOf(netip.MustParseAddr("192.0.2.1")))
		default:
			t.Fatalf("field %s has kind %s this test does not know", rt.Field(i).Name, f.Kind())
		}
		if sameCheck(base, other) {
			t.Errorf("checks differing in %s compare equal", rt.Field(i).Name)
		}
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Unknown: "unknown", Up: "up", Down: "down", State(7): "unknown"} {
		b, err := s.MarshalText()
		if s.String() != want || string(b) != want || err != nil {
			t.Errorf("State(%d): got %q and %q, %v; want %q", int(s), s.String(), b, err, want)
		}
	}
}

func TestTargets(t *testing.T) {
	cfg, err := config.Parse([]byte(`
interfaces: [{name: eth0}]
vips:
  - address: 203.0.113.10
    port: 80
    protocol: tcp
    health_check: {type: http, path: /healthz, interval: 1s}
    backends:
      - address: 198.18.0.11
      - address: 198.18.0.12
        health_check: {type: tcp, port: 8080}
  - address: 203.0.113.53
    port: 53
    protocol: udp
    health_check: {type: none}
    backends:
      - address: 198.18.0.13
`))
	if err != nil {
		t.Fatal(err)
	}
	got := Targets(cfg.VIPs)
	web := datapath.VIP{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: datapath.TCP}
	if len(got) != 2 {
		t.Fatalf("got %d targets (%+v), want 2: the udp VIP has no check", len(got), got)
	}
	if g := got[0]; g.VIP != web || g.Backend != netip.MustParseAddr("198.18.0.11") || g.Check.Type != "http" ||
		g.Check.Port != 80 || g.Check.Path != "/healthz" || g.Check.Interval != time.Second {
		t.Errorf("first target: got %+v, want the VIP's http check on port 80", g)
	}
	if g := got[1]; g.VIP != web || g.Backend != netip.MustParseAddr("198.18.0.12") || g.Check.Type != "tcp" || g.Check.Port != 8080 {
		t.Errorf("second target: got %+v, want its own tcp check on port 8080", g)
	}
}

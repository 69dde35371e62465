package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/healthsteer"
)

// fakeSource is a Source whose answers the test changes between scrapes.
type fakeSource struct {
	mu       sync.Mutex
	counters datapath.Counters
	err      error
	health   map[datapath.VIP]map[netip.Addr]string
	vrrp     string
	sick     bool
	steering *healthsteer.Counters // nil: not loaded
}

func (f *fakeSource) Counters() (datapath.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counters, f.err
}

func (f *fakeSource) BackendHealth() map[datapath.VIP]map[netip.Addr]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.health
}

func (f *fakeSource) VRRPState() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.vrrp
}

func (f *fakeSource) VRRPSick() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sick
}

func (f *fakeSource) SteeringCounters() (healthsteer.Counters, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.steering == nil {
		return healthsteer.Counters{}, false
	}
	return *f.steering, true
}

func (f *fakeSource) set(fn func(f *fakeSource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

var (
	web = datapath.VIP{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: datapath.TCP}
	dns = datapath.VIP{Addr: netip.MustParseAddr("2001:db8::53"), Port: 53, Proto: datapath.UDP}

	web1 = netip.MustParseAddr("10.0.0.1")
	web2 = netip.MustParseAddr("10.0.0.2")
	dns1 = netip.MustParseAddr("2001:db8:1::1")
)

// newFake returns a source with two VIPs, three backends and every stat
// counter set to a distinct value: 10 times its position plus one.
func newFake() *fakeSource {
	f := &fakeSource{
		counters: datapath.Counters{
			VIPs: map[datapath.VIP]datapath.Counter{
				web: {Packets: 30, Bytes: 3000},
				dns: {Packets: 7, Bytes: 700},
			},
			Backends: map[datapath.VIP]map[netip.Addr]datapath.Counter{
				web: {web1: {Packets: 20, Bytes: 2000}, web2: {Packets: 10, Bytes: 1000}},
				dns: {dns1: {Packets: 7, Bytes: 700}},
			},
			Decisions: map[datapath.VIP]uint64{web: 12, dns: 5},
			Scheduler: map[datapath.VIP]string{web: "round-robin", dns: "least-time"},
		},
		health: map[datapath.VIP]map[netip.Addr]string{
			web: {web1: "up", web2: "down"},
			dns: {dns1: "unknown"},
		},
		vrrp: "master",
		sick: true,
	}
	for _, s := range datapath.AllStats() {
		f.counters.Stats[s] = 10*uint64(s) + 1
	}
	return f
}

// The names of the metrics the collector reads from the Source.
var sourceMetrics = []string{
	"fulcrum_vip_packets_total",
	"fulcrum_vip_bytes_total",
	"fulcrum_backend_packets_total",
	"fulcrum_backend_bytes_total",
	"fulcrum_verdict_packets_total",
	"fulcrum_conntrack_events_total",
	"fulcrum_datapath_events_total",
	"fulcrum_scheduler_decisions_total",
	"fulcrum_least_conn_decisions_total",
	"fulcrum_backend_health",
	"fulcrum_vrrp_state",
	"fulcrum_vrrp_sick",
}

const (
	wantCounters = `
# HELP fulcrum_vip_packets_total Packets the fast path forwarded for a VIP.
# TYPE fulcrum_vip_packets_total counter
fulcrum_vip_packets_total{vip="tcp/203.0.113.10:80"} 30
fulcrum_vip_packets_total{vip="udp/[2001:db8::53]:53"} 7
# HELP fulcrum_vip_bytes_total Bytes, Ethernet header included, the fast path forwarded for a VIP.
# TYPE fulcrum_vip_bytes_total counter
fulcrum_vip_bytes_total{vip="tcp/203.0.113.10:80"} 3000
fulcrum_vip_bytes_total{vip="udp/[2001:db8::53]:53"} 700
# HELP fulcrum_backend_packets_total Packets the fast path forwarded to a backend of a VIP.
# TYPE fulcrum_backend_packets_total counter
fulcrum_backend_packets_total{backend="10.0.0.1",vip="tcp/203.0.113.10:80"} 20
fulcrum_backend_packets_total{backend="10.0.0.2",vip="tcp/203.0.113.10:80"} 10
fulcrum_backend_packets_total{backend="2001:db8:1::1",vip="udp/[2001:db8::53]:53"} 7
# HELP fulcrum_backend_bytes_total Bytes, Ethernet header included, the fast path forwarded to a backend of a VIP.
# TYPE fulcrum_backend_bytes_total counter
fulcrum_backend_bytes_total{backend="10.0.0.1",vip="tcp/203.0.113.10:80"} 2000
fulcrum_backend_bytes_total{backend="10.0.0.2",vip="tcp/203.0.113.10:80"} 1000
fulcrum_backend_bytes_total{backend="2001:db8:1::1",vip="udp/[2001:db8::53]:53"} 700
# HELP fulcrum_scheduler_decisions_total New flows whose backend a VIP's scheduler chose, per VIP, for the schedulers that keep state (round-robin, least-conn, least-time); every other new flow is the Maglev ring's.
# TYPE fulcrum_scheduler_decisions_total counter
fulcrum_scheduler_decisions_total{scheduler="round-robin",vip="tcp/203.0.113.10:80"} 12
fulcrum_scheduler_decisions_total{scheduler="least-time",vip="udp/[2001:db8::53]:53"} 5
`
	// Every datapath.Stat appears here once: a new one must be added
	// to this list and to docs/metrics.md.
	wantStats = `
# HELP fulcrum_verdict_packets_total Packets the fast path handled, by final action (pass, drop, tx) and the reason for it.
# TYPE fulcrum_verdict_packets_total counter
fulcrum_verdict_packets_total{action="pass",reason="not_ip"} 1
fulcrum_verdict_packets_total{action="pass",reason="no_vip"} 11
fulcrum_verdict_packets_total{action="pass",reason="not_l4"} 21
fulcrum_verdict_packets_total{action="pass",reason="unparseable"} 31
fulcrum_verdict_packets_total{action="pass",reason="not_unicast"} 41
fulcrum_verdict_packets_total{action="drop",reason="fragment"} 51
fulcrum_verdict_packets_total{action="drop",reason="malformed"} 61
fulcrum_verdict_packets_total{action="drop",reason="no_backend"} 71
fulcrum_verdict_packets_total{action="drop",reason="bad_mode"} 81
fulcrum_verdict_packets_total{action="drop",reason="too_big"} 91
fulcrum_verdict_packets_total{action="drop",reason="no_route"} 101
fulcrum_verdict_packets_total{action="drop",reason="encap"} 111
fulcrum_verdict_packets_total{action="tx",reason="dsr"} 121
fulcrum_verdict_packets_total{action="tx",reason="ipip"} 131
fulcrum_verdict_packets_total{action="drop",reason="source_range"} 231
fulcrum_verdict_packets_total{action="drop",reason="pool_down"} 261
# HELP fulcrum_conntrack_events_total Connection-table events of the fast path: hit, miss, syn, stale, expired, evicted (a new entry took the way of a live one in a full bucket), insert_failed, bypass, guard, export_full (connection sync: the event ring buffer was full, an entry's event was lost).
# TYPE fulcrum_conntrack_events_total counter
fulcrum_conntrack_events_total{event="hit"} 141
fulcrum_conntrack_events_total{event="miss"} 151
fulcrum_conntrack_events_total{event="syn"} 161
fulcrum_conntrack_events_total{event="stale"} 171
fulcrum_conntrack_events_total{event="insert_failed"} 181
fulcrum_conntrack_events_total{event="bypass"} 191
fulcrum_conntrack_events_total{event="expired"} 221
fulcrum_conntrack_events_total{event="evicted"} 241
fulcrum_conntrack_events_total{event="export_full"} 251
fulcrum_conntrack_events_total{event="guard"} 211
# HELP fulcrum_datapath_events_total Other fast-path events, e.g. fib_gateway: an encapsulated packet sent to the configured gateway MAC for want of a resolved neighbour; sched_rr: a new flow given its backend by a round-robin VIP's sequence.
# TYPE fulcrum_datapath_events_total counter
fulcrum_datapath_events_total{event="fib_gateway"} 201
fulcrum_datapath_events_total{event="pool_fallback"} 271
fulcrum_datapath_events_total{event="rt_lost"} 301
fulcrum_datapath_events_total{event="rt_sample"} 291
fulcrum_datapath_events_total{event="sched_rr"} 281
fulcrum_datapath_events_total{event="sched_least_time_exact"} 331
fulcrum_datapath_events_total{event="sched_least_time_two_choices"} 341
# HELP fulcrum_least_conn_decisions_total New flows whose backend least-conn chose, all VIPs together, by method: exact (the whole pool compared) or two_choices (the better of two ring slots).
# TYPE fulcrum_least_conn_decisions_total counter
fulcrum_least_conn_decisions_total{method="exact"} 311
fulcrum_least_conn_decisions_total{method="two_choices"} 321
`
	wantState = `
# HELP fulcrum_backend_health Health of a backend of a VIP: 1 for its current state (up, down, unknown), 0 for the others.
# TYPE fulcrum_backend_health gauge
fulcrum_backend_health{backend="10.0.0.1",state="up",vip="tcp/203.0.113.10:80"} 1
fulcrum_backend_health{backend="10.0.0.1",state="down",vip="tcp/203.0.113.10:80"} 0
fulcrum_backend_health{backend="10.0.0.1",state="unknown",vip="tcp/203.0.113.10:80"} 0
fulcrum_backend_health{backend="10.0.0.2",state="up",vip="tcp/203.0.113.10:80"} 0
fulcrum_backend_health{backend="10.0.0.2",state="down",vip="tcp/203.0.113.10:80"} 1
fulcrum_backend_health{backend="10.0.0.2",state="unknown",vip="tcp/203.0.113.10:80"} 0
fulcrum_backend_health{backend="2001:db8:1::1",state="up",vip="udp/[2001:db8::53]:53"} 0
fulcrum_backend_health{backend="2001:db8:1::1",state="down",vip="udp/[2001:db8::53]:53"} 0
fulcrum_backend_health{backend="2001:db8:1::1",state="unknown",vip="udp/[2001:db8::53]:53"} 1
# HELP fulcrum_vrrp_state VRRP state of this node: 1 for the current state, 0 for the others.
# TYPE fulcrum_vrrp_state gauge
fulcrum_vrrp_state{state="disabled"} 0
fulcrum_vrrp_state{state="init"} 0
fulcrum_vrrp_state{state="backup"} 0
fulcrum_vrrp_state{state="master"} 1
fulcrum_vrrp_state{state="fault"} 0
# HELP fulcrum_vrrp_sick 1 while VRRP tracking holds this node's priority at 1 (an interface down, the balancer detached, or every backend of a VIP down); the reasons are in GET /v1/vrrp.
# TYPE fulcrum_vrrp_sick gauge
fulcrum_vrrp_sick 1
`
)

func TestCollect(t *testing.T) {
	m := New(newFake(), "v1.2.3", "abc123")
	want := wantCounters + wantStats + wantState
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), sourceMetrics...); err != nil {
		t.Fatal(err)
	}
}

// TestEveryStat checks that each datapath.Stat is exported exactly once,
// with its own value, in the family its IsVerdict says.
func TestEveryStat(t *testing.T) {
	c := newCollector(newFake())
	verdicts := testutil.CollectAndCount(c, "fulcrum_verdict_packets_total")
	events := testutil.CollectAndCount(c, "fulcrum_conntrack_events_total") +
		testutil.CollectAndCount(c, "fulcrum_datapath_events_total") +
		testutil.CollectAndCount(c, "fulcrum_least_conn_decisions_total")
	var wantVerdicts, wantEvents int
	for _, s := range datapath.AllStats() {
		if s.IsVerdict() {
			wantVerdicts++
		} else {
			wantEvents++
		}
	}
	if verdicts != wantVerdicts || events != wantEvents {
		t.Errorf("got %d verdict and %d conntrack series, want %d and %d", verdicts, events, wantVerdicts, wantEvents)
	}
	seen := make(map[string]datapath.Stat)
	for _, s := range c.stats {
		key := s.desc.String() + fmt.Sprint(s.labels)
		if prev, ok := seen[key]; ok {
			t.Errorf("stats %s and %s both export %s", prev, s.stat, key)
		}
		seen[key] = s.stat
	}
}

// TestPedantic gathers the collector through a pedantic registry, which
// checks every collected metric against the descriptors Describe sent.
func TestPedantic(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newCollector(newFake()))
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

func TestLint(t *testing.T) {
	m := New(newFake(), "v1.2.3", "abc123")
	m.ObserveReconcile(3 * time.Millisecond)

	problems, err := testutil.CollectAndLint(m.collector)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("collector: %s: %s", p.Metric, p.Text)
	}

	// Every metric of the registry, the Go and process collectors' too.
	problems, err = testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("registry: %s: %s", p.Metric, p.Text)
	}
}

func TestFollowsSource(t *testing.T) {
	f := newFake()
	m := New(f, "v1.2.3", "abc123")
	names := []string{
		"fulcrum_vip_packets_total", "fulcrum_backend_packets_total",
		"fulcrum_verdict_packets_total", "fulcrum_conntrack_events_total",
		"fulcrum_backend_health", "fulcrum_vrrp_state", "fulcrum_vrrp_sick",
	}

	first := `
# HELP fulcrum_vip_packets_total Packets the fast path forwarded for a VIP.
# TYPE fulcrum_vip_packets_total counter
fulcrum_vip_packets_total{vip="tcp/203.0.113.10:80"} 30
fulcrum_vip_packets_total{vip="udp/[2001:db8::53]:53"} 7
# HELP fulcrum_backend_packets_total Packets the fast path forwarded to a backend of a VIP.
# TYPE fulcrum_backend_packets_total counter
fulcrum_backend_packets_total{backend="10.0.0.1",vip="tcp/203.0.113.10:80"} 20
fulcrum_backend_packets_total{backend="10.0.0.2",vip="tcp/203.0.113.10:80"} 10
fulcrum_backend_packets_total{backend="2001:db8:1::1",vip="udp/[2001:db8::53]:53"} 7
` + wantStats + wantState
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(first), names...); err != nil {
		t.Fatalf("first scrape: %v", err)
	}

	// Traffic moves, the dns VIP goes away, web2 comes up and this node
	// drops to backup.
	f.set(func(f *fakeSource) {
		stats := f.counters.Stats
		f.counters = datapath.Counters{
			VIPs: map[datapath.VIP]datapath.Counter{web: {Packets: 45, Bytes: 4500}},
			Backends: map[datapath.VIP]map[netip.Addr]datapath.Counter{
				web: {web1: {Packets: 25, Bytes: 2500}, web2: {Packets: 20, Bytes: 2000}},
			},
		}
		f.counters.Stats = stats
		f.counters.Stats[datapath.StatDropNoBackend]++
		f.counters.Stats[datapath.StatCtSYN] += 2
		f.health = map[datapath.VIP]map[netip.Addr]string{web: {web1: "up", web2: "up"}}
		f.vrrp = "backup"
		f.sick = false
	})
	second := `
# HELP fulcrum_vip_packets_total Packets the fast path forwarded for a VIP.
# TYPE fulcrum_vip_packets_total counter
fulcrum_vip_packets_total{vip="tcp/203.0.113.10:80"} 45
# HELP fulcrum_backend_packets_total Packets the fast path forwarded to a backend of a VIP.
# TYPE fulcrum_backend_packets_total counter
fulcrum_backend_packets_total{backend="10.0.0.1",vip="tcp/203.0.113.10:80"} 25
fulcrum_backend_packets_total{backend="10.0.0.2",vip="tcp/203.0.113.10:80"} 20
` + strings.NewReplacer(
		`reason="no_backend"} 71`, `reason="no_backend"} 72`,
		`event="syn"} 161`, `event="syn"} 163`,
	).Replace(wantStats) + `
# HELP fulcrum_backend_health Health of a backend of a VIP: 1 for its current state (up, down, unknown), 0 for the others.
# TYPE fulcrum_backend_health gauge
fulcrum_backend_health{backend="10.0.0.1",state="up",vip="tcp/203.0.113.10:80"} 1
fulcrum_backend_health{backend="10.0.0.1",state="down",vip="tcp/203.0.113.10:80"} 0
fulcrum_backend_health{backend="10.0.0.1",state="unknown",vip="tcp/203.0.113.10:80"} 0
fulcrum_backend_health{backend="10.0.0.2",state="up",vip="tcp/203.0.113.10:80"} 1
fulcrum_backend_health{backend="10.0.0.2",state="down",vip="tcp/203.0.113.10:80"} 0
fulcrum_backend_health{backend="10.0.0.2",state="unknown",vip="tcp/203.0.113.10:80"} 0
# HELP fulcrum_vrrp_state VRRP state of this node: 1 for the current state, 0 for the others.
# TYPE fulcrum_vrrp_state gauge
fulcrum_vrrp_state{state="disabled"} 0
fulcrum_vrrp_state{state="init"} 0
fulcrum_vrrp_state{state="backup"} 1
fulcrum_vrrp_state{state="master"} 0
fulcrum_vrrp_state{state="fault"} 0
# HELP fulcrum_vrrp_sick 1 while VRRP tracking holds this node's priority at 1 (an interface down, the balancer detached, or every backend of a VIP down); the reasons are in GET /v1/vrrp.
# TYPE fulcrum_vrrp_sick gauge
fulcrum_vrrp_sick 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(second), names...); err != nil {
		t.Fatalf("second scrape: %v", err)
	}
}

// TestUnexpectedStates checks that a health state outside up, down and
// unknown counts as unknown, and that a VRRP state outside the known ones
// sets none of them.
func TestUnexpectedStates(t *testing.T) {
	f := newFake()
	f.health = map[datapath.VIP]map[netip.Addr]string{web: {web1: "draining"}}
	f.vrrp = "confused"
	want := `
# HELP fulcrum_backend_health Health of a backend of a VIP: 1 for its current state (up, down, unknown), 0 for the others.
# TYPE fulcrum_backend_health gauge
fulcrum_backend_health{backend="10.0.0.1",state="up",vip="tcp/203.0.113.10:80"} 0
fulcrum_backend_health{backend="10.0.0.1",state="down",vip="tcp/203.0.113.10:80"} 0
fulcrum_backend_health{backend="10.0.0.1",state="unknown",vip="tcp/203.0.113.10:80"} 1
# HELP fulcrum_vrrp_state VRRP state of this node: 1 for the current state, 0 for the others.
# TYPE fulcrum_vrrp_state gauge
fulcrum_vrrp_state{state="disabled"} 0
fulcrum_vrrp_state{state="init"} 0
fulcrum_vrrp_state{state="backup"} 0
fulcrum_vrrp_state{state="master"} 0
fulcrum_vrrp_state{state="fault"} 0
`
	if err := testutil.CollectAndCompare(newCollector(f), strings.NewReader(want), "fulcrum_backend_health", "fulcrum_vrrp_state"); err != nil {
		t.Fatal(err)
	}
}

func TestReconcileHistogram(t *testing.T) {
	m := New(newFake(), "v1.2.3", "abc123")
	for _, d := range []time.Duration{50 * time.Microsecond, 3 * time.Millisecond, 3 * time.Millisecond, 2 * time.Second, time.Minute} {
		m.ObserveReconcile(d)
	}
	want := `
# HELP fulcrum_reconcile_duration_seconds Time taken to apply the desired state to the datapath.
# TYPE fulcrum_reconcile_duration_seconds histogram
fulcrum_reconcile_duration_seconds_bucket{le="0.0001"} 1
fulcrum_reconcile_duration_seconds_bucket{le="0.00025"} 1
fulcrum_reconcile_duration_seconds_bucket{le="0.0005"} 1
fulcrum_reconcile_duration_seconds_bucket{le="0.001"} 1
fulcrum_reconcile_duration_seconds_bucket{le="0.0025"} 1
fulcrum_reconcile_duration_seconds_bucket{le="0.005"} 3
fulcrum_reconcile_duration_seconds_bucket{le="0.01"} 3
fulcrum_reconcile_duration_seconds_bucket{le="0.025"} 3
fulcrum_reconcile_duration_seconds_bucket{le="0.05"} 3
fulcrum_reconcile_duration_seconds_bucket{le="0.1"} 3
fulcrum_reconcile_duration_seconds_bucket{le="0.25"} 3
fulcrum_reconcile_duration_seconds_bucket{le="0.5"} 3
fulcrum_reconcile_duration_seconds_bucket{le="1"} 3
fulcrum_reconcile_duration_seconds_bucket{le="2.5"} 4
fulcrum_reconcile_duration_seconds_bucket{le="5"} 4
fulcrum_reconcile_duration_seconds_bucket{le="10"} 4
fulcrum_reconcile_duration_seconds_bucket{le="+Inf"} 5
fulcrum_reconcile_duration_seconds_sum 62.00605
fulcrum_reconcile_duration_seconds_count 5
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "fulcrum_reconcile_duration_seconds"); err != nil {
		t.Fatal(err)
	}
}

func TestBuildInfo(t *testing.T) {
	m := New(newFake(), "v1.2.3", "abc123")
	want := fmt.Sprintf(`
# HELP fulcrum_build_info Always 1; labelled with the version, commit and Go version Fulcrum was built from.
# TYPE fulcrum_build_info gauge
fulcrum_build_info{commit="abc123",goversion=%q,version="v1.2.3"} 1
`, runtime.Version())
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "fulcrum_build_info"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.buildInfo); got != 1 {
		t.Errorf("build_info got %v, want 1", got)
	}
}

// TestRuntimeCollectors checks that the Go and process collectors are
// registered.
func TestRuntimeCollectors(t *testing.T) {
	m := New(newFake(), "v1.2.3", "abc123")
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		n, err := testutil.GatherAndCount(m.Registry(), name)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("%s: got %d series, want 1", name, n)
		}
	}
}

func TestHandler(t *testing.T) {
	m := New(newFake(), "v1.2.3", "abc123")
	code, body := scrape(t, m.Handler())
	if code != http.StatusOK {
		t.Fatalf("got status %d, want 200; body:\n%s", code, body)
	}
	for _, want := range []string{
		`fulcrum_vip_packets_total{vip="tcp/203.0.113.10:80"} 30`,
		`fulcrum_verdict_packets_total{action="tx",reason="dsr"} 121`,
		`fulcrum_vrrp_state{state="master"} 1`,
		`fulcrum_build_info{`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q; body:\n%s", want, body)
		}
	}
}

// TestSourceError checks that a Source that cannot read its counters fails
// the scrape with the error, in Gather and as a 500 from Handler, and that
// the handler logs it; and that the next good read recovers.
func TestSourceError(t *testing.T) {
	f := newFake()
	f.err = errors.New("map lookup: bad file descriptor")
	m := New(f, "v1.2.3", "abc123")
	var logs bytes.Buffer
	m.logger = slog.New(slog.NewTextHandler(&logs, nil))

	if _, err := m.Registry().Gather(); err == nil || !strings.Contains(err.Error(), "read counters: map lookup: bad file descriptor") {
		t.Fatalf("gather got error %v, want one that says read counters: map lookup: bad file descriptor", err)
	}

	h := m.Handler()
	code, body := scrape(t, h)
	if code != http.StatusInternalServerError {
		t.Fatalf("got status %d, want 500; body:\n%s", code, body)
	}
	if !strings.Contains(body, "bad file descriptor") {
		t.Errorf("body lacks the error; body:\n%s", body)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "bad file descriptor") {
		t.Errorf("log lacks the error; log:\n%s", logs.String())
	}

	f.set(func(f *fakeSource) { f.err = nil })
	if code, body := scrape(t, h); code != http.StatusOK {
		t.Fatalf("after recovery got status %d, want 200; body:\n%s", code, body)
	}
	// A second handler shares the promhttp counters instead of panicking
	// on their registration.
	if code, body := scrape(t, m.Handler()); code != http.StatusOK {
		t.Fatalf("second handler got status %d, want 200; body:\n%s", code, body)
	}
	n, err := testutil.GatherAndCount(m.Registry(), "promhttp_metric_handler_errors_total")
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Errorf("promhttp_metric_handler_errors_total is not registered")
	}
}

func scrape(t *testing.T, h http.Handler) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Code, string(body)
}

// TestSteering: the steering program's counters are exported while it is
// loaded, by result, and vanish when it is unloaded.
func TestSteering(t *testing.T) {
	f := newFake()
	m := New(f, "v1.2.3", "abc123")
	const name = "fulcrum_health_steer_packets_total"
	if n, err := testutil.GatherAndCount(m.Registry(), name); err != nil || n != 0 {
		t.Fatalf("%s while the program is not loaded: %d series (%v), want none", name, n, err)
	}
	f.set(func(f *fakeSource) {
		f.steering = &healthsteer.Counters{Steered: 41, NoEntry: 3, NotIP: 2, Errors: 1}
	})
	want := `
# HELP fulcrum_health_steer_packets_total Marked health-probe packets the steering program saw, by result: steered to their backend, no_entry (left alone), not_ip and error (dropped). Only while a check goes through the data path; the counts restart when the program is loaded again.
# TYPE fulcrum_health_steer_packets_total counter
fulcrum_health_steer_packets_total{result="error"} 1
fulcrum_health_steer_packets_total{result="no_entry"} 3
fulcrum_health_steer_packets_total{result="not_ip"} 2
fulcrum_health_steer_packets_total{result="steered"} 41
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), name); err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeSource) { f.steering = nil })
	if n, err := testutil.GatherAndCount(m.Registry(), name); err != nil || n != 0 {
		t.Fatalf("%s after the program was unloaded: %d series (%v), want none", name, n, err)
	}
}

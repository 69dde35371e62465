package metrics

import (
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// The states the state-set metrics enumerate. Every series of a state set
// is exported on each scrape, 1 for the current state and 0 for the others,
// so that a change of state never makes a series vanish.
var (
	healthStates = []string{"up", "down", "unknown"}
	vrrpStates   = []string{"disabled", "init", "backup", "master", "fault"}
)

// statSeries is where one datapath.Stat goes: its descriptor and label
// values.
type statSeries struct {
	stat   datapath.Stat
	desc   *prometheus.Desc
	labels []string
}

// collector reads a Source at scrape time and turns it into const metrics.
type collector struct {
	src Source

	vipPackets     *prometheus.Desc
	vipBytes       *prometheus.Desc
	backendPackets *prometheus.Desc
	backendBytes   *prometheus.Desc
	verdicts       *prometheus.Desc
	conntrack      *prometheus.Desc
	events         *prometheus.Desc
	leastConn      *prometheus.Desc
	backendHealth  *prometheus.Desc
	vrrpState      *prometheus.Desc
	vrrpSick       *prometheus.Desc
	steering       *prometheus.Desc
	schedDecisions *prometheus.Desc

	stats []statSeries
}

func newCollector(src Source) *collector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "", n) }
	c := &collector{
		src: src,
		vipPackets: prometheus.NewDesc(name("vip_packets_total"),
			"Packets the fast path forwarded for a VIP.",
			[]string{"vip"}, nil),
		vipBytes: prometheus.NewDesc(name("vip_bytes_total"),
			"Bytes, Ethernet header included, the fast path forwarded for a VIP.",
			[]string{"vip"}, nil),
		backendPackets: prometheus.NewDesc(name("backend_packets_total"),
			"Packets the fast path forwarded to a backend of a VIP.",
			[]string{"vip", "backend"}, nil),
		backendBytes: prometheus.NewDesc(name("backend_bytes_total"),
			"Bytes, Ethernet header included, the fast path forwarded to a backend of a VIP.",
			[]string{"vip", "backend"}, nil),
		verdicts: prometheus.NewDesc(name("verdict_packets_total"),
			"Packets the fast path handled, by final action (pass, drop, tx) and the reason for it.",
			[]string{"action", "reason"}, nil),
		conntrack: prometheus.NewDesc(name("conntrack_events_total"),
			"Connection-table events of the fast path: hit, miss, syn, stale, expired, evicted (a new entry took the way of a live one in a full bucket), insert_failed, bypass, guard, export_full (connection sync: the event ring buffer was full, an entry's event was lost).",
			[]string{"event"}, nil),
		events: prometheus.NewDesc(name("datapath_events_total"),
			"Other fast-path events, e.g. fib_gateway: an encapsulated packet sent to the configured gateway MAC for want of a resolved neighbour; sched_rr: a new flow given its backend by a round-robin VIP's sequence.",
			[]string{"event"}, nil),
		// Not a series of scheduler_decisions_total: those are per VIP,
		// these the fast path's global counts by method (one name, one
		// label set). Least-time's methods are datapath events
		// (sched_least_time_*): this family keeps its meaning.
		leastConn: prometheus.NewDesc(name("least_conn_decisions_total"),
			"New flows whose backend least-conn chose, all VIPs together, by method: exact (the whole pool compared) or two_choices (the better of two ring slots).",
			[]string{"method"}, nil),
		backendHealth: prometheus.NewDesc(name("backend_health"),
			"Health of a backend of a VIP: 1 for its current state (up, down, unknown), 0 for the others.",
			[]string{"vip", "backend", "state"}, nil),
		vrrpState: prometheus.NewDesc(name("vrrp_state"),
			"VRRP state of this node: 1 for the current state, 0 for the others.",
			[]string{"state"}, nil),
		vrrpSick: prometheus.NewDesc(name("vrrp_sick"),
			"1 while VRRP tracking holds this node's priority at 1 (an interface down, the balancer detached, or every backend of a VIP down); the reasons are in GET /v1/vrrp.",
			nil, nil),
		steering: prometheus.NewDesc(name("health_steer_packets_total"),
			"Marked health-probe packets the steering program saw, by result: steered to their backend, no_entry (left alone), not_ip and error (dropped). Only while a check goes through the data path; the counts restart when the program is loaded again.",
			[]string{"result"}, nil),
		schedDecisions: prometheus.NewDesc(name("scheduler_decisions_total"),
			"New flows whose backend a VIP's scheduler chose, per VIP, for the schedulers that keep state (round-robin, least-conn, least-time); every other new flow is the Maglev ring's.",
			[]string{"vip", "scheduler"}, nil),
	}
	for _, s := range datapath.AllStats() {
		name := s.String()
		if s.IsVerdict() {
			// pass_no_vip -> action pass, reason no_vip.
			action, reason, ok := strings.Cut(name, "_")
			if !ok {
				action, reason = name, ""
			}
			c.stats = append(c.stats, statSeries{s, c.verdicts, []string{action, reason}})
			continue
		}
		// sched_least_conn_exact -> method exact.
		if method, ok := strings.CutPrefix(name, "sched_least_conn_"); ok {
			c.stats = append(c.stats, statSeries{s, c.leastConn, []string{method}})
			continue
		}
		// ct_insert_failed -> event insert_failed.
		if event, ok := strings.CutPrefix(name, "ct_"); ok {
			c.stats = append(c.stats, statSeries{s, c.conntrack, []string{event}})
			continue
		}
		c.stats = append(c.stats, statSeries{s, c.events, []string{name}})
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.vipPackets
	ch <- c.vipBytes
	ch <- c.backendPackets
	ch <- c.backendBytes
	ch <- c.verdicts
	ch <- c.conntrack
	ch <- c.events
	ch <- c.leastConn
	ch <- c.backendHealth
	ch <- c.vrrpState
	ch <- c.vrrpSick
	ch <- c.steering
	ch <- c.schedDecisions
}

// Collect implements prometheus.Collector: it reads the Source now.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.collectCounters(ch)
	c.collectHealth(ch)
	c.collectVRRP(ch)
	c.collectSteering(ch)
}

func (c *collector) collectSteering(ch chan<- prometheus.Metric) {
	s, ok := c.src.SteeringCounters()
	if !ok {
		return
	}
	for _, r := range []struct {
		result string
		n      uint64
	}{{"steered", s.Steered}, {"no_entry", s.NoEntry}, {"not_ip", s.NotIP}, {"error", s.Errors}} {
		ch <- prometheus.MustNewConstMetric(c.steering, prometheus.CounterValue, float64(r.n), r.result)
	}
}

func (c *collector) collectCounters(ch chan<- prometheus.Metric) {
	counters, err := c.src.Counters()
	if err != nil {
		// A snapshot that failed half way is not exported at all: the
		// invalid metric fails the scrape, so the error is seen instead
		// of counters that look like they went backwards.
		ch <- prometheus.NewInvalidMetric(c.verdicts, fmt.Errorf("read counters: %w", err))
		return
	}
	for _, s := range c.stats {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.CounterValue, float64(counters.Stat(s.stat)), s.labels...)
	}
	for vip, cnt := range counters.VIPs {
		v := vip.String()
		ch <- prometheus.MustNewConstMetric(c.vipPackets, prometheus.CounterValue, float64(cnt.Packets), v)
		ch <- prometheus.MustNewConstMetric(c.vipBytes, prometheus.CounterValue, float64(cnt.Bytes), v)
	}
	for vip, n := range counters.Decisions {
		ch <- prometheus.MustNewConstMetric(c.schedDecisions, prometheus.CounterValue, float64(n), vip.String(), counters.Scheduler[vip])
	}
	for vip, backends := range counters.Backends {
		v := vip.String()
		for addr, cnt := range backends {
			b := addr.String()
			ch <- prometheus.MustNewConstMetric(c.backendPackets, prometheus.CounterValue, float64(cnt.Packets), v, b)
			ch <- prometheus.MustNewConstMetric(c.backendBytes, prometheus.CounterValue, float64(cnt.Bytes), v, b)
		}
	}
}

func (c *collector) collectHealth(ch chan<- prometheus.Metric) {
	for vip, backends := range c.src.BackendHealth() {
		v := vip.String()
		for addr, state := range backends {
			if !slices.Contains(healthStates, state) {
				state = "unknown"
			}
			b := addr.String()
			for _, s := range healthStates {
				ch <- prometheus.MustNewConstMetric(c.backendHealth, prometheus.GaugeValue, boolValue(s == state), v, b, s)
			}
		}
	}
}

func (c *collector) collectVRRP(ch chan<- prometheus.Metric) {
	// A state outside vrrpStates sets none of them: every series is 0.
	state := c.src.VRRPState()
	for _, s := range vrrpStates {
		ch <- prometheus.MustNewConstMetric(c.vrrpState, prometheus.GaugeValue, boolValue(s == state), s)
	}
	ch <- prometheus.MustNewConstMetric(c.vrrpSick, prometheus.GaugeValue, boolValue(c.src.VRRPSick()))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

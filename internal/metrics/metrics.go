// Package metrics exposes Fulcrum's counters and state to Prometheus.
//
// The fast path's counters live in BPF maps. They are not copied by a
// goroutine: a collector reads them from a Source when Prometheus scrapes,
// so a scrape always shows the maps as they are at that moment. The one
// value Fulcrum pushes is the reconcile duration, observed by the daemon.
//
// docs/metrics.md lists every metric.
package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/healthsteer"
)

const namespace = "fulcrum"

// Source is what the collector reads at scrape time. The daemon implements
// it. Scrapes may run concurrently, so its methods must be safe for
// concurrent use.
type Source interface {
	// Counters reads the fast path's counters now.
	Counters() (datapath.Counters, error)
	// BackendHealth returns "up", "down" or "unknown" per VIP and backend
	// address.
	BackendHealth() map[datapath.VIP]map[netip.Addr]string
	// VRRPState returns "disabled", "init", "backup", "master" or "fault".
	VRRPState() string
	// VRRPSick reports whether VRRP tracking has lowered the node's
	// priority (an interface down, the balancer detached, a VIP without
	// a live backend).
	VRRPSick() bool
	// SteeringCounters returns the counters of the program that steers
	// through-datapath health probes, and false while it is not loaded
	// (no check goes through the data path).
	SteeringCounters() (healthsteer.Counters, bool)
}

// reconcileBuckets span 100µs to 10s in 1-2.5-5 steps.
var reconcileBuckets = []float64{
	0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05,
	0.1, 0.25, 0.5,
	1, 2.5, 5,
	10,
}

// Metrics owns Fulcrum's Prometheus registry: the collector that reads a
// Source at scrape time, the reconcile histogram, build information and the
// Go runtime and process collectors.
type Metrics struct {
	reg       *prometheus.Registry
	collector *collector
	reconcile prometheus.Histogram
	checks    *prometheus.HistogramVec
	buildInfo prometheus.Gauge
	// logger receives scrape errors; nil means slog.Default() at the time
	// of the error, so the daemon may configure logging after New.
	logger *slog.Logger
}

// New returns the metrics of a daemon that reads its counters and state
// from src. version and commit label fulcrum_build_info.
func New(src Source, version, commit string) *Metrics {
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		collector: newCollector(src),
		reconcile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "reconcile_duration_seconds",
			Help:      "Time taken to apply the desired state to the datapath.",
			Buckets:   reconcileBuckets,
		}),
		checks: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "health_check_duration_seconds",
			Help:      "Time one health-check probe took, by check kind and result (ok or fail).",
			Buckets:   reconcileBuckets,
		}, []string{"kind", "result"}),
		buildInfo: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "build_info",
			Help:      "Always 1; labelled with the version, commit and Go version Fulcrum was built from.",
			ConstLabels: prometheus.Labels{
				"version":   version,
				"commit":    commit,
				"goversion": runtime.Version(),
			},
		}),
	}
	m.buildInfo.Set(1)
	m.reg.MustRegister(
		m.collector,
		m.reconcile,
		m.checks,
		m.buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if b, ok := src.(BGPSource); ok {
		m.reg.MustRegister(newBGPCollector(b))
	}
	if cs, ok := src.(ConnSource); ok {
		m.reg.MustRegister(newConnCollector(cs))
	}
	if as, ok := src.(ArenaSource); ok {
		m.reg.MustRegister(arenaCollector{as})
	}
	if s, ok := src.(SyncSource); ok {
		m.reg.MustRegister(newSyncCollector(s))
	}
	if rs, ok := src.(ResponseSource); ok {
		m.reg.MustRegister(responseCollector{rs})
	}
	return m
}

// ObserveReconcile records how long one reconcile took.
func (m *Metrics) ObserveReconcile(d time.Duration) {
	m.reconcile.Observe(d.Seconds())
}

// ObserveHealthCheck records one health-check probe.
func (m *Metrics) ObserveHealthCheck(kind string, d time.Duration, ok bool) {
	result := "fail"
	if ok {
		result = "ok"
	}
	m.checks.WithLabelValues(kind, result).Observe(d.Seconds())
}

// Registry returns the registry that holds every metric, for tests and for
// callers that register metrics of their own.
func (m *Metrics) Registry() *prometheus.Registry {
	return m.reg
}

// Handler serves the registry in the Prometheus exposition formats. When a
// scrape fails (for instance the Source cannot read the counters), it logs
// the error and answers 500 with the error in the body, rather than serving
// a partial set of metrics. It also counts its own requests and errors in
// the promhttp_metric_handler_* metrics. Handler may be called more than
// once; every handler shares those counters.
func (m *Metrics) Handler() http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      scrapeLog{m},
		ErrorHandling: promhttp.HTTPErrorOnError,
		Registry:      m.reg,
	})
	return promhttp.InstrumentMetricHandler(m.reg, h)
}

// scrapeLog adapts slog to promhttp.Logger.
type scrapeLog struct{ m *Metrics }

func (l scrapeLog) Println(v ...any) {
	logger := l.m.logger
	if logger == nil {
		logger = slog.Default()
	}
	logger.Error("serve metrics", "err", strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

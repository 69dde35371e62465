// Package deploy holds only tests: of the files an operator installs
// (the systemd unit, the Debian package, the Grafana dashboard and the
// Prometheus alerts) against the code they describe.
package deploy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/healthsteer"
	"github.com/fulcrum-lb/fulcrum/internal/metrics"
)

// source is a metrics.Source with one VIP, one backend of each health
// state and the steering program loaded, so that every series the
// registry can export is exported.
type source struct{}

var (
	vip = datapath.VIP{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: datapath.TCP}
	be  = netip.MustParseAddr("198.18.0.11")
)

func (source) Counters() (datapath.Counters, error) {
	return datapath.Counters{
		VIPs:     map[datapath.VIP]datapath.Counter{vip: {Packets: 1, Bytes: 64}},
		Backends: map[datapath.VIP]map[netip.Addr]datapath.Counter{vip: {be: {Packets: 1, Bytes: 64}}},
	}, nil
}
func (source) BackendHealth() map[datapath.VIP]map[netip.Addr]string {
	return map[datapath.VIP]map[netip.Addr]string{vip: {be: "up"}}
}
func (source) VRRPState() string { return "master" }
func (source) VRRPSick() bool    { return false }
func (source) SteeringCounters() (healthsteer.Counters, bool) {
	return healthsteer.Counters{}, true
}
func (source) RingArena() datapath.ArenaStats {
	return datapath.ArenaStats{Slots: 1 << 26, Used: 65537, Free: 1<<26 - 65537}
}

// family is what the registry exports under one name.
type family struct {
	typ    dto.MetricType
	labels map[string]map[string]bool // label name -> values seen
}

// registry gathers the metrics of a daemon (internal/metrics on the
// source above), after one reconcile and one probe have been observed.
func registry(t *testing.T) map[string]family {
	t.Helper()
	m := metrics.New(source{}, "v0", "c0")
	m.ObserveReconcile(time.Millisecond)
	m.ObserveHealthCheck("tcp", time.Millisecond, true)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]family)
	for _, mf := range mfs {
		f := family{typ: mf.GetType(), labels: make(map[string]map[string]bool)}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if f.labels[l.GetName()] == nil {
					f.labels[l.GetName()] = make(map[string]bool)
				}
				f.labels[l.GetName()][l.GetValue()] = true
			}
		}
		out[mf.GetName()] = f
	}
	return out
}

// targetLabels are added by Prometheus to every series it scrapes.
var targetLabels = map[string]bool{"instance": true, "job": true}

// promBuiltins are Prometheus' own series, not Fulcrum's.
var promBuiltins = map[string]bool{"up": true}

var (
	// A metric name where PromQL has one: the prefixes of the
	// registry's families (fulcrum_, go_, process_) or up.
	metricName = regexp.MustCompile(`\b((?:fulcrum|go|process)_[a-z0-9_]+|up)\b(\{[^}]*\})?`)
	matcher    = regexp.MustCompile(`([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
)

// checkExpr checks every metric an expression names, and the label
// matchers on it: the name is in the registry (a histogram's _bucket,
// _sum and _count count as the histogram), each label it matches on
// exists, and a value matched with = is one the registry exports, where
// the registry exports a fixed set (every label but vip and backend).
func checkExpr(where, expr string, reg map[string]family) []string {
	var problems []string
	errorf := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	found := metricName.FindAllStringSubmatch(expr, -1)
	if len(found) == 0 {
		errorf("%s: %q names no metric", where, expr)
	}
	for _, m := range found {
		name, selector := m[1], m[2]
		if promBuiltins[name] {
			continue
		}
		f, ok := reg[name]
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, cut := strings.CutSuffix(name, suffix); cut {
					if hf, ok2 := reg[base]; ok2 && hf.typ == dto.MetricType_HISTOGRAM {
						f, ok = hf, true
						if suffix == "_bucket" {
							f.labels = maps(f.labels, "le")
						}
					}
				}
			}
		}
		if !ok {
			errorf("%s: metric %s is not exported by internal/metrics (in %q)", where, name, expr)
			continue
		}
		for _, lm := range matcher.FindAllStringSubmatch(selector, -1) {
			label, op, value := lm[1], lm[2], lm[3]
			if targetLabels[label] {
				continue
			}
			values, ok := f.labels[label]
			if !ok {
				errorf("%s: %s has no label %q (in %q)", where, name, label, expr)
				continue
			}
			if op == "=" && label != "vip" && label != "backend" && !values[value] {
				errorf("%s: %s{%s} is never %q; it is one of %v (in %q)", where, name, label, value, keys(values), expr)
			}
		}
	}
	return problems
}

// check reports the problems of checkExpr.
func check(t *testing.T, where, expr string, reg map[string]family) {
	t.Helper()
	for _, p := range checkExpr(where, expr, reg) {
		t.Error(p)
	}
}

func maps(m map[string]map[string]bool, add string) map[string]map[string]bool {
	out := map[string]map[string]bool{add: {}}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestMonitoringMetricsExist parses the dashboard (JSON) and the alerts
// (YAML) and checks every expression in them against the registry.
func TestMonitoringMetricsExist(t *testing.T) {
	reg := registry(t)
	// The fake exports what the registry can: a family missing here
	// would make the test blind to it.
	for _, name := range []string{"fulcrum_vip_packets_total", "fulcrum_backend_health", "fulcrum_health_steer_packets_total",
		"fulcrum_health_check_duration_seconds", "fulcrum_reconcile_duration_seconds", "fulcrum_vrrp_sick", "fulcrum_ring_arena_slots"} {
		if _, ok := reg[name]; !ok {
			t.Fatalf("the registry does not export %s with the fake source", name)
		}
	}

	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	data, err := os.ReadFile("grafana/fulcrum.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana/fulcrum.json: %v", err)
	}
	exprs := 0
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			check(t, "dashboard panel "+p.Title, tg.Expr, reg)
			exprs++
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			check(t, "dashboard variable "+v.Name, v.Definition, reg)
		}
	}

	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	data, err = os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("prometheus/alerts.yaml: %v", err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			check(t, "alert "+r.Alert, r.Expr, reg)
			if r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("alert %s: want a summary and a severity", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for: %v", r.Alert, err)
				}
			}
		}
	}
	// What the issue asks to be alerted on.
	for _, want := range []string{"FulcrumNodeSick", "FulcrumVRRPFlapping", "FulcrumBackendDown", "FulcrumNewFlowGuard", "FulcrumRingArenaNearFull", "FulcrumConntrackEvicting"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s in prometheus/alerts.yaml (have %v)", want, alerts)
		}
	}
	if exprs < 15 {
		t.Errorf("the dashboard has %d queries; want at least 15", exprs)
	}
}

// TestCheckExprCatches: the checker refuses what it is there to refuse.
func TestCheckExprCatches(t *testing.T) {
	reg := registry(t)
	for _, expr := range []string{
		`fulcrum_conntrack_entries`,                               // no such metric
		`rate(fulcrum_conntrack_events_total{event="gaurd"}[5m])`, // no such event
		`fulcrum_backend_health{health="up"}`,                     // no such label
		`sum(rate(fulcrum_vip_packets_bucket[5m]))`,               // not a histogram
		`vector(1)`, // no metric at all
	} {
		if len(checkExpr("test", expr, reg)) == 0 {
			t.Errorf("checkExpr accepted %q", expr)
		}
	}
}

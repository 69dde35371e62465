package metrics

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// ConnSource is what the connection metric reads at scrape time. A Source
// that also implements it (the daemon does) exports it.
type ConnSource interface {
	// BackendConns returns the fast path's connection counts, per VIP and
	// backend, corrected by the daemon's walks of the connection table.
	BackendConns() map[datapath.VIP]map[netip.Addr]datapath.ConnCount
}

type connCollector struct {
	src   ConnSource
	conns *prometheus.Desc
}

func newConnCollector(src ConnSource) *connCollector {
	return &connCollector{
		src: src,
		conns: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "backend_connections"),
			"Connection entries naming a backend of a VIP, by IPVS's classes: active (established) and inactive (syn, fin, closed). Kept by the fast path as entries come, change state and go, and corrected by a walk of the connection table every 2 s or more for entries that expired in place.",
			[]string{"vip", "backend", "state"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *connCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.conns }

// Collect implements prometheus.Collector: both series of every backend
// the source counts (the fast path's counts name every backend of a VIP
// with a connection table, 0 included).
func (c *connCollector) Collect(ch chan<- prometheus.Metric) {
	for vip, backends := range c.src.BackendConns() {
		v := vip.String()
		for addr, n := range backends {
			b := addr.String()
			ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(n.Active), v, b, "active")
			ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(n.Inactive), v, b, "inactive")
		}
	}
}

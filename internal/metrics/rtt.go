package metrics

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// ResponseSource is what the response-time metric reads at scrape time. A
// Source that also implements it (the daemon does) exports it.
type ResponseSource interface {
	// BackendResponseTimes returns, per VIP with response_time and
	// backend, each measured source's EWMA by source name (passive,
	// active); a source not measured yet is absent.
	BackendResponseTimes() map[datapath.VIP]map[netip.Addr]map[string]time.Duration
}

var responseSeconds = prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "backend_response_seconds"),
	"A backend's response time, an EWMA folded every 100 ms, by source: passive (the fast path's time from a flow's SYN to the client's first ACK, which includes the backend's SYN-ACK) or active (the health probe's duration). Only VIPs with response_time, and only sources with a sample.",
	[]string{"vip", "backend", "source"}, nil)

type responseCollector struct{ src ResponseSource }

// Describe implements prometheus.Collector.
func (responseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- responseSeconds }

// Collect implements prometheus.Collector.
func (c responseCollector) Collect(ch chan<- prometheus.Metric) {
	for vip, backends := range c.src.BackendResponseTimes() {
		v := vip.String()
		for addr, bySource := range backends {
			for source, d := range bySource {
				ch <- prometheus.MustNewConstMetric(responseSeconds, prometheus.GaugeValue, d.Seconds(), v, addr.String(), source)
			}
		}
	}
}

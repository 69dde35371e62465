package metrics

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

// BGPSource is what the BGP metrics read at scrape time. A Source that also
// implements it (the daemon does) exports them.
type BGPSource interface {
	// BGPSessions returns whether each peer's session is established and
	// how many prefixes are announced; enabled is false without a bgp
	// section, and then nothing is exported.
	BGPSessions() (up map[netip.Addr]bool, announced int, enabled bool)
}

type bgpCollector struct {
	src       BGPSource
	sessionUp *prometheus.Desc
	announced *prometheus.Desc
}

func newBGPCollector(src BGPSource) *bgpCollector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "", n) }
	return &bgpCollector{
		src: src,
		sessionUp: prometheus.NewDesc(name("bgp_session_up"),
			"1 while the BGP session with the peer is established, 0 otherwise.",
			[]string{"peer"}, nil),
		announced: prometheus.NewDesc(name("bgp_announced_prefixes"),
			"VIP prefixes this node announces now; the others are withdrawn (GET /v1/bgp says why).",
			nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sessionUp
	ch <- c.announced
}

// Collect implements prometheus.Collector.
func (c *bgpCollector) Collect(ch chan<- prometheus.Metric) {
	up, announced, enabled := c.src.BGPSessions()
	if !enabled {
		return
	}
	for peer, ok := range up {
		ch <- prometheus.MustNewConstMetric(c.sessionUp, prometheus.GaugeValue, boolValue(ok), peer.String())
	}
	ch <- prometheus.MustNewConstMetric(c.announced, prometheus.GaugeValue, float64(announced))
}

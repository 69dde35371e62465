package metrics

import (
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// SyncSource is what the connection-sync metrics read at scrape time. A
// Source that also implements it (the daemon does) exports them while sync
// runs (enabled).
type SyncSource interface {
	SyncStats() (s api.SyncStatus, enabled bool, err error)
}

type syncCollector struct {
	src                          SyncSource
	sent, received, installed    *prometheus.Desc
	skipped, dropped, overflow   *prometheus.Desc
	resyncs, lag, lagMax, peerUp *prometheus.Desc
	refreshes, refreshEntries    *prometheus.Desc
}

func newSyncCollector(src SyncSource) *syncCollector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "sync", n) }
	return &syncCollector{
		src: src,
		sent: prometheus.NewDesc(name("sent_entries_total"),
			"Connection entries sent to sync peers (once per peer), resyncs included.", nil, nil),
		received: prometheus.NewDesc(name("received_entries_total"),
			"Connection entries received in accepted (authenticated, fresh, well-formed) sync datagrams.", nil, nil),
		installed: prometheus.NewDesc(name("installed_total"),
			"Received connection entries installed into the connection table.", nil, nil),
		skipped: prometheus.NewDesc(name("skipped_total"),
			"Received connection entries not installed, by reason: fresher (a live local entry seen as recently), unknown (VIP or backend not configured here), full (no free way: sync never evicts a live entry), expired, error.",
			[]string{"reason"}, nil),
		dropped: prometheus.NewDesc(name("dropped_total"),
			"Received sync datagrams dropped, by reason (forged, replayed, truncated, ...); none of their entries is installed.",
			[]string{"reason"}, nil),
		overflow: prometheus.NewDesc(name("overflow_total"),
			"Connection entries lost before they were sent, by where: ring (the fast path's event ring buffer was full) or queue (the send queue was full).",
			[]string{"where"}, nil),
		resyncs: prometheus.NewDesc(name("resyncs_total"),
			"Full resyncs sent to a peer that (re)appeared.", nil, nil),
		refreshes: prometheus.NewDesc(name("refreshes_total"),
			"Refresh walks made: the forwarding node's periodic re-send of the entries that saw a packet since the previous walk began.", nil, nil),
		refreshEntries: prometheus.NewDesc(name("refresh_entries_total"),
			"Connection entries the refresh walks re-sent (once each, whatever the number of peers); also in fulcrum_sync_sent_entries_total, once per peer.", nil, nil),
		lag: prometheus.NewDesc(name("lag_seconds"),
			"Sync lag: send is the time from an entry's event to its datagram's send (a sample of entries); receive the age of accepted datagrams at receipt (as far as the nodes' clocks agree).",
			[]string{"direction"}, nil),
		lagMax: prometheus.NewDesc(name("lag_max_seconds"),
			"The largest sync lag seen since the daemon started, by direction (see fulcrum_sync_lag_seconds).",
			[]string{"direction"}, nil),
		peerUp: prometheus.NewDesc(name("peer_up"),
			"1 while an authenticated datagram came from the sync peer within the peer timeout, 0 otherwise.",
			[]string{"peer"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *syncCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sent, c.received, c.installed, c.skipped, c.dropped, c.overflow, c.resyncs, c.refreshes, c.refreshEntries, c.lag, c.lagMax, c.peerUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *syncCollector) Collect(ch chan<- prometheus.Metric) {
	s, ok, err := c.src.SyncStats()
	if !ok {
		return
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.overflow, fmt.Errorf("read sync state: %w", err))
		return
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.sent, s.SentEntries)
	counter(c.received, s.ReceivedEntries)
	counter(c.installed, s.Installed)
	counter(c.resyncs, s.Resyncs)
	counter(c.refreshes, s.Refreshes)
	counter(c.refreshEntries, s.RefreshEntries)
	for _, m := range []struct {
		desc *prometheus.Desc
		v    map[string]uint64
	}{{c.skipped, s.Skipped}, {c.dropped, s.Dropped}, {c.overflow, s.Overflow}} {
		keys := make([]string, 0, len(m.v))
		for k := range m.v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			counter(m.desc, m.v[k], k)
		}
	}
	for _, l := range []struct {
		dir string
		lag api.Lag
	}{{"send", s.SendLag}, {"receive", s.ReceiveAge}} {
		ch <- prometheus.MustNewConstSummary(c.lag, l.lag.Count, l.lag.Sum.Seconds(), nil, l.dir)
		ch <- prometheus.MustNewConstMetric(c.lagMax, prometheus.GaugeValue, l.lag.Max.Seconds(), l.dir)
	}
	for _, p := range s.Peers {
		ch <- prometheus.MustNewConstMetric(c.peerUp, prometheus.GaugeValue, boolValue(p.Up), p.Address.String())
	}
}

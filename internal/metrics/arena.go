package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// ArenaSource is what the ring arena metric reads at scrape time. A Source
// that also implements it (the daemon does) exports it.
type ArenaSource interface {
	// RingArena returns how the ring arena's slots are spent now.
	RingArena() datapath.ArenaStats
}

// arenaStates are the states of fulcrum_ring_arena_slots, which sum to the
// capacity.
var arenaStates = []string{"used", "retired", "free"}

var arenaSlots = prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "ring_arena_slots"),
	"Slots (4 bytes each) of the ring arena, which holds every VIP's Maglev ring, by state: used (a VIP's ring, or a new one not yet published), retired (replaced, freed a grace period later) and free. They sum to the capacity, ring_arena_slots. A change needs room for its new rings beside the old ones.",
	[]string{"state"}, nil)

// arenaCollector exports an ArenaSource's figures.
type arenaCollector struct{ src ArenaSource }

// Describe implements prometheus.Collector.
func (arenaCollector) Describe(ch chan<- *prometheus.Desc) { ch <- arenaSlots }

// Collect implements prometheus.Collector: every state, from one reading,
// so that they sum to the capacity.
func (c arenaCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.RingArena()
	for i, n := range []uint32{s.Used, s.Retired, s.Free} {
		ch <- prometheus.MustNewConstMetric(arenaSlots, prometheus.GaugeValue, float64(n), arenaStates[i])
	}
}

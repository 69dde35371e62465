package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// arenaFake is a Source with a ring arena.
type arenaFake struct {
	*fakeSource
	stats datapath.ArenaStats
}

func (f *arenaFake) RingArena() datapath.ArenaStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// TestRingArenaSlots: the three states of the arena's slots, read at each
// scrape; none from a Source without an arena.
func TestRingArenaSlots(t *testing.T) {
	f := &arenaFake{fakeSource: newFake(), stats: datapath.ArenaStats{Slots: 1 << 20, Used: 3 * 65537, Retired: 65537, Free: 1<<20 - 4*65537}}
	m := New(f, "v1", "c")
	const help = `
# HELP fulcrum_ring_arena_slots Slots (4 bytes each) of the ring arena, which holds every VIP's Maglev ring, by state: used (a VIP's ring, or a new one not yet published), retired (replaced, freed a grace period later) and free. They sum to the capacity, ring_arena_slots. A change needs room for its new rings beside the old ones.
# TYPE fulcrum_ring_arena_slots gauge
`
	want := help + `fulcrum_ring_arena_slots{state="free"} 786428
fulcrum_ring_arena_slots{state="retired"} 65537
fulcrum_ring_arena_slots{state="used"} 196611
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "fulcrum_ring_arena_slots"); err != nil {
		t.Error(err)
	}
	// The retired ring freed: read again at the next scrape.
	f.set(func(*fakeSource) { f.stats.Retired, f.stats.Free = 0, f.stats.Free+65537 })
	want = help + `fulcrum_ring_arena_slots{state="free"} 851965
fulcrum_ring_arena_slots{state="retired"} 0
fulcrum_ring_arena_slots{state="used"} 196611
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "fulcrum_ring_arena_slots"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(New(newFake(), "v1", "c").Registry(), "fulcrum_ring_arena_slots"); err != nil || n != 0 {
		t.Errorf("a Source without an arena: %d series (%v), want none", n, err)
	}
}

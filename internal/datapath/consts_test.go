package datapath

import "testing"

// TestSpecCapacities holds the Go side's facts about the maps to the
// compiled object, which is where they live (bpf/consts.h): the default
// connection table size, the ring arena's default capacity, and one
// capacity for every map Load sizes as a VIP map or as a backend map.
func TestSpecCapacities(t *testing.T) {
	spec, err := loadBalancer()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{balancerMapCtKeysV4, balancerMapCtKeysV6} {
		if got := spec.Maps[name].MaxEntries; got != DefaultConntrackEntries {
			t.Errorf("map %s: max_entries %d, want DefaultConntrackEntries %d", name, got, DefaultConntrackEntries)
		}
	}
	for _, name := range []string{balancerMapCtV4, balancerMapCtV6} {
		if got := spec.Maps[name].MaxEntries; got != DefaultConntrackEntries/ctWays {
			t.Errorf("map %s: max_entries %d, want DefaultConntrackEntries/ctWays %d buckets", name, got, DefaultConntrackEntries/ctWays)
		}
	}
	var buckets uint32
	if err := spec.Variables[balancerVarCtBuckets].Get(&buckets); err != nil || buckets != DefaultConntrackEntries/ctWays {
		t.Errorf("ct_buckets = %d (%v), want %d", buckets, err, DefaultConntrackEntries/ctWays)
	}
	if got := spec.Maps[balancerMapRingArena].MaxEntries * ringChunkSlots; got != DefaultRingSlots {
		t.Errorf("map %s: %d slots as compiled, want DefaultRingSlots %d", balancerMapRingArena, got, DefaultRingSlots)
	}
	groups := []struct {
		what  string
		first string
		maps  []string
	}{
		{"vip", balancerMapVipsV4, []string{balancerMapVipsV6, balancerMapVipState,
			balancerMapVipStats, balancerMapVipAddrsV4, balancerMapVipAddrsV6}},
		{"backend", balancerMapBackends, []string{balancerMapBackendStats, balancerMapHopCache}},
	}
	if got, want := spec.Maps[balancerMapVipMetas].MaxEntries, 2*spec.Maps[balancerMapVipsV4].MaxEntries; got != want {
		t.Errorf("map %s: max_entries %d, want %d, twice %s's (Load sizes it so)", balancerMapVipMetas, got, want, balancerMapVipsV4)
	}
	for _, g := range groups {
		want := spec.Maps[g.first].MaxEntries
		if want == 0 {
			t.Errorf("map %s: max_entries 0", g.first)
		}
		for _, name := range g.maps {
			if got := spec.Maps[name].MaxEntries; got != want {
				t.Errorf("%s map %s: max_entries %d, want %d as %s has", g.what, name, got, want, g.first)
			}
		}
	}
}

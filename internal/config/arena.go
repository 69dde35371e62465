package config

import (
	"fmt"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/ringsize"
)

// The ring arena's capacity (root key ring_arena_slots), in ring slots of
// 4 bytes, all allocated when the daemon loads the fast path.
const (
	DefaultRingArenaSlots = datapath.DefaultRingSlots
	// MinRingArenaSlots holds one ring of the largest size
	// (maglev.MaxSize), rounded up: less could refuse a single VIP.
	MinRingArenaSlots = 1 << 17
	// MaxRingArenaSlots (4 GiB) holds the rings of MAX_VIPS (4096) VIPs of
	// the default size twice over, a bulk change of all of them included.
	MaxRingArenaSlots = 1 << 30
)

// ringArena reads ring_arena_slots: in range, rounded up as the datapath
// allocates it (datapath.ArenaCapacity), so that the figure the config
// holds, checks and compares on reload is the capacity itself.
func ringArena(f *fields) uint32 {
	return datapath.ArenaCapacity(uint32(f.integer("ring_arena_slots", DefaultRingArenaSlots, MinRingArenaSlots, MaxRingArenaSlots)))
}

// RingSlots returns the arena slots the rings of vips take: each VIP's
// ring_size, or for one with ring_size auto the size the daemon chooses
// from its configured backends and weights (internal/ringsize, as the
// reconciler does: health never changes it), or its ring_size_max if
// the choice fails; as much again for each of its source-prefix pools
// (a pool's ring has the VIP's size); and for a round-robin VIP its
// sequence, counted at its bound (datapath.RRMaxLen plus a slot a
// backend), since weights may change it.
func RingSlots(vips []VIP) uint64 {
	var sum uint64
	for _, v := range vips {
		sum += uint64(ringOf(v)) * uint64(1+len(v.Pools))
		if v.Scheduler == SchedulerRoundRobin {
			sum += uint64(datapath.RRMaxLen) + uint64(len(v.Backends))
		}
	}
	return sum
}

// ringOf returns the ring size the daemon gives v.
func ringOf(v VIP) uint32 {
	if !v.RingSizeAuto {
		return v.RingSize
	}
	bs := make([]ringsize.Backend, len(v.Backends))
	for i, b := range v.Backends {
		bs[i] = ringsize.Backend{Name: b.Address.String(), Weight: b.Weight}
	}
	c, err := ringsize.Choose(bs, v.RingSizeMax)
	if err != nil {
		return v.RingSizeMax
	}
	return c.Size
}

// checkRingArena refuses a configuration whose VIPs' rings do not fit in
// the ring arena together. The rule checked: the sum of the rings is at
// most ring_arena_slots, so that the daemon can write every ring at start.
// A reload needs more, which Parse cannot know: each changed ring is
// written beside the one it replaces before either is published, so a
// change of every ring at once needs up to twice the sum; the datapath
// refuses a change that finds no room, naming the setting
// (docs/datapath.md, "Arena capacity").
func checkRingArena(f *fields, c *Config) {
	need := RingSlots(c.VIPs)
	if need <= uint64(c.RingArenaSlots) {
		return
	}
	of := "the default capacity"
	if f.has("ring_arena_slots") {
		of = "ring_arena_slots"
	}
	fix := fmt.Sprintf("set ring_arena_slots to at least %d", datapath.ArenaCapacity(uint32(min(need, MaxRingArenaSlots))))
	switch {
	case need > MaxRingArenaSlots:
		fix = fmt.Sprintf("that is over ring_arena_slots' maximum %d", MaxRingArenaSlots)
	case 2*need <= MaxRingArenaSlots:
		fix += fmt.Sprintf(", or %d to change every ring in one reload", datapath.ArenaCapacity(uint32(2*need)))
	}
	f.errf("ring_arena_slots", "the rings of the %d VIPs take %d slots (the sum of their ring sizes, auto ones as chosen), over the %d of %s; %s (4 bytes a slot, allocated at start), or give VIPs smaller rings (ring_size)",
		len(c.VIPs), need, c.RingArenaSlots, of, fix)
}

package reconcile

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// Preview is what Apply would do with a state, computed and not written.
type Preview struct {
	Added, Removed []datapath.VIP // sorted
	Changed        []VIPPreview   // sorted by VIP
	Unchanged      int
}

// VIPPreview is how a VIP's settings and ring would change.
type VIPPreview struct {
	VIP datapath.VIP
	// Settings are the VIP's fields that change, "field: old -> new".
	Settings []string
	// Backends are the backends of the ring as written and as planned,
	// sorted by address.
	Backends []BackendPreview
	// RingSize is the planned ring's; Moved of its slots would name
	// another backend than they do now (every slot if the size changes).
	RingSize uint32
	Moved    uint32
}

// BackendPreview is one backend of a changed VIP. Weights and slots are
// those of the ring: a backend taken out for being down is not in it, one
// drained for it has weight 0.
type BackendPreview struct {
	Addr                 netip.Addr
	Change               string // "added", "removed", "weight", "mac" or "" (unchanged)
	OldWeight, NewWeight uint32
	OldSlots, NewSlots   uint32
}

// previewMAC stands for a MAC that Apply would resolve and Preview does
// not (a preview sends nothing to the network): the MAC written now is
// taken as the answer, and a new backend's does not matter to its ring.
var previewMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0}

// Preview plans s exactly as Apply would, with the health observed now,
// and compares the plan with what the datapath holds; it writes nothing.
// A state that Apply would refuse is refused with the same error.
func (r *Reconciler) Preview(s State) (Preview, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Every MAC the plan asks for and the resolver has not cached is the
	// placeholder, so that planning neither waits nor fails on it.
	r.resolved = make(map[netip.Addr]resolution)
	for _, v := range s.VIPs {
		for _, b := range v.Backends {
			r.resolved[b.Address] = resolution{mac: previewMAC}
		}
	}
	defer func() { r.resolved, r.missing = nil, nil }()
	pl, err := r.plan(s, nil)
	if err != nil {
		return Preview{}, err
	}
	targets := pl.targets

	var p Preview
	current := make(map[datapath.VIP]datapath.VIPState)
	for _, c := range r.dp.VIPs() {
		current[c.VIP] = c
		if _, ok := targets[c.VIP]; !ok {
			p.Removed = append(p.Removed, c.VIP)
		}
	}
	keys := slices.SortedFunc(func(yield func(datapath.VIP) bool) {
		for k := range targets {
			if !yield(k) {
				return
			}
		}
	}, datapath.VIP.Compare)
	for _, k := range keys {
		t := targets[k]
		cur, ok := current[k]
		if !ok {
			p.Added = append(p.Added, k)
			continue
		}
		keepMACs(cur, t)
		if same(cur, t) {
			p.Unchanged++
			continue
		}
		vp, err := previewVIP(cur, t)
		if err != nil {
			return Preview{}, err
		}
		p.Changed = append(p.Changed, vp)
	}
	return p, nil
}

// keepMACs gives the planned backends whose MAC is the placeholder the
// MAC written now, if any.
func keepMACs(cur datapath.VIPState, t target) {
	for i, b := range t.backends {
		if !bytes.Equal(b.MAC, previewMAC) {
			continue
		}
		if j := slices.IndexFunc(cur.Backends, func(c datapath.Backend) bool { return c.Addr == b.Addr }); j >= 0 {
			t.backends[i].MAC = cur.Backends[j].MAC
		}
	}
}

// previewVIP compares a VIP's ring as written with its planned one.
func previewVIP(cur datapath.VIPState, t target) (VIPPreview, error) {
	vp := VIPPreview{VIP: cur.VIP, RingSize: t.cfg.RingSize}
	if vp.RingSize == 0 {
		vp.RingSize = cur.Config.RingSize
	}
	oc, nc := cur.Config, t.cfg
	setting := func(name string, old, cur any) {
		if old != cur {
			vp.Settings = append(vp.Settings, fmt.Sprintf("%s: %v -> %v", name, old, cur))
		}
	}
	setting("mode", oc.Mode, nc.Mode)
	setting("ring_size", oc.RingSize, vp.RingSize)
	setting("conntrack", !oc.NoConntrack, !nc.NoConntrack)
	setting("source_hash", oc.SourceHash, nc.SourceHash)
	setting("round_robin", oc.RoundRobin, nc.RoundRobin)
	setting("passive_response_time", oc.ResponseTime, nc.ResponseTime)
	setting("least_conn", oc.LeastConn, nc.LeastConn)
	setting("least_time", oc.LeastTime, nc.LeastTime)
	setting("pass_unparseable", oc.PassUnparseable, nc.PassUnparseable)
	setting("source_ranges", rangesText(oc.SourceRanges), rangesText(nc.SourceRanges))
	setting("pools", oc.Pools.String(), nc.Pools.String())

	before, err := ringOf(cur.Backends, oc.RingSize)
	if err != nil {
		return VIPPreview{}, fmt.Errorf("vip %s: ring as written: %w", cur.VIP, err)
	}
	after, err := ringOf(t.backends, vp.RingSize)
	if err != nil {
		return VIPPreview{}, fmt.Errorf("vip %s: planned ring: %w", cur.VIP, err)
	}
	if len(before) != len(after) {
		vp.Moved = uint32(len(after))
	} else {
		for i := range after {
			if before[i] != after[i] {
				vp.Moved++
			}
		}
	}
	slots := func(ring []netip.Addr) map[netip.Addr]uint32 {
		n := make(map[netip.Addr]uint32)
		for _, a := range ring {
			n[a]++
		}
		return n
	}
	oldSlots, newSlots := slots(before), slots(after)
	byAddr := make(map[netip.Addr]*BackendPreview)
	for _, b := range cur.Backends {
		byAddr[b.Addr] = &BackendPreview{Addr: b.Addr, Change: "removed", OldWeight: b.Weight, OldSlots: oldSlots[b.Addr]}
	}
	for _, b := range t.backends {
		bp := byAddr[b.Addr]
		if bp == nil {
			bp = &BackendPreview{Addr: b.Addr, Change: "added"}
			byAddr[b.Addr] = bp
		} else {
			o := cur.Backends[slices.IndexFunc(cur.Backends, func(c datapath.Backend) bool { return c.Addr == b.Addr })]
			switch {
			case o.Weight != b.Weight:
				bp.Change = "weight"
			case !bytes.Equal(o.MAC, b.MAC):
				bp.Change = "mac"
			default:
				bp.Change = ""
			}
		}
		bp.NewWeight, bp.NewSlots = b.Weight, newSlots[b.Addr]
	}
	for _, bp := range byAddr {
		vp.Backends = append(vp.Backends, *bp)
	}
	slices.SortFunc(vp.Backends, func(a, b BackendPreview) int { return a.Addr.Compare(b.Addr) })
	return vp, nil
}

// ringOf builds a VIP's Maglev ring as the datapath does (names are the
// backends' addresses, which alone place them; weight 0 takes no slot)
// and returns the backend of each slot; an invalid address marks a slot
// of a ring without active backends.
func ringOf(backends []datapath.Backend, size uint32) ([]netip.Addr, error) {
	in := make([]maglev.Backend, len(backends))
	for i, b := range backends {
		in[i] = maglev.Backend{Name: b.Addr.String(), ID: uint32(i), Weight: b.Weight}
	}
	table, err := maglev.Build(in, size)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, len(table))
	for i, id := range table {
		if id != maglev.Unassigned {
			out[i] = backends[id].Addr
		}
	}
	return out, nil
}

// rangesText shows source ranges in a change: "all" for none.
func rangesText(r datapath.SourceRanges) string {
	if r.IsZero() {
		return "all"
	}
	return r.String()
}

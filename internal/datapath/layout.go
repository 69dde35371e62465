package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/version"
)

// LayoutVersion numbers the layout of the pinned state: which maps there
// are, the format of their keys and values, and what their entries mean.
// A release that changes any of these raises it, and migrates the pins of
// the layouts from OldestLayout on (migrate.go). Sizes are not part of it:
// a map of another size (say a new conntrack.entries) migrates within the
// same layout.
//
//   - 1: the pins of every release before layout versions (commit ba1a568
//     and earlier): the balancer's maps and the XDP links, no marker.
//   - 2: layout 1's maps with the same formats, plus the marker
//     (layoutPin) and the balancer program pinned (programPin).
//   - 3: vip_meta (vips_*, vip_state) carries the VIP's connection
//     timeouts in jiffies; the verdict table ends with ct_expired; a
//     connection entry's spare byte is its TCP state (0, established, in
//     entries of older layouts).
//   - 4: the connection tables ct_v4/ct_v6 are arrays of 64-byte buckets
//     of 4 ways (bpf/types.h ct_bucket) with the tuples beside them in
//     ct_keys_v4/ct_keys_v6, in place of the LRU hashes; the rings are
//     extents of one mmapable array, ring_arena, named by vip_meta's new
//     ring_offset (after ring_size), and the map of maps rings is gone; the
//     src_prefixes LPM trie holds the VIPs' source ranges
//     (VIP_F_SOURCE_RANGES in vip_meta.flags) and their source-prefix
//     pools' prefixes (kind SRC_KIND_POOL, VIP_F_POOLS), and the hash map
//     pool_rings the pools' rings; the ct_events ring buffer carries
//     entries to connection sync; vip_meta ends with a round-robin VIP's
//     sequence (rr_offset, rr_len: another extent of ring_arena,
//     VIP_F_ROUND_ROBIN) and rr_cursors holds each CPU's place in it; the
//     verdict table ends with drop_source_range, ct_evicted,
//     ct_export_full, drop_pool_down, pool_fallback, sched_rr, rt_sample,
//     rt_lost, sched_least_conn_exact and sched_least_conn_two_choices;
//     rt_syn, rt_samples and backend_cost hold passive response times
//     (VIP_F_RESPONSE_TIME) and the backends' costs; backend_conns
//     (mmapable, by backend id) holds the fast path's connection counts,
//     and lc_pools (by VIP index) least-conn's pools (VIP_F_LEAST_CONN),
//     read with the weight a backend entry now carries for the fast path;
//     the mmapable array host_filter is the destination prefilter, a bitmap
//     of the VIP and policy addresses' hashes (written by Go from the VIPs,
//     never copied: a migration's fill sets it).
//   - 5: vips_v4/vips_v6 map a VIP's key to a slot (__u32) of the new array
//     vip_metas, whose value (bpf/types.h vip_slot) is the VIP's vip_meta
//     and its key, in place of the meta itself (docs/datapath.md, "VIP
//     publication"; a migration reads either, eachVIP); pool_rings is an
//     mmapable array of VIPs × PoolsPerVIP __u64 words, by pool id, each
//     packing a pool's ring offset, size and flags (bpf/consts.h
//     POOL_RING_*, POOL_F_PRESENT; 0 is no pool), in place of the hash
//     map of struct pool_ring, for the same reason (never copied: a
//     migration's fill writes the pools afresh).
const LayoutVersion = 5

// OldestLayout is the oldest layout this release migrates from: the
// support window is at least the previous release.
const OldestLayout = 1

// The names of the pins beside the maps (which are pinned by map name).
const (
	layoutPin  = "layout"
	programPin = "program"
)

// Layout identifies the layout of an instance's pins and the release that
// wrote them.
type Layout struct {
	Version uint32
	// Release is the version string of the build that wrote the pins;
	// empty for layout 1, which recorded none.
	Release string
}

func (l Layout) String() string {
	if l.Release == "" {
		return fmt.Sprintf("layout %d", l.Version)
	}
	return fmt.Sprintf("layout %d (written by %s)", l.Version, l.Release)
}

// layoutRecord is the marker map's one value. The marker is a Go-only map
// (the program never reads it), so this is its only definition.
type layoutRecord struct {
	Version uint32
	Release [124]byte
}

var layoutSpec = ebpf.MapSpec{
	Name:       "fulcrum_layout",
	Type:       ebpf.Array,
	KeySize:    4,
	ValueSize:  128,
	MaxEntries: 1,
}

// currentLayout is the layout this build writes: LayoutVersion, unless a
// test asks for another (FULCRUM_TEST_LAYOUT, testhooks.go).
func currentLayout() Layout {
	v := uint32(LayoutVersion)
	if n, err := strconv.ParseUint(os.Getenv(TestLayoutEnv), 10, 32); err == nil && n > 0 {
		v = uint32(n)
	}
	return Layout{Version: v, Release: version.String()}
}

// Layout returns the layout of the maps this datapath loaded, the one the
// fast path runs on (adopted pins are of it; older ones were migrated into
// new maps of it).
func (d *Datapath) Layout() Layout {
	return currentLayout()
}

// ReadLayout returns the layout of the pins in dir; ok is false when dir
// holds no balancer maps.
func ReadLayout(dir string) (l Layout, ok bool, err error) {
	if !hasPins(dir) {
		return Layout{}, false, nil
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, layoutPin), nil)
	if errors.Is(err, os.ErrNotExist) {
		return Layout{Version: 1}, true, nil
	}
	if err != nil {
		return Layout{}, false, fmt.Errorf("read layout marker in %s: %w", dir, err)
	}
	defer m.Close()
	if err := layoutSpec.Compatible(m); err != nil {
		return Layout{}, false, fmt.Errorf("read layout marker in %s: %w", dir, err)
	}
	var rec layoutRecord
	if err := m.Lookup(uint32(0), &rec); err != nil {
		return Layout{}, false, fmt.Errorf("read layout marker in %s: %w", dir, err)
	}
	release, _, _ := bytes.Cut(rec.Release[:], []byte{0})
	return Layout{Version: rec.Version, Release: string(release)}, true, nil
}

// writeLayout records l as the layout of the pins in dir.
func writeLayout(dir string, l Layout) error {
	path := filepath.Join(dir, layoutPin)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		spec := layoutSpec
		m, err = ebpf.NewMap(&spec)
		if err == nil {
			if err = m.Pin(path); err != nil {
				m.Close()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("write layout marker in %s: %w", dir, err)
	}
	defer m.Close()
	rec := layoutRecord{Version: l.Version}
	copy(rec.Release[:len(rec.Release)-1], l.Release)
	if err := m.Put(uint32(0), rec); err != nil {
		return fmt.Errorf("write layout marker in %s: %w", dir, err)
	}
	return nil
}

// pinProgram pins prog in dir, replacing an earlier pin: recovery tells
// from it whether the XDP links already run a migration's new program.
func pinProgram(dir string, prog *ebpf.Program) error {
	path := filepath.Join(dir, programPin)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace pinned program %s: %w", path, err)
	}
	// Pin sets the program's pin path; a clone keeps d.objs' unpinned.
	c, err := prog.Clone()
	if err != nil {
		return fmt.Errorf("pin program in %s: %w", dir, err)
	}
	defer c.Close()
	if err := c.Pin(path); err != nil {
		return fmt.Errorf("pin program in %s: %w", dir, err)
	}
	return nil
}

// downgradeError is the refusal of pins newer than this build.
func downgradeError(dir string, found, cur Layout) error {
	return fmt.Errorf("the pins in %s have %s, newer than this build's layout %d (%s): this is a downgrade, and this build cannot read that layout. "+
		"Nothing was changed: the pinned program goes on forwarding. To go on, start the release that wrote the pins or a newer one; "+
		"to downgrade anyway, run 'fulcrum detach' for this instance first, which drops the connection table (on a VRRP pair, do that on the standby and hand over, see docs/upgrade.md)",
		dir, found, cur.Version, cur.Release)
}

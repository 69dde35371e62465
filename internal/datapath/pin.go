package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// PinDir returns the directory holding an instance's pinned maps and links
// under a bpffs root: ROOT/fulcrum/INSTANCE.
func PinDir(root, instance string) string {
	return filepath.Join(root, "fulcrum", instance)
}

// RemovePins removes an instance's pinned link and maps, and those of a
// migration a crash interrupted (DIR_next, DIR_old). With the pins gone and
// no process holding them, the kernel detaches the program and frees the
// maps. Removing pins that do not exist is not an error.
func RemovePins(dir string) error {
	for _, d := range []string{dir, nextDir(dir), oldDir(dir)} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("remove pins in %s: %w", d, err)
		}
	}
	return nil
}

// pinsExist reports whether an instance has pins in dir, or in the
// directories of an interrupted migration.
func pinsExist(dir string) bool {
	return exists(dir) || exists(nextDir(dir)) || exists(oldDir(dir))
}

// hasPins reports whether dir holds pinned balancer maps.
func hasPins(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, balancerMapVipState))
	return err == nil
}

func linkPin(dir string, ifindex int) string {
	return filepath.Join(dir, fmt.Sprintf("xdp_link_ifindex_%d", ifindex))
}

// attachPinned takes over a pinned XDP link for ifindex, if there is a
// live one, and points it at the freshly loaded program with one atomic
// update: no packet sees the interface without a program.
func (d *Datapath) attachPinned(ifindex int) (link.Link, bool, error) {
	path := linkPin(d.pinDir, ifindex)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return nil, false, fmt.Errorf("load pinned xdp link %s: %w", path, err)
	}
	info, err := l.Info()
	if err == nil && info.XDP() != nil && info.XDP().Ifindex == uint32(ifindex) {
		if err := l.Update(d.objs.FulcrumBalancer); err != nil {
			l.Close()
			return nil, false, fmt.Errorf("update pinned xdp link %s: %w", path, err)
		}
		return l, true, nil
	}
	// The interface went away since: the link is defunct. Drop it.
	l.Unpin()
	l.Close()
	return nil, false, nil
}

// adopt rebuilds the Go view of VIPs, backends and allocations from pinned
// maps, so a restarted daemon continues where the last one stopped and its
// reconcile touches only what changed.
func (d *Datapath) adopt() error {
	hz, err := d.hz()
	if err != nil {
		return err
	}
	metas := make(map[uint16]VIP)
	slots := make(map[uint32]VIP) // the vip_metas slots the keys name
	var sharedSlot error
	ranged := make(map[uint16]*vipEntry) // VIPs with VIP_F_SOURCE_RANGES
	pooled := make(map[uint16]*vipEntry) // VIPs with VIP_F_POOLS
	add := func(vip VIP, m balancerVipMeta, slot uint32) {
		cfg := VIPConfig{
			Mode:            Mode(m.Mode),
			RingSize:        m.RingSize,
			NoConntrack:     m.Flags&uint16(balancerFulcrumVipFlagsVIP_F_NO_CONNTRACK) != 0,
			SourceHash:      m.Flags&uint16(balancerFulcrumVipFlagsVIP_F_SOURCE_HASH) != 0,
			RoundRobin:      m.Flags&uint16(balancerFulcrumVipFlagsVIP_F_ROUND_ROBIN) != 0,
			ResponseTime:    m.Flags&uint16(balancerFulcrumVipFlagsVIP_F_RESPONSE_TIME) != 0,
			LeastConn:       m.Flags&uint16(balancerFulcrumVipFlagsVIP_F_LEAST_CONN) != 0,
			LeastTime:       m.Flags&uint16(balancerFulcrumVipFlagsVIP_F_LEAST_TIME) != 0,
			PassUnparseable: m.Flags&uint16(balancerFulcrumVipFlagsVIP_F_PASS_UNPARSEABLE) != 0,
			Timeouts:        connTimeoutsOf(vip.Proto, m.CtTimeout, hz),
		}
		d.vips[vip] = &vipEntry{vip: vip, cfg: cfg, index: m.Index, gen: m.Gen, ring: extent{m.RingOffset, m.RingSize}, rr: extent{m.RrOffset, m.RrLen},
			slot: slot, hasSlot: true, backends: make(map[netip.Addr]*backendEntry), byID: make(map[uint32]*backendEntry)}
		metas[m.Index] = vip
		if other, ok := slots[slot]; ok && sharedSlot == nil {
			sharedSlot = fmt.Errorf("adopt vips %s and %s: both name meta slot %d", other, vip, slot)
		}
		slots[slot] = vip
		d.vipGen[m.Index] = m.Gen
		if m.Flags&uint16(balancerFulcrumVipFlagsVIP_F_SOURCE_RANGES) != 0 {
			ranged[m.Index] = d.vips[vip]
		}
		if m.Flags&uint16(balancerFulcrumVipFlagsVIP_F_POOLS) != 0 {
			pooled[m.Index] = d.vips[vip]
		}
	}
	if err := eachVIP(d.objs.VipsV4, d.objs.VipsV6, d.objs.VipMetas, add); err != nil {
		return err
	}
	if sharedSlot != nil {
		return sharedSlot
	}
	// Before anything publishes a meta (adoptSourceRanges may): the
	// slots no key names are retired, freed after a grace period.
	if err := d.arena.slots.adopt(slots); err != nil {
		return err
	}
	d.arena.kickReclaim()
	if err := d.adoptSourceRanges(ranged); err != nil {
		return err
	}
	// Before the arena's grace period below, as the VIPs' rings: the
	// pools' rings are claimed in it.
	if err := d.adoptPools(pooled); err != nil {
		return err
	}
	// The extents the VIPs' metas name are taken; the rest of the arena
	// is free once a grace period has passed: the last daemon may have
	// retired extents just before it stopped.
	for _, e := range d.vips {
		if err := d.arena.claim(e.ring); err != nil {
			return fmt.Errorf("adopt ring of vip %s: %w", e.vip, err)
		}
		if e.rr.size > 0 {
			if err := d.arena.claim(e.rr); err != nil {
				return fmt.Errorf("adopt round-robin sequence of vip %s: %w", e.vip, err)
			}
		}
	}
	if err := d.arena.gracePeriod(); err != nil {
		return err
	}

	// VIP indexes: the live ones are used, the rest of those ever handed
	// out are free.
	var state balancerVipMeta
	for idx := uint32(0); idx < d.vipIndex.limit; idx++ {
		if err := d.objs.VipState.Lookup(idx, &state); err != nil {
			return fmt.Errorf("read vip_state[%d]: %w", idx, err)
		}
		if state.Gen != 0 {
			d.vipGen[uint16(idx)] = state.Gen
		}
	}
	d.vipIndex = adoptAllocator(d.vipIndex.limit, func(i uint32) bool { _, ok := metas[uint16(i)]; return ok },
		func(i uint32) bool { return d.vipGen[uint16(i)] != 0 })

	// Backends, read in batches.
	var orphans []uint32
	used := make(map[uint32]bool)
	err = eachBackend(d.objs.Backends, func(id uint32, b balancerBackend) {
		if b.Gen != 0 {
			d.backendGen[id] = b.Gen
		}
		if b.Flags&uint8(balancerFulcrumBackendFlagsBACKEND_F_LIVE) == 0 {
			return
		}
		vip, ok := metas[b.VipIndex]
		if !ok {
			orphans = append(orphans, id)
			return
		}
		e := d.vips[vip]
		addr := backendAddr(b)
		// Only dsr uses a MAC; the zeros the map holds for the other
		// modes read back as none, as they were written.
		var mac net.HardwareAddr
		if e.cfg.Mode == ModeDSR {
			mac = net.HardwareAddr(append([]byte(nil), b.Mac[:]...))
		}
		be := &backendEntry{Backend: Backend{Addr: addr, MAC: mac, Weight: uint32(b.Weight)}, id: id, gen: b.Gen}
		e.backends[addr] = be
		e.byID[id] = be
		used[id] = true
	})
	if err != nil {
		return err
	}
	d.backendID = adoptAllocator(d.backendID.limit, func(i uint32) bool { return used[i] },
		func(i uint32) bool { return d.backendGen[i] != 0 })
	for _, id := range orphans {
		// A backend of a VIP that is gone (a crash between writes): retire.
		if err := d.objs.Backends.Put(id, balancerBackend{Gen: d.backendGen[id]}); err != nil {
			return fmt.Errorf("retire orphaned backend %d: %w", id, err)
		}
	}
	if err := d.sumRings(); err != nil {
		return err
	}

	// What the global maps hold.
	var cfg balancerLbConfig
	if err := d.objs.Config.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	d.written.config = &cfg
	d.encap = encapFrom(cfg)
	d.newFlowLimit = cfg.NewFlowLimit
	d.syncOn = cfg.Flags&syncFlag != 0
	var a4 uint32
	var a6 [16]byte
	var p uint32
	it := d.objs.VipAddrsV4.Iterate()
	for it.Next(&a4, &p) {
		d.written.policy[netip.AddrFrom4(le4(a4))] = p
	}
	it2 := d.objs.VipAddrsV6.Iterate()
	for it2.Next(&a6, &p) {
		d.written.policy[netip.AddrFrom16(a6)] = p
	}
	if err := errors.Join(it.Err(), it2.Err()); err != nil {
		return fmt.Errorf("read vip addresses: %w", err)
	}
	d.adoptHostFilter()
	d.adopted = true
	return nil
}

// adoptAllocator rebuilds an allocator: indexes in use stay taken, those
// handed out before but free now go to the free list.
func adoptAllocator(limit uint32, inUse, everUsed func(uint32) bool) indexAllocator {
	a := indexAllocator{limit: limit}
	for i := uint32(0); i < limit; i++ {
		if inUse(i) || everUsed(i) {
			a.next = i + 1
		}
	}
	for i := uint32(0); i < a.next; i++ {
		if !inUse(i) {
			a.free = append(a.free, i)
		}
	}
	return a
}

func le4(v uint32) [4]byte {
	return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

func le16(w [4]uint32) [16]byte {
	var out [16]byte
	for i, v := range w {
		b := le4(v)
		copy(out[i*4:], b[:])
	}
	return out
}

// eachVIP calls fn with every VIP of the VIP maps v4 and v6, its meta and
// the slot of metas (vip_metas) that holds it. metas is nil for the pins
// of a layout before 5, whose VIP maps hold the metas themselves (slot 0).
func eachVIP(v4, v6, metas *ebpf.Map, fn func(VIP, balancerVipMeta, uint32)) error {
	var k4 balancerVipKeyV4
	var k6 balancerVipKeyV6
	var slot uint32
	var m balancerVipMeta
	var v2 vipMetaV2
	var v3 vipMetaV3
	// Layouts 1 and 2 had no timeouts in vip_meta, layouts up to 3 no
	// ring offset, and layouts up to 4 held the meta in the VIP maps: a
	// migration reads their VIPs by the old format (what is missing reads
	// as zero: the new configuration writes its own, and its own rings).
	val := any(&slot)
	switch v4.ValueSize() {
	case uint32(binary.Size(v2)):
		val = &v2
	case uint32(binary.Size(v3)):
		val = &v3
	case uint32(binary.Size(m)):
		val = &m
	}
	var err error // the first meta that could not be read
	call := func(vip VIP) {
		var meta balancerVipMeta
		switch val {
		case &v2:
			meta = balancerVipMeta{Index: v2.Index, Gen: v2.Gen, Flags: v2.Flags, Mode: v2.Mode, RingSize: v2.RingSize}
		case &v3:
			meta = balancerVipMeta{Index: v3.Index, Gen: v3.Gen, Flags: v3.Flags, Mode: v3.Mode, RingSize: v3.RingSize, CtTimeout: v3.CtTimeout}
		case &m:
			meta = m
		default:
			var merr error
			if meta, merr = vipMetaOf(metas, slot); merr != nil {
				if err == nil {
					err = fmt.Errorf("vip %s: %w", vip, merr)
				}
				return
			}
		}
		fn(vip, meta, slot)
	}
	it := v4.Iterate()
	for it.Next(&k4, val) {
		call(VIP{Addr: netip.AddrFrom4(le4(k4.Addr)), Port: be16(k4.Port), Proto: Proto(k4.Proto)})
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read vips_v4: %w", err)
	}
	it = v6.Iterate()
	for it.Next(&k6, val) {
		call(VIP{Addr: netip.AddrFrom16(le16(k6.Addr)), Port: be16(k6.Port), Proto: Proto(k6.Proto)})
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read vips_v6: %w", err)
	}
	return err
}

// vipMetaV2 is vip_meta of layouts 1 and 2, before ct_timeout.
type vipMetaV2 struct {
	Index, Gen, Flags uint16
	Mode, Pad         uint8
	RingSize          uint32
}

// vipMetaV3 is vip_meta of layout 3, before ring_offset: the ring was
// rings[index].
type vipMetaV3 struct {
	vipMetaV2
	CtTimeout [4]uint32
}

// eachBackend calls fn with every entry of the backends map, read in
// batches.
func eachBackend(m *ebpf.Map, fn func(id uint32, b balancerBackend)) error {
	const chunk = 4096
	keys := make([]uint32, chunk)
	vals := make([]balancerBackend, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			fn(keys[i], vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read backends: %w", err)
		}
	}
}

// backendAddr is a backend entry's address.
func backendAddr(b balancerBackend) netip.Addr {
	if b.Family == 2 { // AF_INET
		return netip.AddrFrom4(le4(b.Addr[0]))
	}
	return netip.AddrFrom16(le16(b.Addr))
}

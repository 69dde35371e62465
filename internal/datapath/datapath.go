// Package datapath is the one Go owner of Fulcrum's XDP objects: it loads
// the balancer, attaches it to an interface, and offers typed, validated
// methods that write VIPs, backends and Maglev rings into its maps and read
// its counters. Nothing else writes the maps.
//
// Requires Linux 5.18 or later (BPF links for XDP, bpf_jiffies64, mmapable
// arrays); developed on 6.18.
package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/linkset"
)

// DefaultConntrackEntries is the default size of each connection table
// (IPv4 and IPv6): CT_ENTRIES in bpf/consts.h, which a test holds equal.
// The VIP and backend capacities are read from the loaded specs instead
// (see Capacity).
const DefaultConntrackEntries = 1 << 20

// Options tune Load.
type Options struct {
	// ConntrackEntries is the capacity of each connection table; 0 means
	// DefaultConntrackEntries. It is rounded up to whole buckets of
	// ctWays entries.
	ConntrackEntries uint32
	// MaxVIPs and MaxBackends shrink the VIP and backend maps below their
	// compiled-in capacity (MAX_VIPS and MAX_BACKENDS in bpf/consts.h, as
	// the specs carry them) to save memory; 0 means the full capacity.
	MaxVIPs, MaxBackends uint32
	// RingSlots is the capacity of the ring arena, which holds every
	// VIP's Maglev ring (4 bytes a slot, allocated at load): the sum of
	// the VIPs' ring sizes, plus room for the new rings of a change
	// before its old ones are freed. 0 means DefaultRingSlots; it is
	// rounded up to a multiple of 16. A change that finds no room fails
	// with an error that names this option.
	RingSlots uint32
	// PinDir, if set, pins the maps and the XDP link there (see PinDir)
	// and adopts what an earlier daemon pinned: the connection table, the
	// counters, the VIPs and backends, and the attached program. Pins of
	// an older layout (LayoutVersion), or that do not fit these options,
	// are migrated instead (see Migrating); pins of a newer layout are
	// refused. The directory must be on a bpffs (see EnsureBPFFS).
	PinDir string
}

// Datapath owns the loaded balancer program and its maps.
type Datapath struct {
	mu   sync.Mutex
	objs balancerObjects
	// links are the XDP attachments by ifindex.
	links linkset.Set

	pinDir  string
	adopted bool
	// trieBatch is batchRefused once the kernel refused a batch update
	// of src_prefixes (pools.go putPrefixes).
	trieBatch int
	// migration is set from Load to CompleteMigration (migrate.go).
	migration *migration
	notes     []string // what Load did about an interrupted migration

	vips map[VIP]*vipEntry
	// ownerChanges counts the changes of d.vips: a VIP added, replaced
	// (commit) or removed. Every change of which VIP owns a VIP index or
	// which backend a backend id, and every free of one, happens in one
	// of them, so an unchanged count means the owners did not change
	// (Counters relies on it). adopt fills d.vips before anyone reads it.
	// Both fields are guarded by mu.
	ownerChanges uint64
	// owners is the last copy of the counters' owners (Counters); it is
	// current while its changes equals ownerChanges.
	owners *counterOwners
	// lastRing caches the ring Predict last rebuilt (see ringTable).
	lastRing struct {
		e     *vipEntry
		table []uint32
	}
	vipIndex  indexAllocator
	backendID indexAllocator
	// backendGen[id] is the generation last written for a backend id.
	backendGen   map[uint32]uint16
	vipGen       map[uint16]uint16
	encap        EncapConfig
	newFlowLimit uint32
	// syncOn is SetSync's; connRes the resolver of sync's entries
	// (ctsync.go), current while its changes equals ownerChanges.
	syncOn  bool
	connRes *connResolver
	// written mirrors global map contents, so only changes are written.
	written struct {
		config *balancerLbConfig
		policy map[netip.Addr]uint32
	}
	// arena allocates the extents of the ring arena (arena.go).
	arena *ringArena
	// hosts is the destination prefilter's bitmap (hostfilter.go).
	hosts *hostFilter
	// counts maps the fast path's per-backend connection counts
	// (counts.go).
	counts *connCounts
	// poolWords maps pool_rings, which Go writes word by word (pools.go).
	poolWords *poolWords
	// ct maps the connection tables writable for Go's own writes
	// (ctmem.go).
	ct ctMaps
	// refused holds, by ifindex, why the driver refused native XDP where
	// AttachAuto fell back to generic (attach.go).
	refused map[int]error
}

// Load loads the balancer into the kernel without attaching it.
func Load(opts Options) (*Datapath, error) {
	spec, err := loadBalancer()
	if err != nil {
		return nil, fmt.Errorf("load balancer spec: %w", err)
	}
	ct := opts.ConntrackEntries
	if ct == 0 {
		ct = DefaultConntrackEntries
	}
	if err := sizeConntrack(spec, ct); err != nil {
		return nil, err
	}
	maxVIPs := shrink(spec.Maps[balancerMapVipsV4].MaxEntries, opts.MaxVIPs)
	maxBackends := shrink(spec.Maps[balancerMapBackends].MaxEntries, opts.MaxBackends)
	for _, name := range []string{balancerMapVipsV4, balancerMapVipsV6, balancerMapVipState,
		balancerMapVipStats, balancerMapVipAddrsV4, balancerMapVipAddrsV6, balancerMapRrCursors, balancerMapLcPools} {
		spec.Maps[name].MaxEntries = maxVIPs
	}
	// Every VIP's meta slot, and as many retired (bpf/maps.h vip_metas).
	spec.Maps[balancerMapVipMetas].MaxEntries = 2 * maxVIPs
	// A pool's id is its VIP's index * PoolsPerVIP + its slot (pools.go).
	spec.Maps[balancerMapPoolRings].MaxEntries = maxVIPs * PoolsPerVIP
	for _, name := range []string{balancerMapBackends, balancerMapBackendStats, balancerMapHopCache,
		balancerMapRtSamples, balancerMapBackendCost, balancerMapBackendConns} {
		spec.Maps[name].MaxEntries = maxBackends
	}
	spec.Maps[balancerMapRingArena].MaxEntries = ArenaCapacity(opts.RingSlots) / ringChunkSlots

	d := &Datapath{
		vips:       make(map[VIP]*vipEntry),
		links:      make(linkset.Set),
		vipIndex:   newIndexAllocator(maxVIPs),
		backendID:  newIndexAllocator(maxBackends),
		backendGen: make(map[uint32]uint16),
		vipGen:     make(map[uint16]uint16),
		refused:    make(map[int]error),
	}
	d.written.policy = make(map[netip.Addr]uint32)
	var collOpts ebpf.CollectionOptions
	var mode pinMode
	if opts.PinDir != "" {
		for name, m := range spec.Maps {
			if !strings.HasPrefix(name, ".") { // not .rodata and friends
				m.Pinning = ebpf.PinByName
			}
		}
		// Pins of another layout, or that do not fit these options, are
		// migrated: the new maps are loaded beside them (migrate.go).
		var err error
		mode, collOpts.Maps.PinPath, err = d.planPins(spec, opts.PinDir)
		if err != nil {
			return nil, err
		}
		d.pinDir = opts.PinDir
	}
	if err := spec.LoadAndAssign(&d.objs, &collOpts); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load balancer: %+v", verr)
		}
		return nil, fmt.Errorf("load balancer: %w", err)
	}
	if d.arena, err = newRingArena(d.objs.RingArena, d.objs.VipMetas.MaxEntries()); err != nil {
		d.objs.Close()
		return nil, err
	}
	if d.hosts, err = newHostFilter(d.objs.HostFilter); err != nil {
		d.arena.close()
		d.objs.Close()
		return nil, err
	}
	if d.counts, err = openCounts(d.objs.BackendConns); err != nil {
		d.hosts.close()
		d.arena.close()
		d.objs.Close()
		return nil, err
	}
	if d.poolWords, err = openPoolWords(d.objs.PoolRings); err != nil {
		d.counts.close()
		d.hosts.close()
		d.arena.close()
		d.objs.Close()
		return nil, err
	}
	if opts.PinDir != "" {
		if err := d.settlePins(mode, opts.PinDir); err != nil {
			d.hosts.close()
			d.counts.close()
			d.poolWords.close()
			d.arena.close()
			d.objs.Close()
			return nil, err
		}
	}
	return d, nil
}

// shrink returns the capacity a map gets: compiled, or less if asked.
func shrink(compiled, asked uint32) uint32 {
	if asked == 0 || asked > compiled {
		return compiled
	}
	return asked
}

// Adopted reports whether Load took over maps pinned by an earlier daemon.
func (d *Datapath) Adopted() bool {
	return d.adopted
}

// Program returns the balancer program, for tests and benchmarks that run
// it with BPF_PROG_RUN.
func (d *Datapath) Program() *ebpf.Program {
	return d.objs.FulcrumBalancer
}

// ProgramID returns the balancer program's kernel ID, which the links that
// run it name.
func (d *Datapath) ProgramID() (ebpf.ProgramID, error) {
	return programID(d.objs.FulcrumBalancer)
}

// Attach attaches the balancer to the interface with the given index, in
// the network namespace of the calling thread, in the given mode (see
// AttachMode). With pins, a live pinned link for the interface is taken
// over instead, in the mode it has.
func (d *Datapath) Attach(ifindex int, mode AttachMode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.links[ifindex]; ok {
		return fmt.Errorf("attach xdp to ifindex %d: already attached", ifindex)
	}
	if d.migration != nil {
		// The old program forwards until the swap (CompleteMigration).
		d.migration.attach = append(d.migration.attach, pendingAttach{ifindex: ifindex, mode: mode})
		return nil
	}
	if d.pinDir != "" {
		l, ok, err := d.attachPinned(ifindex)
		if err != nil {
			return err
		}
		if ok {
			d.links[ifindex] = l
			return nil
		}
	}
	return d.attachNew(ifindex, mode, d.pinDir)
}

// attachNew attaches the program to an interface no pinned link serves,
// and pins the link in dir unless dir is empty.
func (d *Datapath) attachNew(ifindex int, mode AttachMode, dir string) error {
	l, err := d.attachXDP(ifindex, mode)
	if err != nil {
		return err
	}
	if dir != "" {
		if err := l.Pin(linkPin(dir, ifindex)); err != nil {
			l.Close()
			return fmt.Errorf("pin xdp link of ifindex %d: %w", ifindex, err)
		}
	}
	d.links[ifindex] = l
	return nil
}

// Attached returns the indexes of the interfaces the balancer is attached
// to through this datapath.
func (d *Datapath) Attached() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.links.Indexes()
}

// Detach removes the balancer from every interface, pinned or not.
func (d *Datapath) Detach() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for ifindex, l := range d.links {
		if d.pinDir != "" {
			if err := l.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("detach xdp from ifindex %d: %w", ifindex, err))
				continue
			}
		}
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach xdp from ifindex %d: %w", ifindex, err))
		}
		delete(d.links, ifindex)
	}
	return errors.Join(errs...)
}

// Close releases the datapath's objects. Without pins it detaches the
// program and the kernel frees everything. With pins, the program stays
// attached and the maps stay, so traffic keeps flowing while no daemon
// runs; Detach (or RemovePins) ends that.
func (d *Datapath) Close() error {
	var errs []error
	d.mu.Lock()
	for ifindex, l := range d.links {
		errs = append(errs, l.Close())
		delete(d.links, ifindex)
	}
	d.mu.Unlock()
	d.arena.close()
	d.hosts.close()
	d.counts.close()
	d.poolWords.close()
	d.ct.close()
	errs = append(errs, d.objs.Close())
	return errors.Join(errs...)
}

// indexAllocator hands out indexes below a limit. Freed indexes go to the
// back of a FIFO, so an index is reused as late as possible: connection
// entries that still name it are then old enough to have been evicted, and
// the generation check catches the rest.
type indexAllocator struct {
	limit uint32
	next  uint32
	free  []uint32
}

func newIndexAllocator(limit uint32) indexAllocator {
	return indexAllocator{limit: limit}
}

func (a *indexAllocator) available() int {
	return int(a.limit-a.next) + len(a.free)
}

func (a *indexAllocator) get() (uint32, bool) {
	if a.next < a.limit {
		a.next++
		return a.next - 1, true
	}
	if len(a.free) == 0 {
		return 0, false
	}
	id := a.free[0]
	a.free = a.free[1:]
	return id, true
}

func (a *indexAllocator) put(id uint32) {
	a.free = append(a.free, id)
}

// addrFamily names an address's family for error messages.
func addrFamily(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

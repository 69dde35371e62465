package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
)

// ConnState is a connection entry's TCP state as the client's segments show
// it (the balancer sees only client -> server). UDP entries are always
// ConnEstablished.
type ConnState uint8

// The states, with the values of enum fulcrum_ct_state (bpf/consts.h).
const (
	ConnEstablished = ConnState(balancerFulcrumCtStateCT_ESTABLISHED)
	ConnSYN         = ConnState(balancerFulcrumCtStateCT_SYN)
	ConnFIN         = ConnState(balancerFulcrumCtStateCT_FIN)
	ConnClosed      = ConnState(balancerFulcrumCtStateCT_CLOSED)
)

func (s ConnState) String() string {
	switch s {
	case ConnEstablished:
		return "established"
	case ConnSYN:
		return "syn"
	case ConnFIN:
		return "fin"
	case ConnClosed:
		return "closed"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ConnTimeouts are the idle timeouts of a VIP's connection entries: a TCP
// VIP's by state, a UDP VIP's one. A zero field takes the default
// (DefaultConnTimeouts); the datapath keeps a VIP's in its normal form (see
// Normal).
type ConnTimeouts struct {
	SYN, Established, FIN, Closed time.Duration // TCP
	UDP                           time.Duration
}

// DefaultConnTimeouts are the compiled-in defaults, IPVS's: enum
// fulcrum_ct_timeout (bpf/consts.h).
var DefaultConnTimeouts = ConnTimeouts{
	SYN:         time.Duration(balancerFulcrumCtTimeoutCT_TIMEOUT_TCP_SYN) * time.Second,
	Established: time.Duration(balancerFulcrumCtTimeoutCT_TIMEOUT_TCP_ESTABLISHED) * time.Second,
	FIN:         time.Duration(balancerFulcrumCtTimeoutCT_TIMEOUT_TCP_FIN) * time.Second,
	Closed:      time.Duration(balancerFulcrumCtTimeoutCT_TIMEOUT_TCP_CLOSED) * time.Second,
	UDP:         time.Duration(balancerFulcrumCtTimeoutCT_TIMEOUT_UDP) * time.Second,
}

// MaxConnTimeout bounds a timeout: ages are kept in 32-bit jiffies, which
// wrap after 49 days at HZ=1000.
const MaxConnTimeout = 7 * 24 * time.Hour

// Normal returns t for a VIP of proto: defaults for zero fields, and zero
// for the other protocol's, so two configurations that behave the same
// compare equal (and a restarted daemon, reading them back from the maps,
// finds what it would write).
func (t ConnTimeouts) Normal(proto Proto) ConnTimeouts {
	or := func(v, def time.Duration) time.Duration {
		if v == 0 {
			return def
		}
		return v
	}
	if proto == UDP {
		return ConnTimeouts{UDP: or(t.UDP, DefaultConnTimeouts.UDP)}
	}
	return ConnTimeouts{SYN: or(t.SYN, DefaultConnTimeouts.SYN), Established: or(t.Established, DefaultConnTimeouts.Established),
		FIN: or(t.FIN, DefaultConnTimeouts.FIN), Closed: or(t.Closed, DefaultConnTimeouts.Closed)}
}

// Check reports the first timeout out of range (1s..MaxConnTimeout, whole
// seconds), by its field name.
func (t ConnTimeouts) Check() error {
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"syn", t.SYN}, {"established", t.Established}, {"fin", t.FIN}, {"closed", t.Closed}, {"udp", t.UDP}} {
		if f.v == 0 {
			continue
		}
		if f.v < time.Second || f.v > MaxConnTimeout || f.v%time.Second != 0 {
			return fmt.Errorf("timeout %s: %v is not a whole number of seconds from 1s to %v", f.name, f.v, MaxConnTimeout)
		}
	}
	return nil
}

// of returns the timeout of an entry in state s of a VIP of proto (t in
// normal form).
func (t ConnTimeouts) of(proto Proto, s ConnState) time.Duration {
	return t.byState(proto)[s&3]
}

// byState lays t out as vip_meta.ct_timeout: by enum fulcrum_ct_state.
func (t ConnTimeouts) byState(proto Proto) (out [4]time.Duration) {
	if proto == UDP {
		return [4]time.Duration{t.UDP, t.UDP, t.UDP, t.UDP}
	}
	out[ConnSYN], out[ConnEstablished], out[ConnFIN], out[ConnClosed] = t.SYN, t.Established, t.FIN, t.Closed
	return out
}

// jiffies converts t (normal form) for vip_meta.ct_timeout.
func (t ConnTimeouts) jiffies(proto Proto, hz uint32) (out [4]uint32) {
	for i, d := range t.byState(proto) {
		out[i] = uint32(d / time.Second * time.Duration(hz))
	}
	return out
}

// connTimeoutsOf reads vip_meta.ct_timeout back.
func connTimeoutsOf(proto Proto, j [4]uint32, hz uint32) ConnTimeouts {
	d := func(s ConnState) time.Duration { return time.Duration(j[s]/hz) * time.Second }
	if proto == UDP {
		return ConnTimeouts{UDP: d(ConnEstablished)}
	}
	return ConnTimeouts{SYN: d(ConnSYN), Established: d(ConnEstablished), FIN: d(ConnFIN), Closed: d(ConnClosed)}
}

// kernelClock is the clock connection entries are stamped with: jiffies,
// truncated to 32 bits as last_seen holds them, and the tick rate.
type kernelClock struct {
	jiffies uint32
	hz      uint32
}

// tickRate is the kernel's HZ, once read: it is fixed at build time.
var tickRate atomic.Uint32

// hz returns the kernel's tick rate, which converts timeouts to jiffies.
func (d *Datapath) hz() (uint32, error) {
	if hz := tickRate.Load(); hz != 0 {
		return hz, nil
	}
	c, err := d.clock()
	return c.hz, err
}

// clock reads the kernel's clock through the balancer's fulcrum_clock
// program, so Go ages entries exactly as the fast path does.
func (d *Datapath) clock() (kernelClock, error) {
	var c balancerCtClock
	if _, err := d.objs.FulcrumClock.Run(&ebpf.RunOptions{Context: c, ContextOut: &c}); err != nil {
		return kernelClock{}, fmt.Errorf("read the kernel clock: %w", err)
	}
	if c.Hz == 0 {
		return kernelClock{}, fmt.Errorf("read the kernel clock: the program reports HZ 0")
	}
	tickRate.Store(c.Hz)
	return kernelClock{jiffies: uint32(c.Jiffies), hz: c.Hz}, nil
}

// idle returns how long an entry stamped at lastSeen has been idle.
func (c kernelClock) idle(lastSeen uint32) time.Duration {
	return time.Duration(c.age(lastSeen)) * time.Second / time.Duration(c.hz)
}

// age is how many jiffies ago lastSeen was, 0 for a time after the clock
// was read (a packet touched the entry since): ages are differences modulo
// 2^32, and one a little ahead is not one 49 days old.
func (c kernelClock) age(lastSeen uint32) uint32 {
	return uint32(max(int32(c.jiffies-lastSeen), 0))
}

// expired reports whether the fast path treats entry v as a miss: idle for
// more jiffies than its VIP's timeout for its state (bpf/conntrack.h
// ct_expired, the same comparison in the same unit).
func (c kernelClock) expired(v *balancerCtValue, timeout time.Duration) bool {
	return c.age(v.LastSeen) > uint32(timeout/time.Second)*c.hz
}

// The connection table is an array of buckets per family (bpf/types.h
// ct_bucket): the flow's 5-tuple hash picks a bucket, and a 60-bit tag,
// split between a way's two words, finds the flow's way among ctWays. The
// constants below are those of bpf/conntrack.h; TestConntrackGoFindsInserts
// holds Go's placement to the program's.
const (
	ctWays          = 4          // CT_WAYS; held to the bucket type below
	ctTagSeed       = 0x5bd1e995 // CT_TAG_SEED
	ctTagLoMask     = 1<<30 - 1
	ctBackendShift  = 30
	ctBackendMask   = 1<<18 - 1
	ctGenShift      = 48
	ctStateShift    = 32
	ctTagHiShift    = 34
	ctTagHiMask     = uint64(1<<30-1) << ctTagHiShift
	ctLastSeenMask  = 1<<32 - 1
	ctFlowHashTagMk = 0x0fffffff // the 5-tuple hash's bits in the tag
)

// This does not compile unless a bucket has ctWays ways.
var _ [ctWays]uint64 = balancerCtBucket{}.Ident

// sizeConntrack sizes the connection tables of spec for entries per family
// (rounded up to whole buckets) and tells the program the bucket count.
func sizeConntrack(spec *ebpf.CollectionSpec, entries uint32) error {
	buckets := (entries + ctWays - 1) / ctWays
	spec.Maps[balancerMapCtV4].MaxEntries = buckets
	spec.Maps[balancerMapCtV6].MaxEntries = buckets
	spec.Maps[balancerMapCtKeysV4].MaxEntries = buckets * ctWays
	spec.Maps[balancerMapCtKeysV6].MaxEntries = buckets * ctWays
	if err := spec.Variables[balancerVarCtBuckets].Set(buckets); err != nil {
		return fmt.Errorf("size the connection table: %w", err)
	}
	return nil
}

// ctPlace is where a flow's entry lives: its bucket and its tag halves as
// the way's words hold them (bpf/conntrack.h ct_find).
type ctPlace struct {
	bucket uint32
	lo, hi uint64
}

// ctTagHash is bpf/conntrack.h ct_tag_hash: a hash of every word of the
// tuple.
func ctTagHash(f Flow) uint32 {
	seed := uint32(ctTagSeed) + uint32(f.Proto)
	ports := flowhash.Ports(f.Sport, f.Dport)
	if f.Dst.Is4() {
		return flowhash.Hash3(be32(f.Src), be32(f.Dst), ports, seed)
	}
	s, d := be128(f.Src), be128(f.Dst)
	seed = flowhash.Hash3(s[0], s[1], s[2], seed)
	seed = flowhash.Hash3(s[3], d[0], d[1], seed)
	return flowhash.Hash3(d[2], d[3], ports, seed)
}

// placeOf returns the flow's place in a table of buckets buckets.
func placeOf(f Flow, buckets uint32) ctPlace {
	h5 := flowhash.Flow(f.Src, f.Dst, f.Sport, f.Dport, uint8(f.Proto))
	h2 := ctTagHash(f)
	return ctPlace{
		bucket: flowhash.Slot(h5, buckets),
		lo:     uint64(h2) & ctTagLoMask,
		hi:     uint64(h2>>30|(h5&ctFlowHashTagMk)<<2) << ctTagHiShift,
	}
}

// holds reports whether way w of b is the flow's.
func (p ctPlace) holds(b *balancerCtBucket, w int) bool {
	return b.Ident[w] != 0 && b.Ident[w]&ctTagLoMask == p.lo && b.Meta[w]&ctTagHiMask == p.hi
}

// encode returns the words of way holding v for the flow.
func (p ctPlace) encode(v balancerCtValue) (ident, meta uint64) {
	ident = p.lo | uint64(v.Backend&ctBackendMask)<<ctBackendShift | uint64(v.BackendGen)<<ctGenShift
	meta = uint64(v.LastSeen) | uint64(v.State&3)<<ctStateShift | p.hi
	return ident, meta
}

// decodeWay returns the entry of way w of b (bpf/conntrack.h ct_decode).
func decodeWay(b *balancerCtBucket, w int) balancerCtValue {
	return balancerCtValue{
		Backend:    uint32(b.Ident[w]>>ctBackendShift) & ctBackendMask,
		BackendGen: uint16(b.Ident[w] >> ctGenShift),
		State:      uint8(b.Meta[w]>>ctStateShift) & 3,
		LastSeen:   uint32(b.Meta[w] & ctLastSeenMask),
	}
}

// ctTables returns the family's bucket table and tuple record of maps.
func ctTables(v4 bool, o *balancerObjects) (buckets, keys *ebpf.Map) {
	if v4 {
		return o.CtV4, o.CtKeysV4
	}
	return o.CtV6, o.CtKeysV6
}

// lookupConntrack returns the flow's connection entry, or nil: the way of
// its bucket with its tag, as the fast path finds it.
func (d *Datapath) lookupConntrack(f Flow) (*balancerCtValue, error) {
	m, _ := ctTables(f.Dst.Is4(), &d.objs)
	p := placeOf(f, m.MaxEntries())
	var b balancerCtBucket
	if err := m.Lookup(p.bucket, &b); err != nil {
		return nil, fmt.Errorf("read connection table: %w", err)
	}
	for w := range ctWays {
		if p.holds(&b, w) {
			v := decodeWay(&b, w)
			return &v, nil
		}
	}
	return nil, nil
}

// wayFor returns the way of b the flow's entry goes to, as the program
// chooses it in an idle table: the flow's own way, else an empty one, else
// the least recently seen (full is then true: an eviction).
func wayFor(b *balancerCtBucket, p ctPlace) (way int, full bool) {
	way, oldest := -1, 0
	for w := range ctWays {
		if p.holds(b, w) {
			return w, false
		}
		if way < 0 && b.Ident[w] == 0 {
			way = w
		}
		if int32(uint32(b.Meta[w])-uint32(b.Meta[oldest])) < 0 {
			oldest = w
		}
	}
	if way < 0 {
		return oldest, true
	}
	return way, false
}

// putConntrack writes the flow's entry where wayFor says, one way as the
// program writes it (ctmem.go), through a mapping made for the call: for
// migration and tests. It reports whether it evicted another entry.
func putConntrack(buckets, keys *ebpf.Map, f Flow, v balancerCtValue) (evicted bool, err error) {
	t, err := mapCT(buckets, keys, f.Dst.Is4())
	if err != nil {
		return false, err
	}
	defer t.close()
	p := placeOf(f, buckets.MaxEntries())
	for range ctRetries {
		b := t.load(p.bucket)
		way, full := wayFor(&b, p)
		if t.put(f, p, way, &b, v) {
			return full, nil
		}
	}
	return false, errBucketBusy(p.bucket)
}

// errBucketBusy is a write that found its way changed by another writer
// ctRetries times in a row.
func errBucketBusy(bucket uint32) error {
	return fmt.Errorf("write connection table bucket %d: its ways changed under %d tries in a row", bucket, ctRetries)
}

func keyV4(f Flow) balancerCtKeyV4 {
	return balancerCtKeyV4{Src: be32(f.Src), Dst: be32(f.Dst), Sport: be16(f.Sport), Dport: be16(f.Dport), Proto: uint8(f.Proto)}
}

func keyV6(f Flow) balancerCtKeyV6 {
	return balancerCtKeyV6{Src: be128(f.Src), Dst: be128(f.Dst), Sport: be16(f.Sport), Dport: be16(f.Dport), Proto: uint8(f.Proto)}
}

// TableEntry is one entry of the connection table as it is stored: the
// flow, and where it goes. Whether the fast path still uses it (backend
// live with gen, VIP tracking connections, not idle past its timeout) is
// for the reader to judge: Predict's rules, kernelClock.expired.
type TableEntry struct {
	Flow       Flow
	Backend    uint32
	BackendGen uint16
	State      ConnState
	LastSeen   uint32 // jiffies, truncated to 32 bits (kernelClock)
}

// TableEntries walks the entries of both connection tables (IPv4, then
// IPv6): every occupied way whose recorded tuple hashes to it. A way the
// program rewrites during the walk may be skipped (its tuple record and its
// words disagree for a moment); nothing the walk yields names a flow its
// way does not hold.
func (d *Datapath) TableEntries() iter.Seq2[TableEntry, error] {
	return func(yield func(TableEntry, error) bool) {
		for _, v4 := range []bool{true, false} {
			buckets, keys := ctTables(v4, &d.objs)
			if !walkTable(buckets, keys, v4, yield) {
				return
			}
		}
	}
}

// walkTable yields the entries of one table, read a chunk of buckets at a
// time with their tuple records; it returns false once yield has asked to
// stop or an error was yielded.
func walkTable(buckets, keys *ebpf.Map, v4 bool, yield func(TableEntry, error) bool) bool {
	const chunk = 4096
	n := buckets.MaxEntries()
	bs := make([]balancerCtBucket, chunk)
	k4 := make([]balancerCtKeyV4, chunk*ctWays)
	k6 := make([]balancerCtKeyV6, chunk*ctWays)
	br := newArrayReader[balancerCtBucket](buckets, chunk)
	kr4 := newArrayReader[balancerCtKeyV4](keys, chunk*ctWays)
	kr6 := newArrayReader[balancerCtKeyV6](keys, chunk*ctWays)
	for start := uint32(0); start < n; start += chunk {
		c := min(chunk, n-start)
		if err := br.read(start, bs[:c]); err != nil {
			return yield(TableEntry{}, err) && false
		}
		var err error
		if v4 {
			err = kr4.read(start*ctWays, k4[:c*ctWays])
		} else {
			err = kr6.read(start*ctWays, k6[:c*ctWays])
		}
		if err != nil {
			return yield(TableEntry{}, err) && false
		}
		for i := range c {
			b := &bs[i]
			for w := range ctWays {
				if b.Ident[w] == 0 {
					continue
				}
				var f Flow
				if v4 {
					f = flowOfV4(k4[i*ctWays+uint32(w)])
				} else {
					f = flowOfV6(k6[i*ctWays+uint32(w)])
				}
				if p := placeOf(f, n); p.bucket != start+i || !p.holds(b, w) {
					continue
				}
				v := decodeWay(b, w)
				if !yield(TableEntry{Flow: f, Backend: v.Backend, BackendGen: v.BackendGen, State: ConnState(v.State), LastSeen: v.LastSeen}, nil) {
					return false
				}
			}
		}
	}
	return true
}

// arrayReader reads an array map's values in order, a chunk at a time:
// through a read-only mapping of the map's pages when the map is
// BPF_F_MMAPABLE (a memory copy; the walk of a 1 M-entry table then costs
// its bytes, not a system call per element), else by batch lookups (the
// tables of builds before they were mmapable, which a migration reads).
type arrayReader[V any] struct {
	m      *ebpf.Map
	mapped bool
	cursor ebpf.MapBatchCursor
	idx    []uint32
}

func newArrayReader[V any](m *ebpf.Map, chunk int) *arrayReader[V] {
	r := &arrayReader[V]{m: m, mapped: m.Flags()&unix.BPF_F_MMAPABLE != 0}
	if !r.mapped {
		r.idx = make([]uint32, chunk)
	}
	return r
}

// read fills vals with the values from index start on. Reads must come
// in order, each starting where the last ended (the batch cursor's).
func (r *arrayReader[V]) read(start uint32, vals []V) error {
	if len(vals) == 0 {
		return nil
	}
	if !r.mapped {
		return readBatch(r.m, &r.cursor, r.idx[:len(vals)], vals)
	}
	size := uint64(unsafe.Sizeof(vals[0]))
	if size != uint64(r.m.ValueSize()) || size%8 != 0 {
		// An mmapable array's elements are its values rounded up to 8
		// bytes: the Go type must be exactly one element.
		return fmt.Errorf("read %s: %d-byte values, want %d (a multiple of 8)", r.m, r.m.ValueSize(), size)
	}
	page := uint64(os.Getpagesize())
	first := uint64(start) * size
	end := first + uint64(len(vals))*size
	off := first / page * page
	b, err := unix.Mmap(r.m.FD(), int64(off), int((end+page-1)/page*page-off), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map %s at element %d: %w", r.m, start, err)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(vals))), end-first), b[first-off:end-off])
	if err := unix.Munmap(b); err != nil {
		return fmt.Errorf("unmap %s: %w", r.m, err)
	}
	return nil
}

// readBatch reads the next len(keys) elements of an array map: a batch
// read of an array goes in index order and fills the slices whole, but at
// the end.
func readBatch[V any](m *ebpf.Map, cursor *ebpf.MapBatchCursor, keys []uint32, vals []V) error {
	n, err := m.BatchLookup(cursor, keys, vals, nil)
	if errors.Is(err, ebpf.ErrKeyNotExist) && n == len(keys) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", m, err)
	}
	if n != len(keys) {
		return fmt.Errorf("read %s: %d elements in a batch of %d", m, n, len(keys))
	}
	return nil
}

// flowOfV4 and flowOfV6 decode a tuple record.
func flowOfV4(k balancerCtKeyV4) Flow {
	var s, d [4]byte
	binary.LittleEndian.PutUint32(s[:], k.Src)
	binary.LittleEndian.PutUint32(d[:], k.Dst)
	return Flow{Src: netip.AddrFrom4(s), Dst: netip.AddrFrom4(d), Sport: be16(k.Sport), Dport: be16(k.Dport), Proto: Proto(k.Proto)}
}

func flowOfV6(k balancerCtKeyV6) Flow {
	var s, d [16]byte
	for i := range 4 {
		binary.LittleEndian.PutUint32(s[4*i:], k.Src[i])
		binary.LittleEndian.PutUint32(d[4*i:], k.Dst[i])
	}
	return Flow{Src: netip.AddrFrom16(s), Dst: netip.AddrFrom16(d), Sport: be16(k.Sport), Dport: be16(k.Dport), Proto: Proto(k.Proto)}
}

// tableImage is a whole connection table built in memory, written at once:
// what a migration copies into new pins, and what tests fill.
type tableImage struct {
	v4      bool
	buckets []balancerCtBucket
	k4      []balancerCtKeyV4
	k6      []balancerCtKeyV6
}

func newTableImage(buckets uint32, v4 bool) *tableImage {
	t := &tableImage{v4: v4, buckets: make([]balancerCtBucket, buckets)}
	if v4 {
		t.k4 = make([]balancerCtKeyV4, buckets*ctWays)
	} else {
		t.k6 = make([]balancerCtKeyV6, buckets*ctWays)
	}
	return t
}

// add places the flow's entry: in its way, else an empty one; in a full
// bucket it takes the least recently seen way if evict, else it leaves the
// bucket alone and reports placed false.
func (t *tableImage) add(f Flow, v balancerCtValue, evict bool) (placed, evicted bool) {
	p := placeOf(f, uint32(len(t.buckets)))
	b := &t.buckets[p.bucket]
	way, full := wayFor(b, p)
	if full && !evict {
		return false, false
	}
	b.Ident[way], b.Meta[way] = p.encode(v)
	slot := p.bucket*ctWays + uint32(way)
	if t.v4 {
		t.k4[slot] = keyV4(f)
	} else {
		t.k6[slot] = keyV6(f)
	}
	return true, full
}

// write stores the image into a table and its tuple record, in batches.
func (t *tableImage) write(buckets, keys *ebpf.Map) error {
	if uint32(len(t.buckets)) != buckets.MaxEntries() {
		return fmt.Errorf("write %s: %d buckets in memory for %d in the map", buckets, len(t.buckets), buckets.MaxEntries())
	}
	if err := writeArray(buckets, t.buckets); err != nil {
		return err
	}
	if t.v4 {
		return writeArray(keys, t.k4)
	}
	return writeArray(keys, t.k6)
}

// writeArray writes vals to an array map from index 0, in batches.
func writeArray[V any](m *ebpf.Map, vals []V) error {
	const chunk = 1 << 14
	idx := make([]uint32, min(chunk, len(vals)))
	for start := 0; start < len(vals); start += chunk {
		n := min(chunk, len(vals)-start)
		for i := range n {
			idx[i] = uint32(start + i)
		}
		if _, err := m.BatchUpdate(idx[:n], vals[start:start+n], nil); err != nil {
			return fmt.Errorf("write %s: %w", m, err)
		}
	}
	return nil
}

package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Conn is one live connection entry as an operator sees it (`fulcrum conn
// list`): a flow the table holds on a backend that is still the one the
// entry was made for, not idle past its state's timeout.
type Conn struct {
	// Client and Dst are the flow's source and destination: Dst is the
	// address and port the client connected to (for an every-port VIP, the
	// port it chose).
	Client, Dst netip.AddrPort
	Proto       Proto
	// VIP is the VIP whose backend the entry names.
	VIP     VIP
	Backend netip.Addr
	State   ConnState
	// Idle is how long ago the entry last saw a packet (jiffies
	// resolution); ExpiresIn is how long it may stay idle still.
	Idle, ExpiresIn time.Duration

	id uint32 // the backend's id, for CorrectCounts
}

// Active reports whether s counts as active in IPVS's sense: established.
// SYN, FIN and closed entries are inactive.
func (s ConnState) Active() bool { return s == ConnEstablished }

// ConnCount is how many live connection entries name a backend, IPVS's
// way: Active are established, Inactive are syn, fin and closed.
type ConnCount struct {
	Active, Inactive uint64
}

// Add counts one entry in state s.
func (c *ConnCount) Add(s ConnState) {
	if s.Active() {
		c.Active++
	} else {
		c.Inactive++
	}
}

// ErrStopWalk, returned by a WalkConns callback, ends the walk early
// without an error.
var ErrStopWalk = errors.New("stop the walk")

// connOwner is what decoding an entry needs of the backend it names,
// copied under d.mu when a walk starts so that the walk itself runs
// without the lock (a reconcile does not wait for it).
type connOwner struct {
	vip      VIP
	addr     netip.Addr
	gen      uint16
	timeouts [4]time.Duration // by ConnState
}

// connOwners returns the live backends by id, or nil for a backend of a
// VIP that tracks no connections (its entries are never read).
func (d *Datapath) connOwners() map[uint32]connOwner {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[uint32]connOwner)
	for _, e := range d.vips {
		if e.cfg.NoConntrack {
			continue
		}
		t := e.cfg.Timeouts.byState(e.vip.Proto)
		for id, b := range e.byID {
			out[id] = connOwner{vip: e.vip, addr: b.Addr, gen: b.gen, timeouts: t}
		}
	}
	return out
}

// WalkConns calls f with every live connection entry: one whose backend is
// still live with the entry's generation (else the entry is stale, and
// the fast path ignores it) and that has not been idle past its state's
// timeout. Entries change while the walk runs: each is as it was when its
// chunk was read. f returning ErrStopWalk ends the walk; any other error
// ends it and is returned. The walk holds a bounded amount of memory
// whatever the table's size (see scanConns), and runs in userspace only:
// the fast path does not see it.
func (d *Datapath) WalkConns(f func(Conn) error) error {
	err := d.scanLive(func(c *Conn) (bool, error) { return false, f(*c) })
	if errors.Is(err, ErrStopWalk) {
		return nil
	}
	return err
}

// DeleteConns deletes every live connection entry match selects and
// returns how many it deleted. The flows it deletes take their VIP's ring
// at their next packet, as new flows (a drained backend's flows move).
func (d *Datapath) DeleteConns(match func(Conn) bool) (int, error) {
	n := 0
	err := d.scanLive(func(c *Conn) (bool, error) {
		if match(*c) {
			n++
			return true, nil
		}
		return false, nil
	})
	return n, err
}

// scanLive runs visit on every live entry, decoded, deleting those for
// which it returns true.
func (d *Datapath) scanLive(visit func(*Conn) (del bool, err error)) error {
	owners := d.connOwners()
	clk, err := d.clock()
	if err != nil {
		return err
	}
	var c Conn
	return d.scanConns(func(r *ctRecord) (bool, error) {
		o, ok := owners[r.backend]
		if !ok || o.gen != r.gen {
			return false, nil // stale: the fast path takes the ring
		}
		idle := clk.age(r.lastSeen)
		limit := uint32(o.timeouts[r.state&3]/time.Second) * clk.hz
		if idle > limit {
			return false, nil // expired (bpf/conntrack.h ct_expired)
		}
		hz := time.Duration(clk.hz)
		c = Conn{Client: r.client, Dst: r.dst, Proto: r.proto, VIP: o.vip, Backend: o.addr, State: r.state,
			Idle: time.Duration(idle) * time.Second / hz, ExpiresIn: time.Duration(limit-idle) * time.Second / hz, id: r.backend}
		return visit(&c)
	})
}

// ctRecord is a connection entry in the table's terms, as scanConns
// decodes it.
type ctRecord struct {
	client, dst netip.AddrPort
	proto       Proto
	backend     uint32 // backends[] id
	gen         uint16
	state       ConnState
	lastSeen    uint32 // jiffies
}

// ctChunk is how many entries scanConns deletes at a time: the walk's
// memory is TableEntries' chunk of buckets and at most this many flows to
// delete, whatever the table holds.
const ctChunk = 4096

// scanConns is the one function that maps the connection table's entries
// (TableEntries, conntrack.go) to ctRecords: it hands visit each entry
// decoded, and deletes those visit returns true for, a chunk at a time.
func (d *Datapath) scanConns(visit func(*ctRecord) (del bool, err error)) error {
	var del []Flow
	flush := func() error {
		err := d.deleteConntrack(del)
		del = del[:0]
		return err
	}
	var r ctRecord
	for e, err := range d.TableEntries() {
		if err != nil {
			return fmt.Errorf("walk the connection table: %w", err)
		}
		f := e.Flow
		r = ctRecord{client: netip.AddrPortFrom(f.Src, f.Sport), dst: netip.AddrPortFrom(f.Dst, f.Dport), proto: f.Proto,
			backend: e.Backend, gen: e.BackendGen, state: e.State, lastSeen: e.LastSeen}
		remove, err := visit(&r)
		if remove {
			del = append(del, f)
		}
		if err != nil {
			return errors.Join(err, flush())
		}
		if len(del) == ctChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// deleteConntrack empties the ways that hold the flows' entries, each
// alone, as the program writes (ctmem.go): a packet's write to another way
// of the bucket stays. A flow whose entry is gone already is not an error.
// A deleted entry that was live leaves its backend's count.
func (d *Datapath) deleteConntrack(flows []Flow) error {
	if len(flows) == 0 {
		return nil
	}
	clk, err := d.clock()
	if err != nil {
		return err
	}
	r := d.resolver()
	for _, f := range flows {
		mem, done, err := d.ctWriter(f.Dst.Is4())
		if err != nil {
			return err
		}
		err = d.deleteEntry(mem, r, clk, f)
		done()
		if err != nil {
			return fmt.Errorf("delete the entry of %s:%d -> %s:%d: %w", f.Src, f.Sport, f.Dst, f.Dport, err)
		}
	}
	return nil
}

// deleteEntry empties the way of flow f, reading its bucket again
// whenever another writer rewrote that way first, and takes the entry off
// its backend's count if it was live: in the state its meta had as the
// way emptied (a packet may have moved it since the read).
func (d *Datapath) deleteEntry(mem *ctMem, r *connResolver, clk kernelClock, f Flow) error {
	p := placeOf(f, uint32(len(mem.buckets)))
	for range ctRetries {
		b := mem.load(p.bucket)
		w := 0
		for w < ctWays && !p.holds(&b, w) {
			w++
		}
		if w == ctWays {
			return nil
		}
		meta, ok := mem.clear(p.bucket, w, &b)
		if !ok {
			continue
		}
		if meta&ctTagHiMask == p.hi {
			b.Meta[w] = meta
		}
		old := decodeWay(&b, w)
		d.countReplace(old, r.live(clk, old), nil)
		return nil
	}
	return errBucketBusy(p.bucket)
}

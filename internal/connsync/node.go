package connsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	// DefaultPort is the UDP port sync uses when none is configured.
	DefaultPort = 8473
	// DefaultFlushInterval bounds how long an offered entry waits for its
	// datagram to fill before it is sent anyway.
	DefaultFlushInterval = 50 * time.Millisecond
	// DefaultHelloInterval is how often a node tells its peers it is up.
	DefaultHelloInterval = time.Second
	// DefaultPeerTimeout is how long a peer may stay silent before it
	// counts as gone: heard again after that, it is sent a full resync.
	DefaultPeerTimeout = 3 * DefaultHelloInterval
	// DefaultQueueSize bounds the entries waiting to be batched.
	DefaultQueueSize = 65536
	// DefaultResyncRate is how many entries per second a full resync
	// sends to one peer at most: 1 M entries in 5 s, some 3600 datagrams/s,
	// which a peer's socket buffer and installer keep up with.
	DefaultResyncRate = 200_000

	recvBuffer = 4 << 20
)

// Installer installs received entries into the local connection table.
// The daemon implements it. Install is called once per accepted datagram,
// from one goroutine, with the datagram's entries; it must not keep the
// slice (it is reused) and returns how many entries it installed. Its
// rules (docs/connections.md, "Sync"):
//   - an entry is installed when the table has none for its 5-tuple, or
//     has one that sync itself installed and that would expire sooner;
//   - an entry that local traffic created or refreshed is never replaced:
//     this node forwards that flow, so its own view is the fresher one;
//   - an installed entry expires Entry.Lifetime after installation unless
//     a packet refreshes it, as it would have at the sender;
//   - Install must not block for long: datagrams queue in the socket
//     buffer meanwhile, and are lost when it fills.
type Installer interface {
	Install(entries []Entry) (installed int)
}

// Source lists the local connection table for a full resync. Snapshot
// calls yield with every current entry, in any order, until yield returns
// false; it runs on the Node's resync goroutine, beside the fast path and
// the installer, and must be safe for that.
type Source interface {
	Snapshot(yield func(Entry) bool)
}

// Config configures a Node.
type Config struct {
	// Listen is the local address and port to receive on and send from,
	// e.g. [::]:8473. Peers send from their own Listen port, so every
	// node should use the same port.
	Listen netip.AddrPort
	// Conn, when set, is used instead of binding Listen (tests, socket
	// activation). The Node closes it when Run ends.
	Conn *net.UDPConn
	// Peers are the nodes entries are sent to, and the only sources
	// datagrams are accepted from (address and port). At least one.
	Peers []netip.AddrPort
	// Key is the shared HMAC key (LoadKey). Required: there is no
	// unauthenticated mode.
	Key []byte
	// FlushInterval, HelloInterval, QueueSize and ResyncRate default to
	// the Default* constants when zero, PeerTimeout to three
	// HelloIntervals.
	FlushInterval time.Duration
	HelloInterval time.Duration
	PeerTimeout   time.Duration
	QueueSize     int
	ResyncRate    int
	// RefreshInterval, when set and returning more than 0, is how often
	// the Node walks the Source and re-sends to every peer the entries
	// that saw a packet since its previous walk (Entry.Idle): a peer's
	// copy lives the lifetime it was sent with, and the fast path exports
	// an entry only when it is made or changes state, so without this a
	// flow that stays busy on this node expires on its peers. It is read
	// before each walk (the timeouts it derives from may change); the
	// walk is paced at ResyncRate. Nil: no refresh.
	RefreshInterval func() time.Duration
	// Active, when set, says whether this node forwards traffic now (a
	// VRRP master): a refresh walk is skipped while it returns false, as
	// a standby's entries are its peers' copies and refreshing them would
	// only send them back. Nil: always active.
	Active func() bool
	// Logger; nil = slog.Default().
	Logger *slog.Logger
	// now is the clock; nil = time.Now (tests set it).
	now func() time.Time
}

// Node sends this node's new and changed connection entries to its peers
// and installs theirs. Offer may be called from any goroutine; Run runs
// the protocol until its context ends.
type Node struct {
	cfg   Config
	conn  *net.UDPConn
	src   Source
	inst  Installer
	log   *slog.Logger
	epoch uint64
	queue chan queued
	wake  chan struct{} // a peer's pending resync

	seqMu sync.Mutex // orders sequence numbers with sends (see send)
	seq   uint64

	mu    sync.Mutex // guards every peer's state
	peers map[netip.AddrPort]*peer
	order []*peer

	c      counters
	offers atomic.Uint64 // Offer calls, to sample the send lag
}

// lagSample: one offered entry in lagSample has its send lag measured.
const lagSample = 16

type queued struct {
	e  Entry
	at time.Time
}

// peer is a configured peer's receive state: bounded, whatever it sends.
type peer struct {
	addr      netip.AddrPort
	epoch     uint64
	win       window
	lastHeard time.Time
	pending   bool // a full resync is owed to it
}

// New checks cfg and binds the socket (unless cfg.Conn is set). src and
// inst must not be nil.
func New(cfg Config, src Source, inst Installer) (*Node, error) {
	if src == nil || inst == nil {
		return nil, errors.New("connsync: a Source and an Installer are required")
	}
	if len(cfg.Key) < MinKeyLen {
		return nil, fmt.Errorf("connsync: the key is %d bytes, under the minimum %d (load it with LoadKey)", len(cfg.Key), MinKeyLen)
	}
	if len(cfg.Peers) == 0 {
		return nil, errors.New("connsync: no peers")
	}
	cfg.FlushInterval = orDefault(cfg.FlushInterval, DefaultFlushInterval)
	cfg.HelloInterval = orDefault(cfg.HelloInterval, DefaultHelloInterval)
	cfg.PeerTimeout = orDefault(cfg.PeerTimeout, 3*cfg.HelloInterval)
	cfg.QueueSize = orDefault(cfg.QueueSize, DefaultQueueSize)
	cfg.ResyncRate = orDefault(cfg.ResyncRate, DefaultResyncRate)
	if cfg.PeerTimeout <= cfg.HelloInterval {
		return nil, fmt.Errorf("connsync: peer timeout %s must be longer than the hello interval %s", cfg.PeerTimeout, cfg.HelloInterval)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	n := &Node{
		cfg:   cfg,
		src:   src,
		inst:  inst,
		log:   cfg.Logger,
		epoch: uint64(cfg.now().UnixNano()),
		queue: make(chan queued, cfg.QueueSize),
		wake:  make(chan struct{}, 1),
		peers: make(map[netip.AddrPort]*peer, len(cfg.Peers)),
	}
	if n.log == nil {
		n.log = slog.Default()
	}
	for _, a := range cfg.Peers {
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if !a.IsValid() || a.Port() == 0 {
			return nil, fmt.Errorf("connsync: peer %s has no address or port", a)
		}
		if _, dup := n.peers[a]; dup {
			return nil, fmt.Errorf("connsync: peer %s is listed twice", a)
		}
		p := &peer{addr: a}
		n.peers[a] = p
		n.order = append(n.order, p)
	}
	n.conn = cfg.Conn
	if n.conn == nil {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Listen))
		if err != nil {
			return nil, fmt.Errorf("connsync: listen on %s: %w", cfg.Listen, err)
		}
		n.conn = c
		// A resync arrives in bursts of thousands of datagrams; ask for a
		// receive buffer that holds a second's worth (the kernel caps it
		// at net.core.rmem_max).
		_ = c.SetReadBuffer(recvBuffer)
	}
	return n, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Addr is the local address the Node receives on.
func (n *Node) Addr() netip.AddrPort {
	return n.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Offer queues e to be sent to every peer, and never blocks: when the
// queue is full e is dropped and counted (Stats.QueueOverflow). It
// reports whether e was queued.
func (n *Node) Offer(e Entry) bool {
	if e.check() != "" {
		n.c.invalid.Add(1)
		return false
	}
	q := queued{e: e}
	// Reading the clock costs more than the rest of Offer on some
	// virtual machines (a quarter of a µs here), so only one entry in
	// lagSample is stamped: the lag is a sample's.
	if n.offers.Add(1)%lagSample == 0 {
		q.at = n.cfg.now()
	}
	select {
	case n.queue <- q:
		return true
	default:
		n.c.overflow.Add(1)
		return false
	}
}

// Run sends hellos, batches offered entries, receives and installs peers'
// entries and sends full resyncs, until ctx ends; then it closes the
// socket and returns once every goroutine it started has. Call it once.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { n.receive(ctx) })
	wg.Go(func() { n.batch(ctx) })
	wg.Go(func() { n.hello(ctx) })
	wg.Go(func() { n.resyncs(ctx) })
	if n.cfg.RefreshInterval != nil {
		wg.Go(func() { n.refreshes(ctx) })
	}
	<-ctx.Done()
	// Closing the socket ends the blocked read.
	n.conn.Close()
	cancel()
	wg.Wait()
	return nil
}

// send seals d and sends it to the given peers. The sequence number is
// taken and the datagram sent under one lock, so that sends leave in
// sequence order and a peer's replay window only sees reordering that the
// network made.
func (n *Node) send(d *datagram, m *mac, typ msgType, flags uint16, to []*peer) {
	n.seqMu.Lock()
	defer n.seqMu.Unlock()
	n.seq++
	b := d.seal(m, typ, flags, n.epoch, n.seq, n.cfg.now())
	for _, p := range to {
		if _, err := n.conn.WriteToUDPAddrPort(b, p.addr); err != nil {
			n.c.sendErrors.Add(1)
			continue
		}
		n.c.sentDatagrams.Add(1)
		n.c.sentEntries.Add(uint64(d.count))
	}
}

// batch packs offered entries into datagrams, sending one when it is full
// or FlushInterval after its first entry was added.
func (n *Node) batch(ctx context.Context) {
	d, m := newDatagram(), newMAC(n.cfg.Key)
	var offered [MaxEntries]time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		if d.count == 0 {
			return
		}
		n.send(d, m, typeEntries, 0, n.order)
		var now time.Time
		var sampled uint64
		var sum, most time.Duration
		for _, at := range offered[:d.count] {
			if at.IsZero() {
				continue
			}
			if sampled == 0 {
				now = n.cfg.now()
			}
			l := now.Sub(at)
			sum, most, sampled = sum+l, max(most, l), sampled+1
		}
		if sampled > 0 {
			n.c.sendLag.add(sampled, sum, most)
		}
		d.reset()
		timer.Stop()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			flush()
		case q := <-n.queue:
			if !d.room(&q.e) {
				flush()
			}
			if d.count == 0 {
				timer.Reset(n.cfg.FlushInterval)
			}
			offered[d.count] = q.at
			d.add(&q.e)
		}
	}
}

// hello tells every peer this node is up, at once and every
// HelloInterval: a peer that has not heard of this epoch sends a resync.
func (n *Node) hello(ctx context.Context) {
	d, m := newDatagram(), newMAC(n.cfg.Key)
	t := time.NewTicker(n.cfg.HelloInterval)
	defer t.Stop()
	for {
		n.send(d, m, typeHello, 0, n.order)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// receive reads datagrams until the socket closes.
func (n *Node) receive(ctx context.Context) {
	// One byte over the maximum, so that an oversized datagram is seen
	// as such rather than cut to a size that passes.
	buf := make([]byte, MaxDatagram+1)
	ents := make([]Entry, 0, MaxEntries)
	m := newMAC(n.cfg.Key)
	for {
		nb, src, err := n.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			n.log.Warn("sync: receive", "err", err)
			continue
		}
		n.handle(buf[:nb], src, m, ents)
	}
}

// handle checks one datagram and installs its entries. Nothing is
// installed, and no peer state changes, unless every check passes.
func (n *Node) handle(b []byte, src netip.AddrPort, m *mac, ents []Entry) {
	if len(b) > MaxDatagram {
		n.c.dropped[ReasonOversized].Add(1)
		return
	}
	p := n.peers[netip.AddrPortFrom(src.Addr().Unmap(), src.Port())]
	if p == nil {
		n.c.dropped[ReasonUnknownPeer].Add(1)
		return
	}
	h, ents, r := decode(b, m, ents)
	if r == reasonNone && h.sender == n.epoch {
		r = ReasonSelf
	}
	if r != reasonNone {
		n.c.dropped[r].Add(1)
		return
	}
	now := n.cfg.now()
	n.mu.Lock()
	reappeared := false
	switch {
	case h.sender < p.epoch || h.sender == p.epoch && !p.win.check(h.seq):
		n.mu.Unlock()
		n.c.dropped[ReasonReplay].Add(1)
		return
	case h.sender > p.epoch:
		// A new epoch: the peer (re)started, with a new sequence.
		if p.epoch != 0 {
			n.log.Info("sync: peer restarted", "peer", p.addr)
		}
		p.epoch, p.win, reappeared = h.sender, window{}, true
	case now.Sub(p.lastHeard) > n.cfg.PeerTimeout:
		n.log.Info("sync: peer heard again", "peer", p.addr, "silent", now.Sub(p.lastHeard).Round(time.Millisecond))
		reappeared = true
	}
	p.win.mark(h.seq)
	p.lastHeard = now
	if reappeared {
		p.pending = true
	}
	n.mu.Unlock()
	if reappeared {
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}

	n.c.receivedDatagrams.Add(1)
	age := max(now.Sub(time.Unix(0, h.sent)), 0)
	n.c.receiveAge.add(1, age, age)
	if len(ents) > 0 {
		n.c.receivedEntries.Add(uint64(len(ents)))
		n.c.installed.Add(uint64(n.inst.Install(ents)))
	}
}

// resyncs sends a full resync to each peer that is owed one, one peer at a
// time.
func (n *Node) resyncs(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		}
		for {
			n.mu.Lock()
			var p *peer
			for _, q := range n.order {
				if q.pending {
					p, q.pending = q, false
					break
				}
			}
			n.mu.Unlock()
			if p == nil || ctx.Err() != nil {
				break
			}
			n.resync(ctx, p)
		}
	}
}

// resync sends p every entry of the Source, at most ResyncRate entries per
// second.
func (n *Node) resync(ctx context.Context, p *peer) {
	start := time.Now()
	sent := n.walk(ctx, []*peer{p}, flagResync, nil)
	n.c.resyncs.Add(1)
	n.c.resyncEntries.Add(uint64(sent))
	n.log.Info("sync: full resync sent", "peer", p.addr, "entries", sent, "took", time.Since(start).Round(time.Millisecond))
}

// walk sends to the given peers the entries of the Source that pick
// accepts (every entry if pick is nil), at most ResyncRate entries per
// second, and returns how many it sent (once each, whatever the number
// of peers). It stops early when ctx ends.
func (n *Node) walk(ctx context.Context, to []*peer, flags uint16, pick func(*Entry) bool) int {
	d, m := newDatagram(), newMAC(n.cfg.Key)
	start := time.Now()
	sent := 0
	flush := func() bool {
		n.send(d, m, typeEntries, flags, to)
		sent += d.count
		d.reset()
		// Pace: the time these entries may take at ResyncRate.
		due := start.Add(time.Duration(float64(sent) / float64(n.cfg.ResyncRate) * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return false
			case <-t.C:
			}
		}
		return ctx.Err() == nil
	}
	ok := true
	n.src.Snapshot(func(e Entry) bool {
		if e.check() != "" {
			n.c.invalid.Add(1)
			return true
		}
		if pick != nil && !pick(&e) {
			return true
		}
		if !d.room(&e) && !flush() {
			ok = false
			return false
		}
		d.add(&e)
		return true
	})
	if ok && d.count > 0 {
		flush()
	}
	return sent
}

// refreshes re-sends, every RefreshInterval, the entries that saw a packet
// since the previous walk began, to every peer: their copies then live as
// long as this node's entries. An entry idle since before the previous
// walk began was sent by it (or by its event) with the lifetime it still
// has, so its copies already expire with it. The first walk counts from
// Run's start: what is older reached the peers by their first resync.
func (n *Node) refreshes(ctx context.Context) {
	prev := n.cfg.now()
	for {
		every := n.cfg.RefreshInterval()
		if every <= 0 {
			// Refresh off for now (no VIP keeps connections): look
			// again later, as the configuration may change.
			every = time.Second
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if n.cfg.RefreshInterval() <= 0 || (n.cfg.Active != nil && !n.cfg.Active()) {
			// A standby's entries are copies: nothing to refresh. The
			// next walk counts from now: this node's own traffic, once
			// it is master, starts now too (an entry it made meanwhile
			// was exported when made).
			prev = n.cfg.now()
			continue
		}
		start := n.cfg.now()
		// Seen after prev: idle for less than the time since. Measured
		// from the walk's start (not each entry's visit, a clock read
		// per entry): an entry seen during the walk is the next one's.
		since := start.Sub(prev)
		sent := n.walk(ctx, n.order, 0, func(e *Entry) bool { return e.Idle < since })
		n.c.refreshes.Add(1)
		n.c.refreshEntries.Add(uint64(sent))
		n.log.Debug("sync: refresh sent", "entries", sent, "took", n.cfg.now().Sub(start).Round(time.Millisecond))
		prev = start
	}
}

// Stats returns a snapshot of the counters.
func (n *Node) Stats() Stats {
	s := Stats{
		SentDatagrams:     n.c.sentDatagrams.Load(),
		SentEntries:       n.c.sentEntries.Load(),
		SendErrors:        n.c.sendErrors.Load(),
		ReceivedDatagrams: n.c.receivedDatagrams.Load(),
		ReceivedEntries:   n.c.receivedEntries.Load(),
		Installed:         n.c.installed.Load(),
		Dropped:           make(map[string]uint64, numReasons-1),
		QueueOverflow:     n.c.overflow.Load(),
		Invalid:           n.c.invalid.Load(),
		Queued:            len(n.queue),
		Resyncs:           n.c.resyncs.Load(),
		ResyncEntries:     n.c.resyncEntries.Load(),
		Refreshes:         n.c.refreshes.Load(),
		RefreshEntries:    n.c.refreshEntries.Load(),
		SendLag:           n.c.sendLag.get(),
		ReceiveAge:        n.c.receiveAge.get(),
	}
	for _, r := range Reasons() {
		s.Dropped[r.String()] = n.c.dropped[r].Load()
	}
	now := n.cfg.now()
	n.mu.Lock()
	for _, p := range n.order {
		s.Peers = append(s.Peers, PeerStats{Address: p.addr, Epoch: p.epoch, LastHeard: p.lastHeard,
			Up: !p.lastHeard.IsZero() && now.Sub(p.lastHeard) <= n.cfg.PeerTimeout})
	}
	n.mu.Unlock()
	return s
}

// Close releases the socket of a Node whose Run was never called (Run
// closes it itself).
func (n *Node) Close() error { return n.conn.Close() }

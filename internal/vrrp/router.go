// Package vrrp implements VRRPv3 (RFC 5798) for IPv4 and IPv6, so that two
// Fulcrum nodes, or a Fulcrum node and keepalived, elect one master for a
// set of virtual addresses.
//
// A Router speaks the protocol on one interface: it sends and receives
// advertisements (IP protocol 112, to 224.0.0.18 or ff02::12, or to
// unicast peers) through a raw socket bound to the interface, runs the
// state machine of RFC 5798 §6.4, and acts on its role: as master it holds
// the virtual addresses on the interface and announces them with gratuitous
// ARP or unsolicited Neighbor Advertisements; otherwise it holds none.
// Config.OnState tells the rest of the program about every change.
//
// The protocol runs on a thread of its own with real-time priority that
// sleeps in ppoll(2) until the next packet, request or deadline, and
// sending an advertisement does not allocate, so that advertisements keep
// their cadence while XDP or anything else keeps the CPUs busy.
// docs/vrrp.md describes the behaviour, the timers, interoperation with
// keepalived and what the daemon must do.
package vrrp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Defaults.
const (
	DefaultAdvertInterval = 10 // centiseconds
	DefaultPriority       = 100
)

// Config describes one virtual router. The names follow the vrrp section of
// Fulcrum's configuration file.
type Config struct {
	// Interface the advertisements are sent and received on, and the
	// virtual addresses are put on.
	Interface string
	// VRID is the virtual router id, 1..255, the same on every node.
	VRID int
	// Priority 1..255, higher wins; 255 means the address owner, which
	// becomes master at once.
	Priority int
	// AdvertInterval is the interval between advertisements, in
	// centiseconds, 1..4095; 0 means DefaultAdvertInterval (100 ms).
	AdvertInterval int
	// Preempt lets this router take over from a lower-priority master.
	Preempt bool
	// PreemptDelay holds preemption off for this long after the router
	// starts (or its interface comes back up).
	PreemptDelay time.Duration
	// UnicastPeers, when set, receive the advertisements by unicast instead
	// of the multicast group, and only advertisements from them are heard.
	UnicastPeers []netip.Addr
	// Family of the advertisements: "ipv4" (the default when empty) or
	// "ipv6".
	Family string
	// VirtualAddresses are put on the interface while master, with their
	// prefix length (198.18.0.100/24). Those of the advertisement family
	// are listed in the advertisements, in this order; those of the other
	// family are held but not listed (keepalived's
	// virtual_ipaddress_excluded).
	VirtualAddresses []netip.Prefix
	// GratuitousCount is how many gratuitous ARPs (IPv4) or unsolicited
	// Neighbor Advertisements (IPv6) are sent per virtual address on
	// becoming master: the first right after the first advertisement, the
	// others one per advertisement interval. 0 sends none.
	GratuitousCount int
	// OnState, if set, is called after every state change, in order, on a
	// goroutine of its own: it may block without delaying advertisements.
	// When it is called for Master the addresses are already in place.
	OnState func(old, new State) `json:"-"`
}

// Options are the Router's dependencies.
type Options struct {
	// Logger receives transitions (info), problems (warn) and dropped
	// packets (debug). Nil discards.
	Logger *slog.Logger
	// RealtimePriority is the SCHED_RR priority (1..99) of the thread that
	// keeps the timers and sends the advertisements, so that it runs on
	// time when other work (XDP in softirq, busy processes) keeps every
	// CPU busy: 0 means DefaultRealtimePriority, a negative value leaves
	// the thread under the ordinary scheduler. Without CAP_SYS_NICE the
	// Router logs a warning and runs without it.
	RealtimePriority int
}

// Realtime is the SCHED_RR priority the protocol thread runs at for
// RealtimePriority: DefaultRealtimePriority for 0, and 0 (none) for a
// negative value.
func (o Options) Realtime() (int, error) {
	switch p := o.RealtimePriority; {
	case p == 0:
		return DefaultRealtimePriority, nil
	case p < 0:
		return 0, nil
	case p > 99:
		return 0, fmt.Errorf("vrrp: realtime priority %d is over 99", p)
	default:
		return p, nil
	}
}

// DefaultRealtimePriority is the SCHED_RR priority of the advertisement
// thread: low among real-time priorities (the kernel's own threads use 50
// and up), above every ordinary process.
const DefaultRealtimePriority = 10

// Stats is a snapshot of a Router's state and counters.
type Stats struct {
	State State `json:"state"`
	// Priority is the effective priority: the configured one plus the
	// offset, as advertised.
	Priority int `json:"priority"`
	// Master is the primary address of the master as last heard (ours when
	// master); invalid when unknown.
	Master netip.Addr `json:"master"`
	// MasterAdvertInterval is Master_Adver_Interval in centiseconds: ours
	// when master, the master's as learned from its advertisements when
	// backup.
	MasterAdvertInterval int `json:"master_advert_interval"`

	AdvertsSent          uint64 `json:"adverts_sent"`
	AdvertsReceived      uint64 `json:"adverts_received"` // valid, of our VRID
	PriorityZeroSent     uint64 `json:"priority_zero_sent"`
	PriorityZeroReceived uint64 `json:"priority_zero_received"`
	// AddressMismatches counts received advertisements whose address list
	// differs from ours: accepted, as RFC 5798 §7.1 says, and logged.
	AddressMismatches uint64 `json:"address_mismatches"`
	GratuitousSent    uint64 `json:"gratuitous_sent"` // ARP / NA frames
	SendErrors        uint64 `json:"send_errors"`
	// Dropped counts received packets by DropReason name.
	Dropped     map[string]uint64 `json:"dropped"`
	Transitions uint64            `json:"transitions"`
	// BecameMaster counts transitions to Master.
	BecameMaster   uint64    `json:"became_master"`
	LastTransition time.Time `json:"last_transition"`

	// Timing of the advertisements, to tell a late master from a late
	// network when a backup takes over by mistake (docs/vrrp.md).
	//
	// WorstSendDelay is the longest a master's advertisement waited
	// after it was due before the protocol thread sent it (a late
	// wake-up); a takeover's first advertisement counts from the
	// Master_Down_Timer. LateSends counts those more than half an interval late.
	// WorstSendCall is the longest the send call took: the packet is
	// handed to the driver early in it, but the kernel then runs the
	// network softirq work pending on the CPU in the caller's context,
	// which delays the thread, not that advertisement.
	WorstSendDelay time.Duration `json:"worst_send_delay_ns"`
	LateSends      uint64        `json:"late_sends"`
	WorstSendCall  time.Duration `json:"worst_send_call_ns"`
	// WorstAdvertGap is the longest time a backup went between two
	// advertisements of the master it follows, by the kernel's receive
	// times. LateAdverts counts the gaps longer than 1.5 intervals.
	WorstAdvertGap time.Duration `json:"worst_advert_gap_ns"`
	LateAdverts    uint64        `json:"late_adverts"`
}

// Router is one virtual router on one interface. Create it with New in the
// network namespace of its interface, then call Run once.
type Router struct {
	cfg       Config
	log       *slog.Logger
	v6        bool // advertisement family
	ifindex   int
	multicast bool
	ours      []netip.Addr   // addresses listed in our advertisements
	vips      []netip.Prefix // every virtual address

	nl   *netlink.Handle
	nsh  netns.NsHandle
	sock *socket
	pkt  int // AF_PACKET socket for gratuitous ARP / unsolicited NA

	// Owned by the loop (see Run).
	m        machine
	src      netip.Addr // primary address: advertisement source, tie-break
	mac      net.HardwareAddr
	frames   [][]byte // gratuitous ARP / NA frames, one per virtual address
	garpLeft int
	// announced: a takeover has just announced; the advertisement that
	// follows sends no repeat.
	announced bool
	// holdPending: the virtual addresses are to be put on the interface
	// (hold) at the top of the next loop iteration.
	holdPending bool
	adv         Advert
	buf         []byte
	added       []bool // per virtual address: we put it on the interface
	linkUp      bool
	mismatch    bool // the last advertisement's address list differed

	rxAdv Advert // scratch for parsing received advertisements
	// due is when the advertisement being sent was due (zero when the
	// send is not a timer's); lastRx is when the advertisement before
	// the current one arrived from the master we follow as backup.
	due, lastRx time.Time
	lastRxFrom  netip.Addr
	lateLog     time.Time // when lateness was last logged (rate limit)
	retryAt     time.Time
	timeout     unix.Timespec
	pollFDs     [2]unix.PollFd
	wake        int // eventfd: other goroutines wake the loop with it
	realtime    int // SCHED_RR priority of the loop's thread; 0 = none

	// Requests from other goroutines, taken by the loop when woken.
	ctl struct {
		sync.Mutex
		offset                          int
		offsetChanged, handover, resume bool
		stop                            bool
		links                           []bool // link state changes: up?
	}

	state     atomic.Int32
	priority  atomic.Int32
	masterInt atomic.Int32
	masterMu  sync.Mutex
	master    netip.Addr
	lastTrans atomic.Int64 // unix nanoseconds

	sent, received, zeroSent, zeroReceived, mismatches atomic.Uint64
	garpSent, sendErrors, transitions, becameMaster    atomic.Uint64
	dropped                                            [numDropReasons]atomic.Uint64
	worstSend, worstCall, worstGap                     atomic.Int64 // nanoseconds
	lateSends, lateAdverts                             atomic.Uint64

	notes notifier

	ran       atomic.Bool
	closeOnce sync.Once
}

// rxAdvert is a valid advertisement of our VRID.
type rxAdvert struct {
	at       time.Time
	src      netip.Addr
	priority uint8
	interval int
}

// New checks cfg and opens what the Router needs: a raw socket for the
// advertisements bound to the interface (and joined to the group), a packet
// socket for gratuitous ARP and NA, and a netlink handle. It must run in the
// network namespace of the interface (on a thread locked to it); the Router
// keeps working there from any goroutine afterwards. It needs CAP_NET_RAW
// and CAP_NET_ADMIN.
func New(cfg Config, opts Options) (*Router, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.AdvertInterval == 0 {
		cfg.AdvertInterval = DefaultAdvertInterval
	}
	r := &Router{
		cfg:       cfg,
		log:       opts.Logger,
		v6:        cfg.Family == "ipv6",
		multicast: len(cfg.UnicastPeers) == 0,
		pkt:       -1,
		wake:      -1,
	}
	var err error
	if r.realtime, err = opts.Realtime(); err != nil {
		return nil, err
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("vrid", cfg.VRID, "interface", cfg.Interface)
	for _, p := range cfg.VirtualAddresses {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
		r.vips = append(r.vips, p)
		if p.Addr().Is6() == r.v6 {
			r.ours = append(r.ours, p.Addr())
		}
	}
	r.added = make([]bool, len(r.vips))
	r.adv = Advert{VRID: uint8(cfg.VRID), MaxAdvertInterval: uint16(cfg.AdvertInterval), Addresses: r.ours}
	r.buf = make([]byte, 0, 40+r.adv.Len())
	r.m = machine{
		out:          r,
		priority:     uint8(cfg.Priority),
		advertInt:    cfg.AdvertInterval,
		masterInt:    cfg.AdvertInterval,
		preempt:      cfg.Preempt,
		preemptDelay: cfg.PreemptDelay,
	}
	r.priority.Store(int32(cfg.Priority))
	r.masterInt.Store(int32(cfg.AdvertInterval))

	if err := r.open(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (c *Config) check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("vrrp: "+format, args...)) }
	if c.Interface == "" {
		bad("interface: empty; name the interface the advertisements use, e.g. eth0")
	}
	if c.VRID < 1 || c.VRID > 255 {
		bad("vrid: %d is outside 1..255", c.VRID)
	}
	if c.Priority < 1 || c.Priority > 255 {
		bad("priority: %d is outside 1..255", c.Priority)
	}
	if c.AdvertInterval < 0 || c.AdvertInterval > MaxAdvertInterval {
		bad("advert interval: %d cs is outside 1..%d (0 = default %d)", c.AdvertInterval, MaxAdvertInterval, DefaultAdvertInterval)
	}
	if c.PreemptDelay < 0 {
		bad("preempt delay: %s is negative", c.PreemptDelay)
	}
	if c.GratuitousCount < 0 {
		bad("gratuitous count: %d is negative", c.GratuitousCount)
	}
	switch c.Family {
	case "":
		c.Family = "ipv4"
	case "ipv4", "ipv6":
	default:
		bad("family: %q, want ipv4 or ipv6", c.Family)
	}
	v6 := c.Family == "ipv6"
	for _, p := range c.UnicastPeers {
		if !p.IsValid() || p.Unmap().Is6() != v6 {
			bad("unicast peer %s is not an %s address", p, c.Family)
		}
	}
	listed := 0
	seen := map[netip.Addr]bool{}
	for _, p := range c.VirtualAddresses {
		if !p.IsValid() {
			bad("virtual address %s is not a valid prefix", p)
			continue
		}
		a := p.Addr().Unmap()
		if seen[a] {
			bad("virtual address %s is listed twice", a)
		}
		seen[a] = true
		if a.Is6() == v6 {
			listed++
		}
	}
	if listed > MaxAddresses {
		bad("%d virtual addresses of family %s, an advertisement lists at most %d", listed, c.Family, MaxAddresses)
	}
	return errors.Join(errs...)
}

func (r *Router) open() error {
	var err error
	if r.nsh, err = netns.Get(); err != nil {
		return fmt.Errorf("vrrp: get network namespace: %w", err)
	}
	if r.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return fmt.Errorf("vrrp: open netlink: %w", err)
	}
	link, err := r.nl.LinkByName(r.cfg.Interface)
	if err != nil {
		return fmt.Errorf("vrrp: interface %s: %w", r.cfg.Interface, err)
	}
	r.ifindex = link.Attrs().Index
	if r.sock, err = openSocket(r.cfg.Interface, r.ifindex, r.v6, r.multicast, r.cfg.UnicastPeers); err != nil {
		return fmt.Errorf("vrrp: %s: %w", r.cfg.Interface, err)
	}
	if r.pkt, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
		return fmt.Errorf("vrrp: packet socket: %w", err)
	}
	if r.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("vrrp: eventfd: %w", err)
	}
	if r.v6 {
		return nil
	}
	// IPv4: the primary address must be there from the start (it does not
	// go away with the link, unlike IPv6 link-local addresses).
	if _, err := r.primaryAddress(); err != nil {
		return err
	}
	return nil
}

// Close releases the sockets. Run calls it when it returns; call it only
// for a Router that never ran. It is idempotent.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		if r.sock != nil {
			r.sock.close()
		}
		if r.pkt >= 0 {
			unix.Close(r.pkt)
		}
		r.ctl.Lock() // poke writes to wake under the lock
		if r.wake >= 0 {
			unix.Close(r.wake)
			r.wake = -1
		}
		r.ctl.Unlock()
		if r.nl != nil {
			r.nl.Close()
		}
		if r.nsh.IsOpen() {
			r.nsh.Close()
		}
	})
	return nil
}

// State returns the current state.
func (r *Router) State() State { return State(r.state.Load()) }

// Handover gives mastership away gracefully: a master advertises priority 0,
// so that the best backup takes over after its skew time instead of the
// whole master-down interval, releases its addresses and becomes a backup.
// Preemption is then suspended until Resume, so that the router does not
// take mastership straight back; it still takes over if no other master
// shows up. It returns at once; the loop makes the change.
func (r *Router) Handover() {
	r.ctl.Lock()
	r.ctl.handover = true
	r.ctl.Unlock()
	r.poke()
}

// Resume ends the effect of Handover: preemption applies again.
func (r *Router) Resume() {
	r.ctl.Lock()
	r.ctl.resume = true
	r.ctl.Unlock()
	r.poke()
}

// SetPriorityOffset sets an offset added to the configured priority, for
// tracking: the daemon lowers its priority while it is sick (XDP detached,
// every backend of a VIP down; docs/vrrp.md suggests -254, priority 1) so
// that a healthy backup with preemption on takes over. The effective
// priority is clamped to 1..254 when n is not 0 (an address owner that is
// sick is no longer the owner). A master advertises the new priority at
// once. An offset set before Run applies from the start.
func (r *Router) SetPriorityOffset(n int) {
	r.ctl.Lock()
	r.ctl.offset = n
	r.ctl.offsetChanged = true
	r.ctl.Unlock()
	r.poke()
}

// poke wakes the loop to take the requests. After Close it does nothing.
func (r *Router) poke() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	r.ctl.Lock()
	if r.wake >= 0 {
		_, _ = unix.Write(r.wake, one[:])
	}
	r.ctl.Unlock()
}

// effectivePriority is the configured priority plus the offset.
func effectivePriority(configured, offset int) uint8 {
	if offset == 0 {
		return uint8(configured)
	}
	return uint8(min(max(configured+offset, 1), 254))
}

// Stats returns a snapshot of the state and the counters.
func (r *Router) Stats() Stats {
	s := Stats{
		State:                r.State(),
		Priority:             int(r.priority.Load()),
		MasterAdvertInterval: int(r.masterInt.Load()),
		AdvertsSent:          r.sent.Load(),
		AdvertsReceived:      r.received.Load(),
		PriorityZeroSent:     r.zeroSent.Load(),
		PriorityZeroReceived: r.zeroReceived.Load(),
		AddressMismatches:    r.mismatches.Load(),
		GratuitousSent:       r.garpSent.Load(),
		SendErrors:           r.sendErrors.Load(),
		Dropped:              make(map[string]uint64, numDropReasons),
		Transitions:          r.transitions.Load(),
		BecameMaster:         r.becameMaster.Load(),
		WorstSendDelay:       time.Duration(r.worstSend.Load()),
		LateSends:            r.lateSends.Load(),
		WorstSendCall:        time.Duration(r.worstCall.Load()),
		WorstAdvertGap:       time.Duration(r.worstGap.Load()),
		LateAdverts:          r.lateAdverts.Load(),
	}
	if ns := r.lastTrans.Load(); ns != 0 {
		s.LastTransition = time.Unix(0, ns)
	}
	r.masterMu.Lock()
	s.Master = r.master
	r.masterMu.Unlock()
	for i := range r.dropped {
		s.Dropped[DropReason(i).String()] = r.dropped[i].Load()
	}
	return s
}

// Run runs the virtual router until ctx is done: it starts as backup (or
// master, at priority 255), and when ctx ends a master advertises priority
// 0 and releases its addresses. Run returns nil after a clean stop; it
// releases the Router's sockets, and may be called only once.
//
// The protocol runs on a goroutine of its own, locked to an OS thread with
// real-time priority (Options.RealtimePriority) that waits in ppoll(2) for
// packets, requests and the next deadline, so that the kernel wakes it on
// time even while ordinary work keeps every CPU busy (docs/vrrp.md tells
// what it still needs from the Go scheduler). Packets that are waiting are
// always read before a timer is acted on, with the kernel's receive time,
// so that a late wake-up does not turn into a false failover.
func (r *Router) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errors.New("vrrp: Run called twice")
	}
	defer r.Close()

	r.notes.start(r.cfg.OnState)
	defer r.notes.stop()

	links := make(chan netlink.LinkUpdate, 16)
	linkDone := make(chan struct{})
	err := netlink.LinkSubscribeWithOptions(links, linkDone, netlink.LinkSubscribeOptions{
		Namespace:     &r.nsh,
		ErrorCallback: func(err error) { r.log.Debug("vrrp: link updates", "err", err) },
	})
	if err != nil {
		return fmt.Errorf("vrrp: subscribe to link updates: %w", err)
	}
	// Link updates and the end of ctx reach the loop as requests.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case u, ok := <-links:
				if !ok {
					return
				}
				if int(u.Index) != r.ifindex {
					continue
				}
				up := u.Header.Type != unix.RTM_DELLINK && isUp(u.IfInfomsg.Flags)
				r.ctl.Lock()
				r.ctl.links = append(r.ctl.links, up)
				r.ctl.Unlock()
				r.poke()
			case <-done:
				return
			}
		}
	})
	wg.Go(func() {
		select {
		case <-ctx.Done():
			r.ctl.Lock()
			r.ctl.stop = true
			r.ctl.Unlock()
			r.poke()
		case <-done:
		}
	})
	defer func() {
		close(done)
		close(linkDone)
		for range links { // until the subscription's goroutine is gone
		}
		wg.Wait()
	}()

	errc := make(chan error, 1)
	go func() { errc <- r.loop() }()
	return <-errc
}

// loop is the protocol's event loop. It runs on a thread of its own that
// it never unlocks, so that the thread, with its scheduling policy, ends
// with it.
func (r *Router) loop() error {
	runtime.LockOSThread()
	if r.realtime > 0 {
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_RR, Priority: uint32(r.realtime)}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			r.log.Warn("vrrp: no real-time priority for the advertisement thread; timers may run late under load",
				"priority", r.realtime, "err", err)
		}
	}

	link, err := r.nl.LinkByIndex(r.ifindex)
	if err != nil {
		return fmt.Errorf("vrrp: interface %s: %w", r.cfg.Interface, err)
	}
	r.linkUp = isUp(link.Attrs().RawFlags)
	r.log.Info("vrrp: starting", "priority", r.cfg.Priority, "advert_interval_cs", r.cfg.AdvertInterval,
		"preempt", r.cfg.Preempt, "family", r.cfg.Family, "addresses", r.vips)
	// Requests made before Run (a priority offset, say) apply from the
	// start.
	if r.control() {
		return nil
	}
	if r.State() == Initialize {
		r.begin(time.Now(), "startup")
	}

	r.pollFDs[0] = unix.PollFd{Fd: int32(r.sock.fd), Events: unix.POLLIN}
	r.pollFDs[1] = unix.PollFd{Fd: int32(r.wake), Events: unix.POLLIN}
	for {
		// Addresses go on the interface after the announcements and
		// the first advertisement of a takeover: it is netlink work
		// (the RTNL lock, which others may hold for long).
		if r.holdPending {
			r.holdPending = false
			r.hold()
		}
		next := r.m.next()
		if !r.retryAt.IsZero() && (next.IsZero() || r.retryAt.Before(next)) {
			next = r.retryAt
		}
		timeout := (*unix.Timespec)(nil)
		if !next.IsZero() {
			r.timeout = unix.NsecToTimespec(int64(max(time.Until(next), 0)))
			timeout = &r.timeout
		}
		r.pollFDs[0].Revents, r.pollFDs[1].Revents = 0, 0
		if _, err := unix.Ppoll(r.pollFDs[:], timeout, nil); err != nil && err != unix.EINTR {
			return fmt.Errorf("vrrp: poll: %w", err)
		}
		// Packets first (ppoll reports those that arrived before it
		// returned, also on a timeout), then requests, then timers.
		if r.pollFDs[0].Revents != 0 {
			r.drain()
		}
		if r.pollFDs[1].Revents != 0 {
			var b [8]byte
			_, _ = unix.Read(r.wake, b[:])
			if r.control() {
				r.m.shutdown("shutdown")
				r.log.Info("vrrp: stopped")
				return nil
			}
		}
		now := time.Now()
		// advertise measures its delay from the time it was due: the
		// Adver_Timer's, or the Master_Down_Timer's on a takeover.
		switch {
		case r.State() == Master && !r.m.adverAt.IsZero() && !now.Before(r.m.adverAt):
			r.due = r.m.adverAt
		case r.State() == Backup && !r.m.downAt.IsZero() && !now.Before(r.m.downAt):
			r.due = r.m.downAt
		}
		r.m.tick(now)
		r.due = time.Time{}
		if !r.retryAt.IsZero() && !now.Before(r.retryAt) {
			r.retryAt = time.Time{}
			if r.State() == Fault && r.linkUp {
				r.begin(now, "source address available")
			}
		}
	}
}

// begin starts the protocol (at startup or when the interface comes back),
// or stays in Fault while the interface is down or has no source address.
func (r *Router) begin(now time.Time, why string) {
	if !r.linkUp {
		r.m.fault("interface down")
		return
	}
	if err := r.refresh(); err != nil {
		if r.State() != Fault {
			r.log.Warn("vrrp: cannot advertise", "err", err)
		}
		r.m.fault("no source address")
		r.retryAt = now.Add(100 * time.Millisecond)
		return
	}
	r.m.start(now, why)
}

func (r *Router) linkChanged(up bool) {
	if up == r.linkUp {
		return
	}
	r.linkUp = up
	if !up {
		r.m.fault("interface down")
		return
	}
	if r.State() == Fault {
		r.begin(time.Now(), "interface up")
	}
}

func isUp(flags uint32) bool {
	return flags&unix.IFF_UP != 0 && flags&unix.IFF_RUNNING != 0
}

// control takes the requests of other goroutines; it reports whether Run
// is to stop.
func (r *Router) control() (stop bool) {
	r.ctl.Lock()
	offset, offsetChanged := r.ctl.offset, r.ctl.offsetChanged
	handover, resume, stop := r.ctl.handover, r.ctl.resume, r.ctl.stop
	links := r.ctl.links
	r.ctl.offsetChanged, r.ctl.handover, r.ctl.resume, r.ctl.links = false, false, false, nil
	r.ctl.Unlock()
	if stop {
		return true
	}
	for _, up := range links {
		r.linkChanged(up)
	}
	now := time.Now()
	if offsetChanged {
		p := effectivePriority(r.cfg.Priority, offset)
		if p != r.m.priority {
			r.log.Info("vrrp: priority changed", "priority", p, "offset", offset)
		}
		r.priority.Store(int32(p))
		r.m.setPriority(now, p)
	}
	if resume {
		r.m.resume()
	}
	if handover {
		r.log.Info("vrrp: handover requested")
		r.m.handover(now)
	}
	return false
}

func (r *Router) handleAdvert(a rxAdvert) {
	if a.priority == 0 {
		r.zeroReceived.Add(1)
	}
	if r.State() == Backup && a.priority != 0 && a.src == r.lastRxFrom && !r.lastRx.IsZero() {
		r.noteGap(a.at.Sub(r.lastRx))
	}
	r.m.receive(a.at, a.src, a.priority, a.interval)
	// Others' advertisements (a weaker router's, say) do not break the
	// series of the master's.
	if r.State() == Backup && a.priority != 0 && a.src == r.m.master {
		r.lastRx, r.lastRxFrom = a.at, a.src
	}
	r.masterInt.Store(int32(r.m.masterInt))
	r.setMaster(r.m.master)
}

func (r *Router) setMaster(a netip.Addr) {
	r.masterMu.Lock()
	r.master = a
	r.masterMu.Unlock()
}

// advertise implements actions: one advertisement to the group or to each
// peer. It does not allocate.
func (r *Router) advertise(priority uint8) {
	if priority == 0 {
		r.zeroSent.Add(1)
	}
	r.adv.Priority = priority
	if !r.src.IsValid() {
		r.sendErrors.Add(1)
		return
	}
	t0 := time.Now()
	n, err := r.sock.send(&r.adv, r.src, r.buf)
	r.sent.Add(uint64(n))
	if err != nil {
		r.sendErrors.Add(1)
		r.log.Debug("vrrp: send advertisement", "err", err)
	}
	if !r.due.IsZero() {
		r.noteSend(t0.Sub(r.due), time.Since(t0))
	}
	// The repeats ride on later advertisements, not on the one that
	// follows the takeover's own announcement.
	if r.announced {
		r.announced = false
	} else if r.garpLeft > 0 && r.State() == Master {
		r.garpLeft--
		r.announce()
	}
}

// noteSend records how late an advertisement was sent (the master's side
// of a false failover) and how long the send call took, and logs them when
// either was over half an interval: every new worst, the others at most
// once a second.
func (r *Router) noteSend(late, took time.Duration) {
	worse := storeMax(&r.worstSend, int64(late))
	worse = storeMax(&r.worstCall, int64(took)) || worse
	half := cs(r.m.advertInt) / 2
	if late > half {
		r.lateSends.Add(1)
	}
	if late > half || took > half {
		// A new worst is always worth a line; the rest are sampled.
		if now := time.Now(); worse || now.Sub(r.lateLog) >= time.Second {
			r.lateLog = now
			r.log.Warn("vrrp: advertisement sent late or slowly", "late", late, "send_call", took,
				"interval", cs(r.m.advertInt), "late_sends", r.lateSends.Load())
		}
	}
}

// storeMax raises a to v if v is larger, and reports whether it did.
func storeMax(a *atomic.Int64, v int64) bool {
	for {
		old := a.Load()
		if v <= old {
			return false
		}
		if a.CompareAndSwap(old, v) {
			return true
		}
	}
}

// noteGap records the time between two advertisements of the master a
// backup follows (the backup's side of a false failover) and logs it when
// it was over 1.5 intervals: every new worst, the others at most once a
// second.
func (r *Router) noteGap(gap time.Duration) {
	worse := storeMax(&r.worstGap, int64(gap))
	if gap > cs(r.m.masterInt)*3/2 {
		r.lateAdverts.Add(1)
		if now := time.Now(); worse || now.Sub(r.lateLog) >= time.Second {
			r.lateLog = now
			r.log.Warn("vrrp: advertisements from the master late", "gap", gap, "interval", cs(r.m.masterInt),
				"master_down", cs(r.m.downInterval()), "late_adverts", r.lateAdverts.Load())
		}
	}
}

// transition implements actions.
func (r *Router) transition(from, to State, why string) {
	now := time.Now()
	r.state.Store(int32(to))
	r.transitions.Add(1)
	r.lastRx = time.Time{} // gaps are measured within one stay in Backup
	r.lastTrans.Store(now.UnixNano())
	r.masterInt.Store(int32(r.m.masterInt))
	r.setMaster(r.m.master)
	if to == Master {
		r.becameMaster.Add(1)
		// Announce first: the gratuitous ARP / NA is what moves the
		// neighbours' traffic here, and the XDP program forwards it
		// without the addresses on the interface; the netlink work of
		// hold (a few hundred microseconds) would only delay the takeover.
		r.garpLeft = max(r.cfg.GratuitousCount-1, 0)
		if r.cfg.GratuitousCount > 0 {
			r.announce()
			r.announced = true
		}
		// After the advertisement that follows (loop does it).
		r.holdPending = true
	} else {
		r.holdPending = false
		r.garpLeft = 0
		r.release(from == Initialize)
	}
	attrs := []any{"from", from, "to", to, "reason", why, "priority", r.m.priority}
	if r.m.master.IsValid() && to != Master {
		attrs = append(attrs, "master", r.m.master)
	}
	r.log.Info("vrrp: state change", attrs...)
	r.notes.push(from, to)
}

// hold puts the virtual addresses on the interface. An address that is
// already there and that we did not add (the address owner's own, at
// priority 255) is left alone, now and when leaving Master.
func (r *Router) hold() {
	link, err := r.nl.LinkByIndex(r.ifindex)
	if err != nil {
		r.log.Warn("vrrp: add virtual addresses", "err", err)
		return
	}
	present := r.present(link)
	for i, p := range r.vips {
		if present[p.Addr()] && !r.added[i] {
			continue
		}
		a := &netlink.Addr{IPNet: prefixNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := r.nl.AddrReplace(link, a); err != nil {
			r.log.Warn("vrrp: add virtual address", "address", p, "err", err)
			continue
		}
		r.added[i] = true
	}
}

// present returns the addresses on the interface.
func (r *Router) present(link netlink.Link) map[netip.Addr]bool {
	addrs, err := r.nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		r.log.Warn("vrrp: list addresses", "err", err)
	}
	m := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			m[ip.Unmap()] = true
		}
	}
	return m
}

// release removes the virtual addresses we put on the interface. At
// startup (stale) it also removes any left behind by an earlier run that
// did not stop cleanly, as keepalived does, except for an address owner
// (priority 255), whose virtual addresses are its own.
func (r *Router) release(stale bool) {
	stale = stale && r.cfg.Priority != 255
	if !stale && !slices.Contains(r.added, true) {
		return
	}
	link, err := r.nl.LinkByIndex(r.ifindex)
	if err != nil {
		r.log.Warn("vrrp: remove virtual addresses", "err", err)
		return
	}
	for i, p := range r.vips {
		if !stale && !r.added[i] {
			continue
		}
		r.added[i] = false
		err := r.nl.AddrDel(link, &netlink.Addr{IPNet: prefixNet(p)})
		if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			r.log.Warn("vrrp: remove virtual address", "address", p, "err", err)
		}
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// announce sends one gratuitous ARP or unsolicited NA per virtual address.
func (r *Router) announce() {
	sa := unix.SockaddrLinklayer{Ifindex: r.ifindex, Halen: 6}
	for _, f := range r.frames {
		sa.Protocol = htons(uint16(f[12])<<8 | uint16(f[13]))
		copy(sa.Addr[:], f[:6])
		if err := unix.Sendto(r.pkt, f, 0, &sa); err != nil {
			r.sendErrors.Add(1)
			r.log.Debug("vrrp: send gratuitous announcement", "err", err)
			continue
		}
		r.garpSent.Add(1)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// refresh reads the interface's MAC and our source address, and rebuilds
// the announcement frames.
func (r *Router) refresh() error {
	link, err := r.nl.LinkByIndex(r.ifindex)
	if err != nil {
		return fmt.Errorf("vrrp: interface %s: %w", r.cfg.Interface, err)
	}
	r.mac = link.Attrs().HardwareAddr
	src, err := r.primaryAddress()
	if err != nil {
		return err
	}
	r.src = src
	r.m.primary = src
	r.sock.setSource(src)
	var ll netip.Addr
	if r.v6 {
		ll = src
	} else if slices.ContainsFunc(r.vips, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		ll, _ = r.linkLocal()
	}
	r.frames = r.frames[:0]
	if len(r.mac) != 6 {
		return nil // no Ethernet: nothing to announce
	}
	for _, p := range r.vips {
		if p.Addr().Is4() {
			r.frames = append(r.frames, garpFrame(r.mac, p.Addr()))
		} else {
			r.frames = append(r.frames, naFrame(r.mac, ll, p.Addr()))
		}
	}
	return nil
}

// primaryAddress is the advertisements' source: for IPv4 the interface's
// primary address (its first that is not secondary, as keepalived does),
// for IPv6 its link-local address (RFC 5798 §5.1.2.1).
func (r *Router) primaryAddress() (netip.Addr, error) {
	if r.v6 {
		return r.linkLocal()
	}
	addrs, err := r.nl.AddrList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: r.ifindex}}, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vrrp: addresses of %s: %w", r.cfg.Interface, err)
	}
	var virtual netip.Addr // an address owner's primary may be virtual
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.Flags&unix.IFA_F_SECONDARY != 0 {
			continue
		}
		if ip = ip.Unmap(); !r.isVirtual(ip) {
			return ip, nil
		}
		if !virtual.IsValid() {
			virtual = ip
		}
	}
	if virtual.IsValid() {
		return virtual, nil
	}
	return netip.Addr{}, fmt.Errorf("vrrp: %s has no IPv4 address to send advertisements from", r.cfg.Interface)
}

func (r *Router) linkLocal() (netip.Addr, error) {
	addrs, err := r.nl.AddrList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: r.ifindex}}, netlink.FAMILY_V6)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vrrp: addresses of %s: %w", r.cfg.Interface, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("vrrp: %s has no IPv6 link-local address to send advertisements from", r.cfg.Interface)
}

func (r *Router) isVirtual(a netip.Addr) bool {
	return slices.ContainsFunc(r.vips, func(p netip.Prefix) bool { return p.Addr() == a })
}

// maxDrain bounds the packets read in one go, so that a flood cannot keep
// the timers from running.
const maxDrain = 256

// drain reads and handles the packets waiting on the socket.
func (r *Router) drain() {
	for range maxDrain {
		p, ok, err := r.sock.readNow()
		if !ok {
			if err != nil {
				r.log.Debug("vrrp: receive", "err", err)
			}
			return
		}
		a, reason, ok := r.validate(&r.rxAdv, p)
		if !ok {
			r.dropped[reason].Add(1)
			continue
		}
		r.handleAdvert(a)
	}
}

// validate applies the checks of RFC 5798 §7.1 to a received packet.
func (r *Router) validate(adv *Advert, p packet) (rxAdvert, DropReason, bool) {
	drop := func(reason DropReason, err error, attrs ...any) (rxAdvert, DropReason, bool) {
		if r.log.Enabled(context.Background(), slog.LevelDebug) {
			attrs = append(attrs, "reason", reason, "source", p.src)
			if err != nil {
				attrs = append(attrs, "err", err)
			}
			r.log.Debug("vrrp: dropped packet", attrs...)
		}
		return rxAdvert{}, reason, false
	}
	if p.short {
		return drop(DropShort, nil)
	}
	// keepalived checks the TTL only for multicast; unicast peers may be
	// routed hops away.
	if p.ttl != TTL && r.multicast {
		return drop(DropTTL, nil, "ttl", p.ttl)
	}
	if err := adv.Unmarshal(p.msg, p.src, p.dst); err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			return drop(pe.Reason, err)
		}
		return drop(DropShort, err)
	}
	if adv.VRID != uint8(r.cfg.VRID) {
		return drop(DropVRID, nil, "vrid", adv.VRID)
	}
	if !r.multicast && !slices.Contains(r.cfg.UnicastPeers, p.src) {
		return drop(DropPeer, nil)
	}
	if adv.MaxAdvertInterval == 0 {
		return drop(DropInterval, nil)
	}
	r.received.Add(1)
	if same := sameSet(adv.Addresses, r.ours); same == r.mismatch {
		r.mismatch = !same
		if !same {
			r.log.Warn("vrrp: advertised addresses differ from ours (accepted, RFC 5798 §7.1)",
				"source", p.src, "theirs", slices.Clone(adv.Addresses), "ours", r.ours)
		}
	}
	if r.mismatch {
		r.mismatches.Add(1)
	}
	return rxAdvert{at: p.at, src: p.src, priority: adv.Priority, interval: int(adv.MaxAdvertInterval)}, 0, true
}

func sameSet(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// notifier calls OnState in order on its own goroutine.
type notifier struct {
	fn    func(old, new State)
	mu    sync.Mutex
	queue [][2]State
	wake  chan struct{}
	done  chan struct{}
	quit  bool
}

func (n *notifier) start(fn func(old, new State)) {
	n.fn = fn
	n.wake = make(chan struct{}, 1)
	n.done = make(chan struct{})
	go n.loop()
}

func (n *notifier) push(from, to State) {
	if n.fn == nil {
		return
	}
	n.mu.Lock()
	n.queue = append(n.queue, [2]State{from, to})
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// stop delivers what is queued and waits for the goroutine to end.
func (n *notifier) stop() {
	n.mu.Lock()
	n.quit = true
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
	<-n.done
}

func (n *notifier) loop() {
	defer close(n.done)
	for range n.wake {
		for {
			n.mu.Lock()
			if len(n.queue) == 0 {
				quit := n.quit
				n.mu.Unlock()
				if quit {
					return
				}
				break
			}
			t := n.queue[0]
			n.queue = n.queue[1:]
			n.mu.Unlock()
			n.fn(t[0], t[1])
		}
	}
}

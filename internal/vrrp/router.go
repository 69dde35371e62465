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
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

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
	guardStop   int // eventfd, written once: the guards end
	realtime    int // SCHED_RR priority of the loop's thread; 0 = none

	// sendMu is held for every advertisement sent (the socket's send
	// state, r.adv and r.buf are shared) and guards guard (guard.go).
	sendMu sync.Mutex
	guard  struct {
		armed    bool          // master: the guards may send
		due      time.Time     // when the loop's next advertisement is due
		interval time.Duration // the advertisement interval
		priority uint8
		covered  time.Time // the due time of the last advertisement sent
		byGuard  bool      // and a guard sent it
	}

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
	lateSends, lateAdverts, guardSent                  atomic.Uint64

	notes notifier

	ran       atomic.Bool
	closeOnce sync.Once
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
		guardStop: -1,
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
	if r.guardStop, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
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
		if r.guardStop >= 0 {
			unix.Close(r.guardStop)
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
	// The guards (guard.go): real-time threads that send a master's
	// advertisement when the loop's CPU has held it up.
	if r.realtime > 0 {
		for _, cpu := range guardCPUs() {
			wg.Go(func() { r.guardLoop(cpu, r.guardStop) })
		}
	}
	defer func() {
		close(done)
		close(linkDone)
		for range links { // until the subscription's goroutine is gone
		}
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(r.guardStop, one[:])
		wg.Wait()
	}()

	errc := make(chan error, 1)
	go func() { errc <- r.loop() }()
	return <-errc
}

// setRealtime makes the calling thread SCHED_RR at prio. The thread must
// be locked to its goroutine. SCHED_FLAG_RESET_ON_FORK: a thread the Go
// runtime starts from this one (a new M for any goroutine) would otherwise
// inherit the real-time policy, and run ordinary goroutines real-time for
// good after the protocol thread and the guards are gone.
func setRealtime(prio int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_RR, Flags: unix.SCHED_FLAG_RESET_ON_FORK, Priority: uint32(prio)}
	return unix.SchedSetAttr(0, &attr, 0)
}

// clearRealtime gives the calling thread the normal policy back. A
// goroutine that exits locked ends its thread, except the process's main
// thread, which the runtime keeps (parked): without this, a protocol
// thread or guard that happened to run there would leave it real-time.
func clearRealtime() {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}
	_ = unix.SchedSetAttr(0, &attr, 0)
}

// loop is the protocol's event loop. It runs on a thread of its own that
// it never unlocks, so that the thread, with its scheduling policy, ends
// with it.
func (r *Router) loop() error {
	runtime.LockOSThread()
	if r.realtime > 0 {
		if err := setRealtime(r.realtime); err != nil {
			r.log.Warn("vrrp: no real-time priority for the advertisement thread; timers may run late under load",
				"priority", r.realtime, "err", err)
		}
		defer clearRealtime()
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
		r.publish()
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

// transition implements actions.
func (r *Router) transition(from, to State, why string) {
	now := time.Now()
	if from == Master {
		r.sendMu.Lock()
		r.disarm()
		r.sendMu.Unlock()
	}
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

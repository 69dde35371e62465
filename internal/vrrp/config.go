package vrrp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
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

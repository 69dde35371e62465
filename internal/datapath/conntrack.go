package datapath

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
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
	return time.Duration(c.jiffies-lastSeen) * time.Second / time.Duration(c.hz)
}

// expired reports whether the fast path treats entry v as a miss: idle for
// more jiffies than its VIP's timeout for its state (bpf/conntrack.h
// ct_expired, the same comparison in the same unit).
func (c kernelClock) expired(v *balancerCtValue, timeout time.Duration) bool {
	return c.jiffies-v.LastSeen > uint32(timeout/time.Second)*c.hz
}

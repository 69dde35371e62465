package datapath

import (
	"fmt"
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

// ConnTimeout returns how long a connection entry of proto in state s may
// stay idle before the fast path treats it as a miss: the compiled-in
// defaults of enum fulcrum_ct_timeout, as the program reads them.
func ConnTimeout(proto Proto, s ConnState) time.Duration {
	secs := balancerFulcrumCtTimeoutCT_TIMEOUT_UDP
	if proto == TCP {
		switch s {
		case ConnSYN:
			secs = balancerFulcrumCtTimeoutCT_TIMEOUT_TCP_SYN
		case ConnFIN:
			secs = balancerFulcrumCtTimeoutCT_TIMEOUT_TCP_FIN
		case ConnClosed:
			secs = balancerFulcrumCtTimeoutCT_TIMEOUT_TCP_CLOSED
		default:
			secs = balancerFulcrumCtTimeoutCT_TIMEOUT_TCP_ESTABLISHED
		}
	}
	return time.Duration(secs) * time.Second
}

// kernelClock is the clock connection entries are stamped with: jiffies,
// truncated to 32 bits as last_seen holds them, and the tick rate.
type kernelClock struct {
	jiffies uint32
	hz      uint32
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
	return kernelClock{jiffies: uint32(c.Jiffies), hz: c.Hz}, nil
}

// idle returns how long an entry stamped at lastSeen has been idle.
func (c kernelClock) idle(lastSeen uint32) time.Duration {
	return time.Duration(c.jiffies-lastSeen) * time.Second / time.Duration(c.hz)
}

// expired reports whether the fast path treats entry v of proto as a miss:
// idle for more jiffies than its state's timeout (bpf/conntrack.h
// ct_expired, the same comparison in the same unit).
func (c kernelClock) expired(proto Proto, v *balancerCtValue) bool {
	timeout := uint32(ConnTimeout(proto, ConnState(v.State))/time.Second) * c.hz
	return c.jiffies-v.LastSeen > timeout
}

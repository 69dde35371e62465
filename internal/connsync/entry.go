package connsync

import (
	"fmt"
	"net/netip"
	"time"
)

// State is a TCP connection entry's state as the sender's table holds it.
// Its values are the wire's, fixed by the protocol version; they equal
// enum fulcrum_ct_state (bpf/consts.h, datapath.ConnState) today, but the
// installer converts by name, not by value, so that either can change.
// UDP entries are StateEstablished.
type State uint8

// The states.
const (
	StateEstablished State = 0
	StateSYN         State = 1
	StateFIN         State = 2
	StateClosed      State = 3
)

var stateNames = [...]string{StateEstablished: "established", StateSYN: "syn", StateFIN: "fin", StateClosed: "closed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// The IP protocols an entry may carry.
const (
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)

// MaxLifetime is the longest remaining lifetime an entry carries: the
// datapath's longest timeout (datapath.MaxConnTimeout). Longer ones are
// sent as MaxLifetime.
const MaxLifetime = 7 * 24 * time.Hour

// Entry is one connection as a peer learns it.
type Entry struct {
	// Client is the client's address and port, VIP the service's; both
	// of one family (the entry's). IPv4 is plain IPv4, not 4-in-6.
	Client netip.AddrPort
	VIP    netip.AddrPort
	// Proto is ProtoTCP or ProtoUDP.
	Proto uint8
	// Backend is the backend's address, of either family (an ipip VIP
	// may reach IPv6 backends over IPv4 clients). It is an address, not
	// a backend id: ids are local to a node.
	Backend netip.Addr
	// State is the TCP state; StateEstablished for UDP.
	State State
	// Lifetime is how long the entry would live at the sender without
	// another packet (its state's idle timeout minus its idle time), in
	// whole seconds on the wire (rounded up, at most MaxLifetime). The
	// receiver keeps the entry that long, as the sender would.
	Lifetime time.Duration
	// Idle is how long the entry has been idle at the sender: local, not
	// sent (the lifetime says what the peer needs). A Source fills it in
	// so that the refresh (Config.RefreshInterval) can pick the entries
	// that saw a packet since its previous walk; 0 counts as just seen.
	Idle time.Duration
}

// IPv6 reports whether the entry's client and VIP are IPv6.
func (e *Entry) IPv6() bool { return e.Client.Addr().Is6() }

func (e Entry) String() string {
	proto := "tcp"
	if e.Proto == ProtoUDP {
		proto = "udp"
	}
	return fmt.Sprintf("%s %s -> %s via %s %s %s", proto, e.Client, e.VIP, e.Backend, e.State, e.Lifetime)
}

// check says what makes e unsendable; "" if nothing.
func (e *Entry) check() string {
	c, v, b := e.Client.Addr(), e.VIP.Addr(), e.Backend
	switch {
	case !c.IsValid() || !v.IsValid() || !b.IsValid():
		return "an address is missing"
	case c.Is4In6() || v.Is4In6() || b.Is4In6():
		return "an IPv4 address is written as IPv4-mapped IPv6"
	case c.Zone() != "" || v.Zone() != "" || b.Zone() != "":
		return "an address has a zone"
	case c.Is4() != v.Is4():
		return "client and VIP are of different families"
	case e.Proto != ProtoTCP && e.Proto != ProtoUDP:
		return fmt.Sprintf("protocol %d is neither tcp (6) nor udp (17)", e.Proto)
	case e.State > StateClosed:
		return fmt.Sprintf("%s is not a state", e.State)
	case e.Proto == ProtoUDP && e.State != StateEstablished:
		return "a udp entry is always established"
	case e.Lifetime < 0:
		return "the lifetime is negative"
	}
	return ""
}

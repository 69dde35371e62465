package datapath

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"strings"
	"unsafe"
)

// Proto is an IP protocol a VIP serves.
type Proto uint8

// The protocols a VIP may serve.
const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProto parses "tcp" or "udp".
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q: want tcp or udp", s)
}

// Mode is how the fast path forwards a VIP's packets to its backends.
type Mode uint8

// The forwarding modes. Their values are those of enum fulcrum_mode.
const (
	// ModeDSR rewrites the destination MAC to the backend's (L2 direct
	// server return): backends hold the VIP on lo and share the LB's L2
	// segment.
	ModeDSR = Mode(balancerFulcrumModeMODE_DSR)
	// ModeIPIP encapsulates the packet in an outer IPv4 or IPv6 header
	// addressed to the backend (IPIP, or protocol 41 for IPv6 inside),
	// routed by the kernel's FIB: backends may be on any subnet, of either
	// family, and run `fulcrum decap`.
	ModeIPIP = Mode(balancerFulcrumModeMODE_IPIP)
)

var modeNames = map[Mode]string{ModeDSR: "dsr", ModeIPIP: "ipip"}

func (m Mode) String() string {
	if s, ok := modeNames[m]; ok {
		return s
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses a mode name such as "dsr".
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if strings.EqualFold(s, name) {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown mode %q: want one of %s", s, strings.Join(ModeNames(), ", "))
}

// ModeNames lists the modes this build supports.
func ModeNames() []string {
	return []string{"dsr", "ipip"}
}

// VIP identifies a virtual service: address, port (0 = every port) and
// protocol.
type VIP struct {
	Addr  netip.Addr
	Port  uint16
	Proto Proto
}

func (v VIP) String() string {
	return fmt.Sprintf("%s/%s", v.Proto, netip.AddrPortFrom(v.Addr, v.Port))
}

// VIPConfig is how a VIP is served.
type VIPConfig struct {
	Mode Mode
	// RingSize is the Maglev table size M, a prime; 0 means the default.
	RingSize uint32
	// NoConntrack sends every packet through the ring without a
	// connection-table entry, for stateless (e.g. UDP) services.
	NoConntrack bool
	// SourceHash hashes on the client address only, so that all of a
	// client's flows reach the same backend.
	SourceHash bool
	// RoundRobin gives new flows (a TCP SYN, a UDP packet without an
	// entry) the backends in turn, by weight (rr.go); other packets
	// without an entry take the ring. It needs the connection table.
	RoundRobin bool
	// ResponseTime measures the backends' response times passively
	// (rtt.go): a TCP flow's time from SYN to first ACK. It needs the
	// connection table (the ACK finds its SYN through the entry's state)
	// and TCP.
	ResponseTime bool
	// LeastConn sends a new flow (a TCP SYN, or a UDP packet the table
	// misses) to the backend of lowest (active + 1) / weight (leastconn.go,
	// bpf/sched.h). It needs the connection table.
	LeastConn bool
	// LeastTime sends a new flow to the backend of lowest (active + 1) x
	// response time / weight (leasttime.go, bpf/sched.h), the response
	// time being what SetBackendCost wrote. Like LeastConn it needs the
	// connection table and the 5-tuple hash; ResponseTime is how the
	// fast path measures the times it compares (or the daemon writes the
	// probes' times).
	LeastTime bool
	// PassUnparseable hands fragments and malformed packets for the VIP's
	// address to the host stack instead of dropping them. Fragments carry no
	// ports, so the policy is per address: any VIP on the address that
	// drops makes the address drop.
	PassUnparseable bool
	// Timeouts are how long the VIP's connection entries may stay idle;
	// zero fields take DefaultConnTimeouts.
	Timeouts ConnTimeouts
	// SourceRanges, when not zero, are the only client prefixes the VIP
	// serves (of its family); other clients are dropped and counted
	// (srcranges.go).
	SourceRanges SourceRanges
	// Pools, when not zero, split the VIP's clients by source prefix,
	// each pool with a ring over some of its backends (pools.go).
	Pools Pools
}

// Backend is one server behind a VIP.
type Backend struct {
	Addr netip.Addr
	// MAC is the backend's hardware address, the next hop in dsr mode.
	MAC net.HardwareAddr
	// Weight is the backend's share of new flows; 0 drains it: no new
	// flows, its established flows stay.
	Weight uint32
}

// MaxWeight is the largest backend weight: what the backend entry's
// weight field holds (a __u16 in bpf/types.h), so it follows the C struct.
const MaxWeight = 1<<(8*unsafe.Sizeof(balancerBackend{}.Weight)) - 1

// be32 returns the 4 bytes of an IPv4 address as the C struct holds them.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.LittleEndian.Uint32(b[:])
}

// be128 returns an IPv6 (or IPv4, in the first word) address as the C
// struct's __be32[4] holds it.
func be128(a netip.Addr) (out [4]uint32) {
	if a.Is4() {
		out[0] = be32(a)
		return out
	}
	b := a.As16()
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	return out
}

// be16 returns a port in network byte order as the C struct holds it.
func be16(p uint16) uint16 {
	return bits.ReverseBytes16(p)
}

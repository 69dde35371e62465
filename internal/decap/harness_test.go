package decap

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

// The shared fast-path test helpers, under the names this package's tests use.
const (
	xdpAborted = testpacket.XDPAborted
	xdpDrop    = testpacket.XDPDrop
	xdpPass    = testpacket.XDPPass
)

var (
	verdictNames = testpacket.VerdictNames
	runProg      = testpacket.Run
	hexDiff      = testpacket.HexDiff
)

// newTestDecap loads the program with the given VIPs.
func newTestDecap(tb testing.TB, vips ...netip.Addr) *Decap {
	tb.Helper()
	require.BPF(tb)
	d, err := Load()
	if err != nil {
		tb.Fatalf("Load: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	if err := d.SetVIPs(vips); err != nil {
		tb.Fatalf("SetVIPs(%v): %v", vips, err)
	}
	return d
}

func counterDelta(before, after map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64)
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func formatCounters(m map[string]uint64) string {
	var parts []string
	for _, name := range CounterNames() {
		if v, ok := m[name]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d", name, v))
		}
	}
	for name := range m {
		if !slices.Contains(CounterNames(), name) {
			parts = append(parts, fmt.Sprintf("unknown %s=%d", name, m[name]))
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// The ECN field's codepoints (RFC 3168).
const (
	notECT = 0
	ect1   = 1
	ect0   = 2
	ce     = 3
)

// encap describes one frame as the balancer's ipip mode emits it: the
// inner packet's own Ethernet and VLAN header, then an outer IP header,
// then the inner IP packet.
type encap struct {
	outerSrc, outerDst netip.Addr
	// outerTOS is the outer TOS or traffic class (DSCP and ECN).
	outerTOS uint8
	// outerIHL, if above 5, pads the outer IPv4 header with NOP options.
	outerIHL uint8
	// flowLabel of an outer IPv6 header.
	flowLabel uint32
	inner     testpacket.Packet
	// innerECN, if set, is written into the inner header (as ECN+1, so
	// the zero value leaves it alone).
	innerECN uint8
}

// Outer addresses: from the balancer's source prefix to the backend.
var (
	lbSrc4 = addr("198.18.0.200")
	lbSrc6 = addr("2001:db8:2::200")
	be4    = addr("198.18.0.11")
	be6    = addr("2001:db8:2::11")
)

// outer4 encapsulates inner in IPv4, outer6 in IPv6.
func outer4(inner testpacket.Packet) encap {
	return encap{outerSrc: lbSrc4, outerDst: be4, inner: inner}
}

func outer6(inner testpacket.Packet) encap {
	return encap{outerSrc: lbSrc6, outerDst: be6, flowLabel: 0x5a5a5, inner: inner}
}

// l2len is the length of a frame's Ethernet and VLAN headers.
func l2len(p testpacket.Packet) int { return 14 + 4*len(p.VLANs) }

// innerFrame is what the program must hand the stack: the inner packet
// with the same L2 header, its EtherType naming the inner family.
func (e encap) innerFrame() []byte {
	b := e.inner.Build()
	if e.innerECN != 0 {
		setECN(b[l2len(e.inner):], e.innerECN-1)
	}
	return b
}

// setECN writes the ECN field of the IP packet ip and, for IPv4, lets
// gopacket recompute the header checksum.
func setECN(ip []byte, ecn uint8) {
	if ip[0]>>4 == 6 {
		ip[1] = ip[1]&^0x30 | ecn<<4
		return
	}
	var h layers.IPv4
	if err := h.DecodeFromBytes(ip, gopacket.NilDecodeFeedback); err != nil {
		panic(err)
	}
	h.TOS = h.TOS&^3 | ecn
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &h, gopacket.Payload(h.Payload)); err != nil {
		panic(err)
	}
	copy(ip, buf.Bytes())
}

// frame builds the encapsulated frame with gopacket: Ethernet (and VLAN
// tags) with the outer family's EtherType, the outer header with lengths
// and checksum computed, the inner IP packet as payload.
func (e encap) frame() []byte {
	in := e.innerFrame()
	innerIP := in[l2len(e.inner):]
	proto := layers.IPProtocolIPv4
	if e.inner.Src.Is6() {
		proto = layers.IPProtocolIPv6
	}
	etype := layers.EthernetTypeIPv4
	var outer gopacket.SerializableLayer
	if e.outerSrc.Is4() {
		ip := &layers.IPv4{
			Version: 4, IHL: 5, TOS: e.outerTOS, TTL: 64, Protocol: proto, Flags: layers.IPv4DontFragment,
			SrcIP: e.outerSrc.AsSlice(), DstIP: e.outerDst.AsSlice(),
		}
		// NOP options (one byte each) up to the IHL.
		for range 4 * (int(e.outerIHL) - 5) {
			ip.Options = append(ip.Options, layers.IPv4Option{OptionType: 1})
		}
		outer = ip
	} else {
		etype = layers.EthernetTypeIPv6
		outer = &layers.IPv6{
			Version: 6, TrafficClass: e.outerTOS, FlowLabel: e.flowLabel, NextHeader: proto, HopLimit: 64,
			SrcIP: e.outerSrc.AsSlice(), DstIP: e.outerDst.AsSlice(),
		}
	}
	ls := []gopacket.SerializableLayer{}
	eth := &layers.Ethernet{SrcMAC: e.inner.SrcMAC, DstMAC: e.inner.DstMAC, EthernetType: etype}
	ls = append(ls, eth)
	if len(e.inner.VLANs) > 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		for i, id := range e.inner.VLANs {
			next := layers.EthernetTypeDot1Q
			if i == len(e.inner.VLANs)-1 {
				next = etype
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: id, Type: next})
		}
	}
	ls = append(ls, outer, gopacket.Payload(innerIP))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Clients, VIPs and MACs of the fixtures.
var (
	client4 = addr("198.19.1.2")
	client6 = addr("2001:db8:1::2")
	vip4    = addr("203.0.113.10")
	vip4b   = addr("203.0.113.11")
	vip6    = addr("2001:db8:ffff::10")
	vip6b   = addr("2001:db8:ffff::11")
	macLB   = mustMAC("02:00:00:00:1b:01")
	macBE   = mustMAC("02:00:00:00:0b:11")
)

// pkt is a client's packet to dst, as the balancer sends it on: from the
// balancer's MAC to the backend's.
func pkt(dst netip.Addr, proto layers.IPProtocol, sport, dport uint16) testpacket.Packet {
	src := client4
	if dst.Is6() {
		src = client6
	}
	return testpacket.Packet{
		SrcMAC: macLB, DstMAC: macBE,
		Src: src, Dst: dst,
		Proto: proto, Sport: sport, Dport: dport,
		Payload: []byte("fulcrum decap"),
	}
}

func tcp(dst netip.Addr, sport, dport uint16) testpacket.Packet {
	return pkt(dst, layers.IPProtocolTCP, sport, dport)
}

func udp(dst netip.Addr, sport, dport uint16) testpacket.Packet {
	return pkt(dst, layers.IPProtocolUDP, sport, dport)
}

// Package testpacket builds packets for fast-path tests, benchmarks and
// fuzzing: Ethernet with optional VLAN tags, IPv4 with options or IPv6 with
// extension headers, TCP or UDP with valid checksums. It wraps gopacket's
// serializers, so lengths and checksums are computed by a library that does
// not share code with the program under test.
package testpacket

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Packet describes one frame. The zero value of an optional field leaves
// that feature out.
type Packet struct {
	SrcMAC, DstMAC net.HardwareAddr
	// VLANs are 802.1Q tags, outermost first.
	VLANs []uint16

	Src, Dst netip.Addr
	// TTL is the IPv4 TTL or IPv6 hop limit; 0 means 64.
	TTL uint8
	// IPv4Options are raw option bytes (padded to 4 bytes by the builder).
	IPv4Options []byte
	// FragOffset (in 8-byte units) and MoreFragments make an IPv4 fragment.
	FragOffset    uint16
	MoreFragments bool
	// IPv6Ext are raw IPv6 extension headers as (type, body) pairs; the
	// builder fills each header's next-header byte.
	IPv6Ext []IPv6Ext

	Proto        layers.IPProtocol
	Sport, Dport uint16
	// TCP flags; with none set a TCP packet is a bare ACK.
	SYN, ACK, FIN, RST bool
	Payload            []byte
}

// IPv6Ext is one IPv6 extension header: its type (0 hop-by-hop, 43
// routing, 44 fragment, 60 destination options) and its bytes after the
// next-header byte.
type IPv6Ext struct {
	Type uint8
	Body []byte
}

// HopByHop returns a hop-by-hop header padded with a PadN option.
func HopByHop() IPv6Ext {
	// hdr ext len 0 (8 bytes): next, len, PadN(type 1, len 4, 4 zero bytes)
	return IPv6Ext{Type: 0, Body: []byte{0, 1, 4, 0, 0, 0, 0}}
}

// DestOpts returns a 16-byte destination options header.
func DestOpts() IPv6Ext {
	return IPv6Ext{Type: 60, Body: []byte{1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
}

// Fragment returns an IPv6 fragment header with an offset (8-byte units)
// and the M flag.
func Fragment(offset uint16, more bool) IPv6Ext {
	b := make([]byte, 7)
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[1:], v)
	binary.BigEndian.PutUint32(b[3:], 0x1234)
	return IPv6Ext{Type: 44, Body: b}
}

// Build serializes the packet. It panics on a description gopacket cannot
// serialize, which is a bug in the test.
func (p Packet) Build() []byte {
	b, err := p.build()
	if err != nil {
		panic(fmt.Sprintf("testpacket: %v", err))
	}
	return b
}

func (p Packet) build() ([]byte, error) {
	src, dst := p.SrcMAC, p.DstMAC
	if src == nil {
		src = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	}
	if dst == nil {
		dst = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	}
	ttl := p.TTL
	if ttl == 0 {
		ttl = 64
	}
	var ls []gopacket.SerializableLayer
	ipType := layers.EthernetTypeIPv4
	if p.Src.Is6() {
		ipType = layers.EthernetTypeIPv6
	}
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: ipType}
	ls = append(ls, eth)
	if len(p.VLANs) > 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		for i, id := range p.VLANs {
			next := layers.EthernetTypeDot1Q
			if i == len(p.VLANs)-1 {
				next = ipType
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: id, Type: next})
		}
	}

	var netLayer gopacket.NetworkLayer
	if p.Src.Is4() {
		ip := &layers.IPv4{
			Version: 4, TTL: ttl, Protocol: p.Proto, Id: 1,
			SrcIP: p.Src.AsSlice(), DstIP: p.Dst.AsSlice(),
			FragOffset: p.FragOffset,
		}
		if p.MoreFragments {
			ip.Flags = layers.IPv4MoreFragments
		}
		if len(p.IPv4Options) > 0 {
			opts := append([]byte(nil), p.IPv4Options...)
			for len(opts)%4 != 0 {
				opts = append(opts, 0) // end-of-list padding
			}
			// gopacket serializes options one by one; pass the bytes as
			// one opaque option whose type byte is the first byte.
			ip.Options = []layers.IPv4Option{{OptionType: opts[0], OptionLength: uint8(len(opts)), OptionData: opts[2:]}}
			ip.Options[0].OptionData = opts[2:]
			ip.IHL = uint8(5 + len(opts)/4)
		}
		ls = append(ls, ip)
		netLayer = ip
	} else {
		ip := &layers.IPv6{
			Version: 6, HopLimit: ttl, NextHeader: p.Proto,
			SrcIP: p.Src.AsSlice(), DstIP: p.Dst.AsSlice(),
		}
		ls = append(ls, ip)
		netLayer = ip
		if len(p.IPv6Ext) > 0 {
			ip.NextHeader = layers.IPProtocol(p.IPv6Ext[0].Type)
			for i, x := range p.IPv6Ext {
				next := uint8(p.Proto)
				if i+1 < len(p.IPv6Ext) {
					next = p.IPv6Ext[i+1].Type
				}
				ls = append(ls, gopacket.Payload(append([]byte{next}, x.Body...)))
			}
		}
	}

	switch p.Proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{
			SrcPort: layers.TCPPort(p.Sport), DstPort: layers.TCPPort(p.Dport),
			Seq: 1000, Ack: 2000, Window: 65535,
			SYN: p.SYN, ACK: p.ACK || (!p.SYN && !p.RST), FIN: p.FIN, RST: p.RST,
		}
		if p.SYN && !p.ACK {
			tcp.Ack = 0
		}
		if err := tcp.SetNetworkLayerForChecksum(netLayer); err != nil {
			return nil, err
		}
		ls = append(ls, tcp)
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.Sport), DstPort: layers.UDPPort(p.Dport)}
		if err := udp.SetNetworkLayerForChecksum(netLayer); err != nil {
			return nil, err
		}
		ls = append(ls, udp)
	}
	ls = append(ls, gopacket.Payload(p.Payload))

	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

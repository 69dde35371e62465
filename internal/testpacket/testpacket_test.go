package testpacket

import (
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// TestRoundTrip decodes what Build produced and checks the fields the fast
// path reads, so a builder bug cannot hide behind a matching program bug.
func TestRoundTrip(t *testing.T) {
	p := Packet{
		VLANs: []uint16{7},
		Src:   netip.MustParseAddr("198.18.0.100"), Dst: netip.MustParseAddr("203.0.113.10"),
		IPv4Options: []byte{0x94, 0x04, 0, 0}, // router alert
		Proto:       layers.IPProtocolTCP, Sport: 40000, Dport: 80, SYN: true,
		Payload: []byte("hello"),
	}
	pkt := gopacket.NewPacket(p.Build(), layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("decode: %v", el.Error())
	}
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip.IHL != 6 {
		t.Errorf("IHL = %d, want 6", ip.IHL)
	}
	tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp.SrcPort != 40000 || tcp.DstPort != 80 || !tcp.SYN || tcp.ACK {
		t.Errorf("tcp = %v:%v syn=%v ack=%v, want 40000:80 syn=true ack=false", tcp.SrcPort, tcp.DstPort, tcp.SYN, tcp.ACK)
	}
	if v := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q); v.VLANIdentifier != 7 {
		t.Errorf("vlan = %d, want 7", v.VLANIdentifier)
	}

	p6 := Packet{
		Src: netip.MustParseAddr("2001:db8:1::2"), Dst: netip.MustParseAddr("2001:db8:ffff::10"),
		IPv6Ext: []IPv6Ext{HopByHop(), DestOpts()},
		Proto:   layers.IPProtocolUDP, Sport: 5353, Dport: 53,
	}
	pkt = gopacket.NewPacket(p6.Build(), layers.LayerTypeEthernet, gopacket.Default)
	udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok {
		t.Fatalf("no UDP layer after extension headers: %v", pkt)
	}
	if udp.DstPort != 53 {
		t.Errorf("udp dport = %d, want 53", udp.DstPort)
	}
}

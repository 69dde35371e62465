package datapath

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// xdpMD is struct xdp_md, the context BPF_PROG_RUN takes for XDP.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// ipipEnv is a namespace in which the FIB knows the way to the backends:
// lb's eth0 (198.18.0.2, 2001:db8:2::2) with gateways 198.18.0.1 and
// 2001:db8:2::1 whose MACs are permanent neighbours, and one route
// (198.18.9.0/24 via 198.18.0.9) whose gateway never resolves.
type ipipEnv struct {
	lb      *testenv.Host
	ifindex int
	ourMAC  net.HardwareAddr
	d       *Datapath
	encap   EncapConfig
}

var (
	gwMAC4 = mustMAC("02:00:00:00:99:01")
	gwMAC6 = mustMAC("02:00:00:00:99:06")

	remote4 = []Backend{{Addr: addr("198.18.2.11"), Weight: 1}, {Addr: addr("198.18.2.12"), Weight: 2}, {Addr: addr("198.18.2.13"), Weight: 1}}
	remote6 = []Backend{{Addr: addr("2001:db8:3::11"), Weight: 1}, {Addr: addr("2001:db8:3::12"), Weight: 1}, {Addr: addr("2001:db8:3::13"), Weight: 3}}
	unreach = []Backend{{Addr: addr("198.18.9.11"), Weight: 1}}

	vip4in4   = VIP{Addr: addr("203.0.113.80"), Port: 80, Proto: TCP}
	vip6in6   = VIP{Addr: addr("2001:db8:ffff::80"), Port: 80, Proto: TCP}
	vip4in6   = VIP{Addr: addr("203.0.113.81"), Port: 53, Proto: UDP}
	vip6in4   = VIP{Addr: addr("2001:db8:ffff::81"), Port: 53, Proto: UDP}
	vipNoHop  = VIP{Addr: addr("203.0.113.82"), Port: 80, Proto: TCP}
	ipipVIPs  = map[VIP][]Backend{vip4in4: remote4, vip6in6: remote6, vip4in6: remote6, vip6in4: remote4, vipNoHop: unreach}
	ipipEncap = EncapConfig{SourceV4: netip.MustParsePrefix("198.18.1.0/24"), SourceV6: netip.MustParsePrefix("2001:db8:4::/64")}
)

func newIPIPEnv(t testing.TB) *ipipEnv {
	require.BPF(t)
	require.Netns(t)
	env := testenv.NewEnv(t)
	lb, err := env.NewNamespace("lb")
	if err != nil {
		t.Fatal(err)
	}
	gw, err := env.NewNamespace("gw")
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.VethPair(lb, gw, "eth0", "eth0"); err != nil {
		t.Fatal(err)
	}
	steps := []error{
		// bpf_fib_lookup answers only with forwarding on.
		lb.Sysctl("net.ipv4.conf.eth0.forwarding", "1"),
		lb.Sysctl("net.ipv6.conf.eth0.forwarding", "1"),
		lb.AddAddr("eth0", netip.MustParsePrefix("198.18.0.2/24")),
		lb.AddAddr("eth0", netip.MustParsePrefix("2001:db8:2::2/64")),
		lb.AddNeighbor("eth0", addr("198.18.0.1"), gwMAC4),
		lb.AddNeighbor("eth0", addr("2001:db8:2::1"), gwMAC6),
	}
	steps = append(steps,
		lb.AddRoute(netip.MustParsePrefix("198.18.2.0/24"), addr("198.18.0.1")),
		lb.AddRoute(netip.MustParsePrefix("2001:db8:3::/64"), addr("2001:db8:2::1")),
		lb.AddRoute(netip.MustParsePrefix("198.18.9.0/24"), addr("198.18.0.9")),
	)
	for _, err := range steps {
		if err != nil {
			t.Fatal(err)
		}
	}
	l, err := lb.Link("eth0")
	if err != nil {
		t.Fatal(err)
	}
	e := &ipipEnv{lb: lb, ifindex: l.Attrs().Index, ourMAC: l.Attrs().HardwareAddr, encap: ipipEncap}
	e.d = newTestDatapath(t)
	if err := e.d.SetEncap(e.encap); err != nil {
		t.Fatal(err)
	}
	for vip, bs := range ipipVIPs {
		if err := e.d.AddVIP(vip, VIPConfig{Mode: ModeIPIP, RingSize: smallRing}, bs); err != nil {
			t.Fatalf("AddVIP(%s): %v", vip, err)
		}
	}
	return e
}

// run pushes a frame through the balancer as if it arrived on lb's eth0:
// bpf_fib_lookup resolves in the namespace of the calling thread.
func (e *ipipEnv) run(t testing.TB, in []byte) (uint32, []byte) {
	t.Helper()
	var ret uint32
	out := make([]byte, len(in)+512)
	err := e.lb.Do(func() error {
		opts := ebpf.RunOptions{Data: in, DataOut: out,
			Context: xdpMD{DataEnd: uint32(len(in)), IngressIfindex: uint32(e.ifindex)}}
		var err error
		ret, err = e.d.Program().Run(&opts)
		out = opts.DataOut
		return err
	})
	if err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, out
}

// expectEncap builds the frame the balancer must emit for p: the L2
// header with the next hop's MACs, an outer header to the backend Go
// predicts, and the inner IP packet byte for byte.
func (e *ipipEnv) expectEncap(t *testing.T, p testpacket.Packet, in []byte, vip VIP) ([]byte, Backend) {
	t.Helper()
	be := expectBackend(t, ipipVIPs[vip], smallRing, p.Src, p.Dst, p.Sport, p.Dport, Proto(p.Proto), false)
	hash := flowhash.Flow(p.Src, p.Dst, p.Sport, p.Dport, uint8(p.Proto))
	l3off := 14 + 4*len(p.VLANs)
	// The inner packet by its own length; Ethernet padding after it stays
	// where it was, after the (now encapsulated) packet.
	l3len := int(in[l3off+2])<<8 | int(in[l3off+3])
	if p.Src.Is6() {
		l3len = 40 + (int(in[l3off+4])<<8 | int(in[l3off+5]))
	}
	inner, padding := in[l3off:l3off+l3len], in[l3off+l3len:]
	innerProto := layers.IPProtocolIPv4
	if p.Src.Is6() {
		innerProto = layers.IPProtocolIPv6
	}
	tos := inner[1]
	if p.Src.Is6() {
		tos = inner[0]<<4 | inner[1]>>4
	}
	dmac, outerType := gwMAC4, layers.EthernetTypeIPv4
	if be.Addr.Is6() {
		dmac, outerType = gwMAC6, layers.EthernetTypeIPv6
	}
	eth := &layers.Ethernet{SrcMAC: e.ourMAC, DstMAC: dmac, EthernetType: outerType}
	ls := []gopacket.SerializableLayer{eth}
	if len(p.VLANs) > 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		for i, id := range p.VLANs {
			next := layers.EthernetTypeDot1Q
			if i == len(p.VLANs)-1 {
				next = outerType
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: id, Type: next})
		}
	}
	src := OuterSource(e.encap, hash, be.Addr.Is6())
	if !e.encap.SourceV4.Contains(src) && !e.encap.SourceV6.Contains(src) {
		t.Fatalf("outer source %s is outside the configured prefixes", src)
	}
	if be.Addr.Is4() {
		ls = append(ls, &layers.IPv4{Version: 4, IHL: 5, TOS: tos, Flags: layers.IPv4DontFragment, TTL: 64,
			Protocol: innerProto, SrcIP: src.AsSlice(), DstIP: be.Addr.AsSlice()})
	} else {
		ls = append(ls, &layers.IPv6{Version: 6, TrafficClass: tos, FlowLabel: hash & 0xfffff, NextHeader: innerProto,
			HopLimit: 64, SrcIP: src.AsSlice(), DstIP: be.Addr.AsSlice()})
	}
	ls = append(ls, gopacket.Payload(inner))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append(buf.Bytes(), padding...), be
}

func TestIPIPFixtures(t *testing.T) {
	e := newIPIPEnv(t)
	syn := func(p testpacket.Packet) testpacket.Packet { p.SYN = true; return p }
	cases := []struct {
		name    string
		in      testpacket.Packet
		vip     VIP
		verdict uint32
		stats   map[Stat]uint64
	}{
		{"4in4 tcp syn", syn(pkt(client4, "203.0.113.80", TCP, 50001, 80)), vip4in4, xdpTX, map[Stat]uint64{StatCtSYN: 1, StatTxIPIP: 1}},
		{"4in4 tcp ack, miss", pkt(client4, "203.0.113.80", TCP, 50002, 80), vip4in4, xdpTX, map[Stat]uint64{StatCtMiss: 1, StatTxIPIP: 1}},
		{"4in4 tcp ack, hit", pkt(client4, "203.0.113.80", TCP, 50002, 80), vip4in4, xdpTX, map[Stat]uint64{StatCtHit: 1, StatTxIPIP: 1}},
		{"4in4 with a VLAN tag", func() testpacket.Packet {
			p := syn(pkt(client4, "203.0.113.80", TCP, 50003, 80))
			p.VLANs = []uint16{7}
			return p
		}(), vip4in4, xdpTX, map[Stat]uint64{StatCtSYN: 1, StatTxIPIP: 1}},
		{"4in4 with two VLAN tags", func() testpacket.Packet {
			p := syn(pkt(client4, "203.0.113.80", TCP, 50004, 80))
			p.VLANs = []uint16{7, 8}
			return p
		}(), vip4in4, xdpTX, map[Stat]uint64{StatCtSYN: 1, StatTxIPIP: 1}},
		{"4in4 keeps TOS", func() testpacket.Packet {
			p := syn(pkt(client4, "203.0.113.80", TCP, 50005, 80))
			p.IPv4Options = []byte{1, 1, 1, 1}
			return p
		}(), vip4in4, xdpTX, map[Stat]uint64{StatCtSYN: 1, StatTxIPIP: 1}},
		{"6in6 tcp syn", syn(pkt(client6, "2001:db8:ffff::80", TCP, 50011, 80)), vip6in6, xdpTX, map[Stat]uint64{StatCtSYN: 1, StatTxIPIP: 1}},
		{"6in6 tcp ack, miss", pkt(client6, "2001:db8:ffff::80", TCP, 50012, 80), vip6in6, xdpTX, map[Stat]uint64{StatCtMiss: 1, StatTxIPIP: 1}},
		{"6in6 tcp ack, hit", pkt(client6, "2001:db8:ffff::80", TCP, 50012, 80), vip6in6, xdpTX, map[Stat]uint64{StatCtHit: 1, StatTxIPIP: 1}},
		{"6in6 with extension headers", func() testpacket.Packet {
			p := syn(pkt(client6, "2001:db8:ffff::80", TCP, 50013, 80))
			p.IPv6Ext = []testpacket.IPv6Ext{testpacket.HopByHop()}
			return p
		}(), vip6in6, xdpTX, map[Stat]uint64{StatCtSYN: 1, StatTxIPIP: 1}},
		{"4in6 udp", pkt(client4, "203.0.113.81", UDP, 50021, 53), vip4in6, xdpTX, map[Stat]uint64{StatCtMiss: 1, StatTxIPIP: 1}},
		{"4in6 udp, hit", pkt(client4, "203.0.113.81", UDP, 50021, 53), vip4in6, xdpTX, map[Stat]uint64{StatCtHit: 1, StatTxIPIP: 1}},
		{"6in4 udp", pkt(client6, "2001:db8:ffff::81", UDP, 50031, 53), vip6in4, xdpTX, map[Stat]uint64{StatCtMiss: 1, StatTxIPIP: 1}},
		{"6in4 udp with a VLAN tag", func() testpacket.Packet {
			p := pkt(client6, "2001:db8:ffff::81", UDP, 50032, 53)
			p.VLANs = []uint16{9}
			return p
		}(), vip6in4, xdpTX, map[Stat]uint64{StatCtMiss: 1, StatTxIPIP: 1}},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%02d %s", i, c.name), func(t *testing.T) {
			in := c.in.Build()
			if c.name == "4in4 keeps TOS" {
				in[14+1] = 0xb8 // DSCP EF
			}
			want, be := e.expectEncap(t, c.in, in, c.vip)
			before, _ := e.d.Counters()
			verdict, out := e.run(t, bytes.Clone(in))
			after, _ := e.d.Counters()
			if verdict != c.verdict {
				t.Errorf("verdict = %s, want %s", verdictNames[verdict], verdictNames[c.verdict])
			}
			if !bytes.Equal(out, want) {
				t.Errorf("output frame (to %s) differs:\n%s", be.Addr, hexDiff(out, want))
			}
			if got := statsDelta(before, after); formatStats(got) != formatStats(c.stats) {
				t.Errorf("counters moved %s, want %s", formatStats(got), formatStats(c.stats))
			}
			// The outer header must decode, with a valid checksum.
			pk := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
			if el := pk.ErrorLayer(); el != nil && !strings.Contains(el.Error().Error(), "DNS") { // port 53 payloads are not DNS
				t.Errorf("output does not decode: %v", el.Error())
			}
			if ip4, ok := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok && be.Addr.Is4() {
				if sum := ipv4HeaderSum(out[14+4*len(c.in.VLANs) : 14+4*len(c.in.VLANs)+20]); sum != 0xffff {
					t.Errorf("outer IPv4 header checksum %#04x does not verify (sum %#04x)", ip4.Checksum, sum)
				}
			}
		})
	}
}

// ipv4HeaderSum is the one's-complement sum of a header: 0xffff when its
// checksum is right.
func ipv4HeaderSum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// TestIPIPNextHopAndMTU covers the packets ipip cannot send as asked: over
// the egress MTU once encapsulated, and no resolved next hop (dropped, or
// sent to the gateway MAC when one is configured).
func TestIPIPNextHopAndMTU(t *testing.T) {
	e := newIPIPEnv(t)
	check := func(t *testing.T, in []byte, wantVerdict uint32, want map[Stat]uint64) []byte {
		t.Helper()
		before, _ := e.d.Counters()
		verdict, out := e.run(t, bytes.Clone(in))
		after, _ := e.d.Counters()
		if verdict != wantVerdict {
			t.Errorf("verdict = %s, want %s", verdictNames[verdict], verdictNames[wantVerdict])
		}
		if got := statsDelta(before, after); formatStats(got) != formatStats(want) {
			t.Errorf("counters moved %s, want %s", formatStats(got), formatStats(want))
		}
		return out
	}
	t.Run("fits the MTU exactly", func(t *testing.T) {
		p := pkt(client4, "203.0.113.80", UDP, 1, 80)
		p.Proto = layers.IPProtocolTCP
		p.Payload = make([]byte, 1500-20-20-20) // inner 1480 + outer 20 = 1500
		check(t, p.Build(), xdpTX, map[Stat]uint64{StatCtMiss: 1, StatTxIPIP: 1})
	})
	t.Run("one byte over the MTU", func(t *testing.T) {
		p := pkt(client4, "203.0.113.80", TCP, 2, 80)
		p.Payload = make([]byte, 1500-20-20-20+1)
		in := p.Build()
		out := check(t, in, xdpDrop, map[Stat]uint64{StatCtMiss: 1, StatDropTooBig: 1})
		if !bytes.Equal(out, in) {
			t.Errorf("a dropped frame was changed:\n%s", hexDiff(out, in))
		}
	})
	t.Run("6in6 over the MTU", func(t *testing.T) {
		p := pkt(client6, "2001:db8:ffff::80", TCP, 3, 80)
		p.Payload = make([]byte, 1500-40-20-40+1)
		check(t, p.Build(), xdpDrop, map[Stat]uint64{StatCtMiss: 1, StatDropTooBig: 1})
	})
	noHop := pkt(client4, "203.0.113.82", TCP, 4, 80)
	noHop.SYN = true
	t.Run("no resolved next hop, no gateway: dropped", func(t *testing.T) {
		in := noHop.Build()
		out := check(t, in, xdpDrop, map[Stat]uint64{StatCtSYN: 1, StatDropNoRoute: 1})
		if !bytes.Equal(out, in) {
			t.Errorf("a dropped frame was changed:\n%s", hexDiff(out, in))
		}
	})
	t.Run("no resolved next hop, gateway MAC configured", func(t *testing.T) {
		gw := mustMAC("02:00:00:00:77:77")
		c := e.encap
		c.GatewayMAC = gw
		if err := e.d.SetEncap(c); err != nil {
			t.Fatal(err)
		}
		in := noHop.Build()
		out := check(t, in, xdpTX, map[Stat]uint64{StatCtSYN: 1, StatTxIPIP: 1, StatFibGateway: 1})
		if !bytes.Equal(out[0:6], gw) || !bytes.Equal(out[6:12], in[0:6]) {
			t.Errorf("MACs dst %x src %x, want the gateway %s and the MAC the frame came to %x", out[0:6], out[6:12], gw, in[0:6])
		}
	})
}

// TestIPIPConfigErrors: an ipip VIP needs the source prefix of each of its
// backends' families, and the prefix cannot be removed under it.
func TestIPIPConfigErrors(t *testing.T) {
	d := newTestDatapath(t)
	vip := VIP{Addr: addr("203.0.113.90"), Port: 80, Proto: TCP}
	err := d.AddVIP(vip, VIPConfig{Mode: ModeIPIP, RingSize: smallRing}, remote6)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("ipip.source_v6")) {
		t.Fatalf("ipip VIP without a v6 source prefix: err = %v", err)
	}
	if err := d.SetEncap(EncapConfig{SourceV4: netip.MustParsePrefix("198.18.1.1/24")}); err == nil {
		t.Fatal("SetEncap took a prefix with host bits set")
	}
	if err := d.SetEncap(EncapConfig{SourceV6: netip.MustParsePrefix("2001:db8:4::/64")}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddVIP(vip, VIPConfig{Mode: ModeIPIP, RingSize: smallRing}, remote6); err != nil {
		t.Fatal(err)
	}
	if err := d.SetEncap(EncapConfig{}); err == nil {
		t.Fatal("SetEncap removed the v6 prefix an ipip VIP needs")
	}
	if got := d.Encap(); got.SourceV6.String() != "2001:db8:4::/64" {
		t.Fatalf("a refused SetEncap changed the configuration to %+v", got)
	}
}

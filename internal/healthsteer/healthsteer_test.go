package healthsteer

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

// tc verdicts as BPF_PROG_RUN reports them.
const (
	tcUnspec   = ^uint32(0) // TC_ACT_UNSPEC (-1): the next program decides
	tcOK       = 0
	tcShot     = 2
	tcRedirect = 7
)

var tcNames = map[uint32]string{tcUnspec: "TC_ACT_UNSPEC", tcOK: "TC_ACT_OK", tcShot: "TC_ACT_SHOT", tcRedirect: "TC_ACT_REDIRECT"}

// skbContext builds a struct __sk_buff for BPF_PROG_RUN with the mark
// set. The offsets come from the kernel's BTF, not from a Go copy of the
// struct.
func skbContext(tb testing.TB, mark uint32) []byte {
	tb.Helper()
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		tb.Fatalf("load kernel BTF: %v", err)
	}
	var st *btf.Struct
	if err := spec.TypeByName("__sk_buff", &st); err != nil {
		tb.Fatalf("kernel BTF has no struct __sk_buff: %v", err)
	}
	ctx := make([]byte, st.Size)
	for _, m := range st.Members {
		if m.Name == "mark" {
			binary.NativeEndian.PutUint32(ctx[m.Offset.Bytes():], mark)
			return ctx
		}
	}
	tb.Fatal("struct __sk_buff has no member mark")
	return nil
}

// run pushes frame through the program as a packet with the given mark.
func run(tb testing.TB, prog *ebpf.Program, frame []byte, mark uint32) (uint32, []byte) {
	tb.Helper()
	opts := ebpf.RunOptions{Data: bytes.Clone(frame), DataOut: make([]byte, len(frame)+256), Context: skbContext(tb, mark)}
	ret, err := prog.Run(&opts)
	if err != nil {
		tb.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, opts.DataOut
}

func load(tb testing.TB, opts Options) *Steerer {
	tb.Helper()
	require.BPF(tb)
	s, err := Load(opts)
	if err != nil {
		tb.Fatalf("Load: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

var (
	lbMAC      = net.HardwareAddr{0x02, 0xfc, 0x02, 0, 0, 0x02}
	routerMAC  = net.HardwareAddr{0x02, 0xfc, 0x02, 0, 0, 0x01}
	backendMAC = net.HardwareAddr{0x02, 0xfc, 0x02, 0, 0, 0x0b}
	otherMAC   = net.HardwareAddr{0x02, 0xfc, 0x09, 0, 0, 0x09} // the source MAC of a redirect's interface

	lb4, lb6     = netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("2001:db8:2::2")
	vip4, vip6   = netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8:ffff::10")
	back4, back6 = netip.MustParseAddr("198.18.2.11"), netip.MustParseAddr("2001:db8:3::11")
)

// probe is the frame the LB's stack sends for a probe to the VIP: from the
// LB's address to the VIP, to the router's MAC (the VIP's next hop).
func probe(v6 bool, proto layers.IPProtocol) []byte {
	p := testpacket.Packet{SrcMAC: lbMAC, DstMAC: routerMAC, Src: lb4, Dst: vip4, Proto: proto,
		Sport: 40000, Dport: 9000, SYN: proto == layers.IPProtocolTCP, Payload: []byte("hc")}
	if v6 {
		p.Src, p.Dst = lb6, vip6
	}
	return p.Build()
}

// withMACs returns frame with its Ethernet addresses replaced.
func withMACs(frame []byte, dst, src net.HardwareAddr) []byte {
	out := bytes.Clone(frame)
	copy(out[0:6], dst)
	copy(out[6:12], src)
	return out
}

// encapsulated builds, with gopacket (not the program's code), the frame
// the ipip mode must produce: Ethernet to the next hop, an outer header
// from src to dst (DF, TTL 64, id 0, no options; IPv6: traffic class and
// flow label 0, hop limit 64) with a computed checksum, then the inner IP
// packet of frame unchanged.
func encapsulated(tb testing.TB, frame []byte, dmac, smac net.HardwareAddr, src, dst netip.Addr) []byte {
	tb.Helper()
	inner := frame[14:]
	next := layers.IPProtocolIPv4
	if inner[0]>>4 == 6 {
		next = layers.IPProtocolIPv6
	}
	eth := &layers.Ethernet{SrcMAC: smac, DstMAC: dmac, EthernetType: layers.EthernetTypeIPv4}
	var outer gopacket.SerializableLayer
	if dst.Is4() {
		outer = &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: next,
			SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		outer = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, outer, gopacket.Payload(inner)); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// TestFixtures runs a table of frames through the program with
// BPF_PROG_RUN against fixed map contents, Katran style: each case gives
// the mark, the input frame, the expected verdict, the expected output
// frame and the counter that must move.
func TestFixtures(t *testing.T) {
	s := load(t, Options{})
	base, _ := s.Marks()
	dsr := Target{Mode: DSR, SrcMAC: lbMAC, DstMAC: backendMAC}
	dsrElsewhere := Target{Mode: DSR, Ifindex: 42, SrcMAC: otherMAC, DstMAC: backendMAC}
	ipip4 := Target{Mode: IPIP, SrcMAC: lbMAC, DstMAC: routerMAC, Backend: back4, Source: lb4}
	ipip6 := Target{Mode: IPIP, SrcMAC: lbMAC, DstMAC: routerMAC, Backend: back6, Source: lb6}
	entries := map[uint32]Target{base + 1: dsr, base + 2: dsrElsewhere, base + 3: ipip4, base + 4: ipip6}
	for m, tg := range entries {
		if err := s.Set(m, tg); err != nil {
			t.Fatalf("Set(%#x): %v", m, err)
		}
	}
	tcp4, tcp6 := probe(false, layers.IPProtocolTCP), probe(true, layers.IPProtocolTCP)
	udp4, udp6 := probe(false, layers.IPProtocolUDP), probe(true, layers.IPProtocolUDP)
	arp := func() []byte {
		buf := gopacket.NewSerializeBuffer()
		_ = gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
			&layers.Ethernet{SrcMAC: lbMAC, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
			&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
				Operation: layers.ARPRequest, SourceHwAddress: lbMAC, SourceProtAddress: lb4.AsSlice(),
				DstHwAddress: make([]byte, 6), DstProtAddress: back4.AsSlice()})
		return buf.Bytes()
	}()

	type counter func(Counters) uint64
	steered := func(c Counters) uint64 { return c.Steered }
	noEntry := func(c Counters) uint64 { return c.NoEntry }
	notIP := func(c Counters) uint64 { return c.NotIP }
	cases := []struct {
		name    string
		mark    uint32
		in      []byte
		verdict uint32
		out     []byte
		moves   counter // nil: no counter moves
	}{
		{"dsr: marked IPv4 SYN gets the backend's MAC", base + 1, tcp4, tcOK, withMACs(tcp4, backendMAC, lbMAC), steered},
		{"dsr: marked IPv6 SYN gets the backend's MAC", base + 1, tcp6, tcOK, withMACs(tcp6, backendMAC, lbMAC), steered},
		{"dsr: marked IPv4 UDP gets the backend's MAC", base + 1, udp4, tcOK, withMACs(udp4, backendMAC, lbMAC), steered},
		{"dsr: marked IPv6 UDP gets the backend's MAC", base + 1, udp6, tcOK, withMACs(udp6, backendMAC, lbMAC), steered},
		{"dsr: backend behind another interface: redirect with its MAC", base + 2, tcp4, tcRedirect, withMACs(tcp4, backendMAC, otherMAC), steered},
		{"ipip: IPv4 probe in IPv4", base + 3, tcp4, tcOK, encapsulated(t, tcp4, routerMAC, lbMAC, lb4, back4), steered},
		{"ipip: IPv6 probe in IPv4", base + 3, tcp6, tcOK, encapsulated(t, tcp6, routerMAC, lbMAC, lb4, back4), steered},
		{"ipip: IPv6 probe in IPv6", base + 4, tcp6, tcOK, encapsulated(t, tcp6, routerMAC, lbMAC, lb6, back6), steered},
		{"ipip: IPv4 probe in IPv6", base + 4, udp4, tcOK, encapsulated(t, udp4, routerMAC, lbMAC, lb6, back6), steered},
		{"unmarked packet untouched, nothing counted", 0, tcp4, tcUnspec, tcp4, nil},
		{"mark below the range untouched, nothing counted", base - 1, tcp4, tcUnspec, tcp4, nil},
		{"mark above the range untouched, nothing counted", base + MaxTargets, tcp6, tcUnspec, tcp6, nil},
		{"mark in range without an entry untouched and counted", base + 5, tcp4, tcUnspec, tcp4, noEntry},
		{"marked non-IP frame dropped and counted", base + 1, arp, tcShot, arp, notIP},
	}
	for i, c := range cases {
		before, err := s.Counters()
		if err != nil {
			t.Fatal(err)
		}
		verdict, out := run(t, s.Program(), c.in, c.mark)
		after, err := s.Counters()
		if err != nil {
			t.Fatal(err)
		}
		ok := true
		if verdict != c.verdict {
			t.Errorf("case %d: %s: got verdict %s, want %s", i, c.name, tcNames[verdict], tcNames[c.verdict])
			ok = false
		}
		if c.verdict != tcShot && !bytes.Equal(out, c.out) {
			t.Errorf("case %d: %s: output differs:\n%s", i, c.name, testpacket.HexDiff(out, c.out))
			ok = false
		}
		total := func(c Counters) uint64 { return c.Steered + c.NoEntry + c.NotIP + c.Errors }
		moved := total(after) - total(before)
		switch {
		case c.moves == nil && moved != 0:
			t.Errorf("case %d: %s: counters moved by %d, want none: %+v -> %+v", i, c.name, moved, before, after)
			ok = false
		case c.moves != nil && (moved != 1 || c.moves(after)-c.moves(before) != 1):
			t.Errorf("case %d: %s: counters %+v -> %+v, want one step of the case's counter", i, c.name, before, after)
			ok = false
		}
		if ok {
			t.Logf("case %d: %s: passed", i, c.name)
		}
	}
}

// TestEncapChecksums decodes the ipip outputs with gopacket and checks the
// outer IPv4 checksum and the inner transport checksum independently of
// the expected frames above.
func TestEncapChecksums(t *testing.T) {
	s := load(t, Options{})
	base, _ := s.Marks()
	if err := s.Set(base, Target{Mode: IPIP, SrcMAC: lbMAC, DstMAC: routerMAC, Backend: back4, Source: lb4}); err != nil {
		t.Fatal(err)
	}
	for _, in := range [][]byte{probe(false, layers.IPProtocolTCP), probe(false, layers.IPProtocolUDP)} {
		_, out := run(t, s.Program(), in, base)
		hdr := out[14:34]
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(hdr[i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		if sum != 0xffff {
			t.Errorf("outer IPv4 header checksum does not verify (sum %#x): % x", sum, hdr)
		}
		if got, want := binary.BigEndian.Uint16(hdr[2:]), uint16(len(out)-14); got != want {
			t.Errorf("outer total length %d, want %d", got, want)
		}
		p := gopacket.NewPacket(out[34:], layers.LayerTypeIPv4, gopacket.Default)
		if el := p.ErrorLayer(); el != nil {
			t.Fatalf("inner packet does not decode: %v", el.Error())
		}
		// Re-serialize the inner transport layer with computed checksums:
		// it must come out byte-identical to what the program left.
		var tl gopacket.SerializableLayer
		ip4 := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		switch l := p.TransportLayer().(type) {
		case *layers.TCP:
			_ = l.SetNetworkLayerForChecksum(ip4)
			tl = l
		case *layers.UDP:
			_ = l.SetNetworkLayerForChecksum(ip4)
			tl = l
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true},
			tl, gopacket.Payload(p.ApplicationLayer().Payload())); err != nil {
			t.Fatal(err)
		}
		// The frame may carry Ethernet padding after the inner packet.
		l4 := out[34+20 : 34+int(ip4.Length)]
		if !bytes.Equal(buf.Bytes(), l4) {
			t.Errorf("inner transport checksum changed:\n%s", testpacket.HexDiff(l4, buf.Bytes()))
		}
	}
}

func TestSetRefuses(t *testing.T) {
	s := load(t, Options{MarkBase: 0x1000, MarkCount: 16})
	good := Target{Mode: DSR, SrcMAC: lbMAC, DstMAC: backendMAC}
	for _, c := range []struct {
		name string
		mark uint32
		t    Target
	}{
		{"mark below the range", 0xfff, good},
		{"mark above the range", 0x1010, good},
		{"unknown mode", 0x1000, Target{Mode: 9, SrcMAC: lbMAC, DstMAC: backendMAC}},
		{"short MAC", 0x1000, Target{Mode: DSR, SrcMAC: lbMAC, DstMAC: backendMAC[:4]}},
		{"ipip without source", 0x1000, Target{Mode: IPIP, SrcMAC: lbMAC, DstMAC: routerMAC, Backend: back4}},
		{"ipip of mixed families", 0x1000, Target{Mode: IPIP, SrcMAC: lbMAC, DstMAC: routerMAC, Backend: back4, Source: lb6}},
	} {
		if err := s.Set(c.mark, c.t); err == nil {
			t.Errorf("%s: Set(%#x, %+v) accepted", c.name, c.mark, c.t)
		}
	}
	if err := s.Set(0x100f, good); err != nil {
		t.Fatalf("last mark of the range refused: %v", err)
	}
	got, ok, err := s.Lookup(0x100f)
	if err != nil || !ok || got.Mode != DSR || !bytes.Equal(got.DstMAC, backendMAC) {
		t.Fatalf("Lookup: got %+v %v %v, want the dsr entry", got, ok, err)
	}
	ipip := Target{Mode: IPIP, Ifindex: 3, SrcMAC: lbMAC, DstMAC: routerMAC, Backend: back6, Source: lb6}
	if err := s.Set(0x1001, ipip); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Lookup(0x1001); got.Backend != back6 || got.Source != lb6 || got.Ifindex != 3 {
		t.Fatalf("Lookup: got %+v, want %+v", got, ipip)
	}
	if err := s.Delete(0x1001); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(0x1001); err != nil {
		t.Fatalf("deleting an absent mark: %v", err)
	}
	if _, ok, _ := s.Lookup(0x1001); ok {
		t.Fatal("deleted mark still present")
	}
}

func TestLoadRefuses(t *testing.T) {
	require.BPF(t)
	for _, o := range []Options{{MarkCount: MaxTargets + 1}, {MarkBase: 0xffffff00, MarkCount: 0x200}} {
		if s, err := Load(o); err == nil {
			s.Close()
			t.Errorf("Load(%+v) accepted", o)
		}
	}
}

// TestMarkRange checks that a custom range moves the program's window:
// the default base is foreign then.
func TestMarkRange(t *testing.T) {
	s := load(t, Options{MarkBase: 0x500, MarkCount: 4})
	tcp4 := probe(false, layers.IPProtocolTCP)
	for _, c := range []struct {
		mark uint32
		want uint64
	}{{0x4ff, 0}, {0x500, 1}, {0x503, 1}, {0x504, 0}, {DefaultMarkBase, 0}} {
		before, _ := s.Counters()
		run(t, s.Program(), tcp4, c.mark)
		after, _ := s.Counters()
		if got := after.NoEntry - before.NoEntry; got != c.want {
			t.Errorf("mark %#x: no-entry counter moved by %d, want %d", c.mark, got, c.want)
		}
	}
}

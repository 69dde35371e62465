package decap

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// TestBuilder decodes what the fixture builder produced and checks the
// outer header against the balancer's format, so that a builder bug
// cannot hide behind a matching program bug.
func TestBuilder(t *testing.T) {
	e := outer4(vlan(tcp(vip6, 40000, 80), 42))
	e.outerIHL = 7
	pkt := gopacket.NewPacket(e.frame(), layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("decode: %v", el.Error())
	}
	ips := pkt.Layers()
	var outer *layers.IPv4
	var inner *layers.IPv6
	for _, l := range ips {
		switch l := l.(type) {
		case *layers.IPv4:
			outer = l
		case *layers.IPv6:
			inner = l
		}
	}
	if outer == nil || inner == nil {
		t.Fatalf("want outer IPv4 and inner IPv6, got layers %v", pkt)
	}
	if outer.Protocol != 41 || outer.IHL != 7 || outer.TTL != 64 || outer.Flags != layers.IPv4DontFragment {
		t.Errorf("outer = proto %d ihl %d ttl %d flags %v, want 41, 7, 64, DF", outer.Protocol, outer.IHL, outer.TTL, outer.Flags)
	}
	if int(outer.Length) != 28+len(e.innerFrame())-18 {
		t.Errorf("outer tot_len %d, want %d", outer.Length, 28+len(e.innerFrame())-18)
	}
	if inner.DstIP.String() != vip6.String() {
		t.Errorf("inner dst %v, want %v", inner.DstIP, vip6)
	}
	if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); !ok || tcp.DstPort != 80 {
		t.Errorf("inner TCP not decoded: %v", pkt)
	}
	// The outer header checksum: a header with a valid checksum sums to
	// 0xffff.
	b := e.frame()[18 : 18+28]
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Errorf("outer header checksum does not verify: sum %#x", sum)
	}

	e6 := outer6(udp(vip4, 40000, 53))
	pkt = gopacket.NewPacket(e6.frame(), layers.LayerTypeEthernet, gopacket.Default)
	o6, ok := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if !ok || o6.NextHeader != 4 || o6.HopLimit != 64 || o6.FlowLabel != 0x5a5a5 {
		t.Errorf("outer IPv6 = %+v, want next header 4, hop limit 64, flow label 0x5a5a5", o6)
	}
}

// decapsulates reports whether a 4in4 or 6in6 packet to dst is
// decapsulated.
func decapsulates(t *testing.T, d *Decap, dst netip.Addr) bool {
	t.Helper()
	e := outer4(udp(dst, 40000, 53))
	if dst.Is6() {
		e = outer6(udp(dst, 40000, 53))
	}
	verdict, out := runProg(t, d.Program(), e.frame())
	if verdict != xdpPass {
		t.Fatalf("%s: verdict %s, want XDP_PASS", dst, verdictNames[verdict])
	}
	return len(out) == len(e.innerFrame())
}

// mapVIPs lists the addresses in the program's maps.
func mapVIPs(t *testing.T, d *Decap) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	var k4 [4]byte
	var v uint32
	it := d.objs.DecapVipsV4.Iterate()
	for it.Next(&k4, &v) {
		out = append(out, netip.AddrFrom4(k4))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	var k6 decapIn6Addr
	it = d.objs.DecapVipsV6.Iterate()
	for it.Next(&k6, &v) {
		out = append(out, netip.AddrFrom16(k6.In6U.U6Addr8))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func TestSetVIPsReplaces(t *testing.T) {
	d := newTestDecap(t, vip4, vip4b, vip6)
	all := []netip.Addr{vip4, vip4b, vip6, vip6b}
	check := func(step string, want ...netip.Addr) {
		t.Helper()
		slices.SortFunc(want, netip.Addr.Compare)
		if got := mapVIPs(t, d); !slices.Equal(got, want) {
			t.Errorf("%s: maps hold %v, want %v", step, got, want)
		}
		if got := d.VIPs(); !slices.Equal(got, want) {
			t.Errorf("%s: VIPs() = %v, want %v", step, got, want)
		}
		for _, a := range all {
			if got := decapsulates(t, d, a); got != slices.Contains(want, a) {
				t.Errorf("%s: packet to %s decapsulated = %v, want %v", step, a, got, !got)
			}
		}
	}
	check("initial", vip4, vip4b, vip6)

	if err := d.SetVIPs([]netip.Addr{vip4b, vip6b, vip6b}); err != nil {
		t.Fatal(err)
	}
	check("replaced (duplicate ignored)", vip4b, vip6b)

	// A bad address anywhere changes nothing.
	for _, bad := range []netip.Addr{{}, addr("::ffff:203.0.113.10"), addr("224.0.0.1"), addr("ff02::1"), addr("0.0.0.0"), addr("::"),
		addr("127.0.0.1"), addr("::1"), addr("255.255.255.255"), addr("fe80::1%eth0")} {
		err := d.SetVIPs([]netip.Addr{vip4, bad})
		if err == nil {
			t.Errorf("SetVIPs with %v: no error", bad)
			continue
		}
		if !strings.HasPrefix(err.Error(), "set decap vips: ") {
			t.Errorf("SetVIPs with %v: error %q does not say what failed", bad, err)
		}
		if CheckVIP(bad) == nil {
			t.Errorf("CheckVIP(%v) = nil, want an error", bad)
		}
	}
	check("after refused sets", vip4b, vip6b)

	if err := d.SetVIPs(nil); err != nil {
		t.Fatal(err)
	}
	check("emptied")

	many := make([]netip.Addr, d.MaxVIPs()+1)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	if err := d.SetVIPs(many); err == nil || !strings.Contains(err.Error(), "at most 4096") {
		t.Errorf("SetVIPs with %d IPv4 VIPs: error %v, want one about capacity", len(many), err)
	}
	if err := d.SetVIPs(many[:d.MaxVIPs()]); err != nil {
		t.Errorf("SetVIPs with %d IPv4 VIPs (the capacity): %v", d.MaxVIPs(), err)
	}
	if got := len(mapVIPs(t, d)); got != d.MaxVIPs() {
		t.Errorf("maps hold %d VIPs, want %d", got, d.MaxVIPs())
	}
}

// TestCountersSumCPUs checks that Counters reports every name and sums the
// per-CPU table.
func TestCountersSumCPUs(t *testing.T) {
	d := newTestDecap(t, vip4)
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range CounterNames() {
		if v, ok := c[name]; !ok || v != 0 {
			t.Errorf("fresh counter %s = %d (present %v), want 0", name, v, ok)
		}
	}
	if len(c) != len(CounterNames()) {
		t.Errorf("Counters has %d names, want %d", len(c), len(CounterNames()))
	}
	const n = 7
	for range n {
		runProg(t, d.Program(), outer4(tcp(vip4, 1, 80)).frame())
		runProg(t, d.Program(), tcp(vip4, 1, 80).Build())
	}
	c, err = d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c["decap"] != n || c["decap_4in4"] != n || c["pass_not_encap"] != n {
		t.Errorf("counters %s, want decap=%d decap_4in4=%d pass_not_encap=%d", formatCounters(c), n, n, n)
	}
}

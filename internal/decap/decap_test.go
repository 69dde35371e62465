package decap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

// fixture is one Katran-style case: a frame in, a verdict and a frame out,
// and the counters that must move.
type fixture struct {
	name string
	in   encap
	// plain, if set, is sent instead of an encapsulated frame.
	plain *testpacket.Packet
	// raw, if set, edits the built frame (for malformed frames).
	raw func(b []byte) []byte
	// decap: the output must be in.innerFrame() (plus any bytes raw left
	// after the outer packet). Otherwise the frame must come out
	// untouched.
	decap bool
	// wantECN, if set, is the inner ECN field expected out (as ECN+1).
	wantECN uint8
	verdict uint32
	counts  map[string]uint64
}

func decapped(family string) map[string]uint64 {
	return map[string]uint64{"decap": 1, "decap_" + family: 1}
}

var (
	passNotEncap  = map[string]uint64{"pass_not_encap": 1}
	passForeign   = map[string]uint64{"pass_foreign": 1}
	dropMalformed = map[string]uint64{"drop_malformed": 1}
)

func vlan(p testpacket.Packet, ids ...uint16) testpacket.Packet { p.VLANs = ids; return p }

// put16 writes a big-endian 16-bit field and returns the frame.
func put16(b []byte, off int, v uint16) []byte {
	binary.BigEndian.PutUint16(b[off:], v)
	return b
}

// fixIPv4Checksum recomputes the IPv4 header checksum at off after a test
// edited the header, so that only the intended field is wrong.
func fixIPv4Checksum(b []byte, off int) []byte {
	hlen := int(b[off]&0x0f) * 4
	if hlen < 20 {
		hlen = 20
	}
	b[off+10], b[off+11] = 0, 0
	var sum uint32
	for i := 0; i < hlen; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[off+i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[off+10:], ^uint16(sum))
	return b
}

func decapFixtures() []fixture {
	var cases []fixture
	// Every combination, TCP and UDP, without and with VLAN tags.
	combos := []struct {
		family string
		build  func(testpacket.Packet) encap
		dst    netip.Addr
	}{
		{"4in4", outer4, vip4},
		{"6in4", outer4, vip6},
		{"4in6", outer6, vip4},
		{"6in6", outer6, vip6},
	}
	for _, c := range combos {
		for _, tags := range [][]uint16{nil, {100}, {100, 200}} {
			for _, p := range []testpacket.Packet{tcp(c.dst, 40001, 80), udp(c.dst, 40002, 53)} {
				name := fmt.Sprintf("%s %s", c.family, strings.ToLower(p.Proto.String()))
				if len(tags) > 0 {
					name += fmt.Sprintf(", %d VLAN tag(s)", len(tags))
				}
				cases = append(cases, fixture{name: name, in: c.build(vlan(p, tags...)), decap: true, verdict: xdpPass, counts: decapped(c.family)})
			}
		}
	}

	syn := tcp(vip4, 40003, 443)
	syn.SYN = true
	innerOpts := udp(vip4, 40004, 53)
	innerOpts.IPv4Options = []byte{0x94, 0x04, 0, 0} // router alert
	innerExt := tcp(vip6, 40005, 80)
	innerExt.IPv6Ext = []testpacket.IPv6Ext{testpacket.HopByHop(), testpacket.DestOpts()}
	innerFrag := udp(vip4, 40006, 53)
	innerFrag.MoreFragments = true
	withIHL := func(e encap, ihl uint8) encap { e.outerIHL = ihl; return e }
	withDst := func(e encap, dst netip.Addr) encap { e.outerDst = dst; return e }
	ecn := func(e encap, outer, inner uint8) encap {
		e.outerTOS = 0xb8 | outer // DSCP EF plus the ECN field
		e.innerECN = inner + 1
		return e
	}

	cases = append(cases, []fixture{
		{name: "4in4 TCP SYN", in: outer4(syn), decap: true, verdict: xdpPass, counts: decapped("4in4")},
		{name: "outer IPv4 with options (IHL 7)", in: withIHL(outer4(tcp(vip4, 40007, 80)), 7), decap: true, verdict: xdpPass, counts: decapped("4in4")},
		{name: "outer IPv4 with 40 bytes of options (IHL 15)", in: withIHL(outer4(udp(vip6, 40008, 53)), 15), decap: true, verdict: xdpPass, counts: decapped("6in4")},
		{name: "inner IPv4 with options", in: outer6(innerOpts), decap: true, verdict: xdpPass, counts: decapped("4in6")},
		{name: "inner IPv6 with extension headers", in: outer4(innerExt), decap: true, verdict: xdpPass, counts: decapped("6in4")},
		{name: "inner IPv4 fragment: the stack reassembles it", in: outer4(innerFrag), decap: true, verdict: xdpPass, counts: decapped("4in4")},
		{name: "outer destination is not checked", in: withDst(outer4(tcp(vip4, 40009, 80)), addr("192.0.2.77")), decap: true, verdict: xdpPass, counts: decapped("4in4")},
		{name: "Ethernet padding after the outer packet stays", in: outer4(udp(vip4, 40010, 53)), raw: func(b []byte) []byte {
			return append(b, make([]byte, 12)...)
		}, decap: true, verdict: xdpPass, counts: decapped("4in4")},
		{name: "outer IPv6 payload shorter than the frame: padding stays", in: outer6(udp(vip6, 40011, 53)), raw: func(b []byte) []byte {
			return append(b, 0xee, 0xee)
		}, decap: true, verdict: xdpPass, counts: decapped("6in6")},

		// ECN (RFC 6040 as Linux's tunnels do it): an outer CE mark is
		// copied into an ECN-capable inner header.
		{name: "ECN: outer CE, inner ECT(0) v4 becomes CE, checksum fixed", in: ecn(outer4(tcp(vip4, 40012, 80)), ce, ect0), decap: true, wantECN: ce + 1, verdict: xdpPass,
			counts: map[string]uint64{"decap": 1, "decap_4in4": 1, "decap_ce": 1}},
		{name: "ECN: outer CE, inner ECT(1) v6 becomes CE", in: ecn(outer4(tcp(vip6, 40013, 80)), ce, ect1), decap: true, wantECN: ce + 1, verdict: xdpPass,
			counts: map[string]uint64{"decap": 1, "decap_6in4": 1, "decap_ce": 1}},
		{name: "ECN: outer CE over IPv6, inner ECT(0) v4 becomes CE", in: ecn(outer6(udp(vip4, 40014, 53)), ce, ect0), decap: true, wantECN: ce + 1, verdict: xdpPass,
			counts: map[string]uint64{"decap": 1, "decap_4in6": 1, "decap_ce": 1}},
		{name: "ECN: outer CE, inner already CE", in: ecn(outer6(udp(vip6, 40015, 53)), ce, ce), decap: true, verdict: xdpPass, counts: decapped("6in6")},
		{name: "ECN: outer ECT(0), inner not ECT: unchanged", in: ecn(outer4(tcp(vip4, 40016, 80)), ect0, notECT), decap: true, verdict: xdpPass, counts: decapped("4in4")},
		{name: "ECN: outer CE, inner not ECT: dropped", in: ecn(outer4(tcp(vip4, 40017, 80)), ce, notECT), verdict: xdpDrop,
			counts: map[string]uint64{"drop_ecn": 1}},
		{name: "ECN: outer CE, inner v6 not ECT: dropped", in: ecn(outer6(tcp(vip6, 40018, 80)), ce, notECT), verdict: xdpDrop,
			counts: map[string]uint64{"drop_ecn": 1}},

		// Encapsulated, but not for a VIP: the host's business.
		{name: "4in4 to no VIP", in: outer4(tcp(addr("203.0.113.99"), 40020, 80)), verdict: xdpPass, counts: passForeign},
		{name: "6in6 to no VIP", in: outer6(udp(addr("2001:db8:ffff::99"), 40021, 53)), verdict: xdpPass, counts: passForeign},
		{name: "4in6 to no VIP", in: outer6(tcp(addr("203.0.113.99"), 40022, 80)), verdict: xdpPass, counts: passForeign},
		{name: "6in4 to no VIP", in: outer4(tcp(addr("2001:db8:ffff::99"), 40023, 80)), verdict: xdpPass, counts: passForeign},
		{name: "ECN: outer CE, inner not ECT, not a VIP: untouched", in: ecn(outer4(tcp(addr("203.0.113.99"), 40024, 80)), ce, notECT), verdict: xdpPass, counts: passForeign},

		// Not encapsulated: untouched.
		{name: "plain TCP to a VIP (dsr traffic)", plain: ptr(tcp(vip4, 40030, 80)), verdict: xdpPass, counts: passNotEncap},
		{name: "plain UDP over IPv6", plain: ptr(udp(vip6, 40031, 53)), verdict: xdpPass, counts: passNotEncap},
		{name: "plain TCP with a VLAN tag", plain: ptr(vlan(tcp(vip4, 40032, 22), 7)), verdict: xdpPass, counts: passNotEncap},
		{name: "ICMP", plain: ptr(pkt(vip4, layers.IPProtocolICMPv4, 0, 0)), verdict: xdpPass, counts: passNotEncap},
		{name: "ICMPv6", plain: ptr(pkt(vip6, layers.IPProtocolICMPv6, 0, 0)), verdict: xdpPass, counts: passNotEncap},
		{name: "ARP", plain: ptr(udp(vip4, 1, 1)), raw: func(b []byte) []byte {
			b[12], b[13] = 0x08, 0x06
			return b[:42]
		}, verdict: xdpPass, counts: passNotEncap},
		{name: "IPv4 protocol 47 (GRE)", plain: ptr(pkt(vip4, 47, 0, 0)), verdict: xdpPass, counts: passNotEncap},
		{name: "IPv6 hop-by-hop before protocol 41: not the balancer's format", in: outer6(tcp(vip6, 40033, 80)), raw: func(b []byte) []byte {
			// Insert an 8-byte hop-by-hop header (next header 41).
			hbh := []byte{41, 0, 1, 4, 0, 0, 0, 0}
			out := slices.Concat(b[:54], hbh, b[54:])
			out[14+6] = 0 // next header: hop-by-hop
			return put16(out, 14+4, binary.BigEndian.Uint16(out[14+4:])+8)
		}, verdict: xdpPass, counts: passNotEncap},
		{name: "Ethernet header only", in: outer4(tcp(vip4, 1, 80)), raw: func(b []byte) []byte { return b[:14] }, verdict: xdpPass, counts: passNotEncap},
		{name: "truncated VLAN tag", in: outer4(vlan(tcp(vip4, 1, 80), 5)), raw: func(b []byte) []byte { return b[:16] }, verdict: xdpPass, counts: passNotEncap},
		{name: "three VLAN tags: more than parsed", in: outer4(vlan(tcp(vip4, 1, 80), 5, 6, 7)), verdict: xdpPass, counts: passNotEncap},
		{name: "outer IPv4 header cut at 19 bytes", in: outer4(tcp(vip4, 1, 80)), raw: func(b []byte) []byte { return b[:14+19] }, verdict: xdpPass, counts: passNotEncap},
		{name: "outer IPv6 header cut at 39 bytes", in: outer6(tcp(vip4, 1, 80)), raw: func(b []byte) []byte { return b[:14+39] }, verdict: xdpPass, counts: passNotEncap},

		// Encapsulated and broken: dropped, VIP or not.
		{name: "outer IPv4 first fragment (MF)", in: outer4(tcp(vip4, 40040, 80)), raw: func(b []byte) []byte {
			return fixIPv4Checksum(put16(b, 14+6, 0x2000), 14) // MF, DF cleared
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "outer IPv4 later fragment", in: outer4(udp(vip6, 40041, 53)), raw: func(b []byte) []byte {
			return fixIPv4Checksum(put16(b, 14+6, 185), 14)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "outer IPv4 fragment, inner not a VIP", in: outer4(tcp(addr("203.0.113.99"), 40042, 80)), raw: func(b []byte) []byte {
			return fixIPv4Checksum(put16(b, 14+6, 0x2000), 14)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "outer tot_len beyond the frame", in: outer4(tcp(vip4, 40043, 80)), raw: func(b []byte) []byte {
			return fixIPv4Checksum(put16(b, 14+2, uint16(len(b)-14+1)), 14)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "outer tot_len beyond the frame, with a VLAN tag", in: outer6(vlan(tcp(vip4, 40044, 80), 9)), raw: func(b []byte) []byte {
			return put16(b, 18+4, uint16(len(b)-18-40+1))
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "outer tot_len below its header length", in: outer4(tcp(vip4, 40045, 80)), raw: func(b []byte) []byte {
			return fixIPv4Checksum(put16(b, 14+2, 19), 14)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "outer IHL below 5", in: outer4(tcp(vip4, 40046, 80)), raw: func(b []byte) []byte {
			b[14] = 0x44
			return fixIPv4Checksum(b, 14)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "outer version 6 behind EtherType IPv4", in: outer4(tcp(vip4, 40047, 80)), raw: func(b []byte) []byte {
			b[14] = 0x65
			return fixIPv4Checksum(b, 14)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "outer version 4 behind EtherType IPv6", in: outer6(tcp(vip6, 40048, 80)), raw: func(b []byte) []byte {
			b[14] = 0x40
			return b
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "outer IPv6 payload length beyond the frame", in: outer6(udp(vip6, 40049, 53)), raw: func(b []byte) []byte {
			return put16(b, 14+4, uint16(len(b)-14-40+1))
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "outer IPv6 payload length 0", in: outer6(udp(vip6, 40050, 53)), raw: func(b []byte) []byte {
			return put16(b, 14+4, 0)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "inner IPv4 cut at 19 bytes, outer length consistent", in: outer4(tcp(vip4, 40051, 80)), raw: func(b []byte) []byte {
			b = b[:14+20+19]
			return fixIPv4Checksum(put16(b, 14+2, 20+19), 14)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "inner IPv6 cut at 39 bytes, outer length consistent", in: outer6(udp(vip6, 40052, 53)), raw: func(b []byte) []byte {
			b = b[:14+40+39]
			return put16(b, 14+4, 39)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "inner IPv4 header complete, outer length says 19 bytes", in: outer6(tcp(vip4, 40053, 80)), raw: func(b []byte) []byte {
			return put16(b, 14+4, 19) // the frame goes on: padding as far as the outer is concerned
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "inner packet longer than the outer says", in: outer4(tcp(vip4, 40054, 80)), raw: func(b []byte) []byte {
			return fixIPv4Checksum(put16(b, 14+2, binary.BigEndian.Uint16(b[14+2:])-1), 14)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "inner IPv6 payload length beyond the outer", in: outer6(tcp(vip6, 40055, 80)), raw: func(b []byte) []byte {
			return put16(b, 14+40+4, binary.BigEndian.Uint16(b[14+40+4:])+1)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "protocol 4, inner version 6", in: outer4(tcp(vip6, 40056, 80)), raw: func(b []byte) []byte {
			b[14+9] = 4
			return fixIPv4Checksum(b, 14)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "protocol 41, inner version 4", in: outer4(tcp(vip4, 40057, 80)), raw: func(b []byte) []byte {
			b[14+9] = 41
			return fixIPv4Checksum(b, 14)
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "next header 41, inner version 4 (outer IPv6)", in: outer6(tcp(vip4, 40058, 80)), raw: func(b []byte) []byte {
			b[14+6] = 41
			return b
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "inner IHL below 5", in: outer4(tcp(vip4, 40059, 80)), raw: func(b []byte) []byte {
			b[14+20] = 0x44
			return b
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "inner IHL below 5, inner not a VIP", in: outer4(tcp(addr("203.0.113.99"), 40060, 80)), raw: func(b []byte) []byte {
			b[14+20] = 0x44
			return b
		}, verdict: xdpDrop, counts: dropMalformed},
		{name: "inner tot_len below its header length", in: outer6(udp(vip4, 40061, 53)), raw: func(b []byte) []byte {
			return put16(b, 14+40+2, 16)
		}, verdict: xdpDrop, counts: dropMalformed},
	}...)
	return cases
}

func ptr[T any](v T) *T { return &v }

func TestFixtures(t *testing.T) {
	d := newTestDecap(t, vip4, vip4b, vip6, vip6b)
	for i, c := range decapFixtures() {
		t.Run(fmt.Sprintf("%02d %s", i, c.name), func(t *testing.T) {
			var in, want []byte
			if c.plain != nil {
				in = c.plain.Build()
			} else {
				in = c.in.frame()
			}
			if c.raw != nil {
				in = c.raw(in)
			}
			want = in
			if c.decap {
				exp := c.in
				if c.wantECN != 0 {
					exp.innerECN = c.wantECN
				}
				want = exp.innerFrame()
				// Bytes after the outer packet (padding) stay behind the
				// inner packet.
				if extra := len(in) - len(c.in.frame()); extra > 0 {
					want = append(want, in[len(in)-extra:]...)
				}
			}
			before, err := d.Counters()
			if err != nil {
				t.Fatal(err)
			}
			verdict, out := runProg(t, d.Program(), in)
			after, err := d.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if verdict == xdpAborted {
				t.Errorf("verdict XDP_ABORTED: the program hit an error path")
			}
			if verdict != c.verdict {
				t.Errorf("verdict = %s, want %s", verdictNames[verdict], verdictNames[c.verdict])
			}
			if !bytes.Equal(out, want) {
				t.Errorf("output frame differs (in %d bytes):\n%s", len(in), hexDiff(out, want))
			}
			if got := counterDelta(before, after); formatCounters(got) != formatCounters(c.counts) {
				t.Errorf("counters moved %s, want %s", formatCounters(got), formatCounters(c.counts))
			}
		})
	}
}

package vrrp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

// reference is keepalived 2.2.7's VRRPv3 advertisement from issue 6, after
// the IP header: VRID 51, priority 200, one address, interval 100 cs,
// checksum 0x23af, address 203.0.113.10.
const reference = "3133c801006423afcb00710a"

// referenceSource is the source address the reference was captured from.
// The checksum covers the IPv4 pseudo-header, so it pins the source: of the
// canonical topology's addresses only backend1's, 198.18.0.11, makes it
// verify (the checksum fixes only the ones' complement sum of the source's
// two 16-bit words, so 198.19.0.10, which is on no interface of the plan,
// would too).
var referenceSource = netip.MustParseAddr("198.18.0.11")

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReferenceUnmarshal(t *testing.T) {
	var a Advert
	if err := a.Unmarshal(mustHex(t, reference), referenceSource, GroupIPv4); err != nil {
		t.Fatalf("Unmarshal(reference from %s): %v", referenceSource, err)
	}
	if a.VRID != 51 || a.Priority != 200 || a.MaxAdvertInterval != 100 ||
		len(a.Addresses) != 1 || a.Addresses[0] != netip.MustParseAddr("203.0.113.10") {
		t.Errorf("got %+v, want VRID 51, priority 200, interval 100, addresses [203.0.113.10]", a)
	}
}

func TestReferenceMarshal(t *testing.T) {
	a := Advert{VRID: 51, Priority: 200, MaxAdvertInterval: 100, Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.10")}}
	got, err := a.Marshal(referenceSource, GroupIPv4)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustHex(t, reference); !bytes.Equal(got, want) {
		t.Errorf("Marshal from %s:\n got % x\nwant % x", referenceSource, got, want)
	}
}

// TestReferenceChecksumSource pins which source the reference was sent
// from: the obvious candidates are tried and exactly one verifies.
func TestReferenceChecksumSource(t *testing.T) {
	msg := mustHex(t, reference)
	var verifying []string
	for _, s := range []string{
		"198.18.0.1", "198.18.0.2", "198.18.0.3", // router, lb1, lb2
		"198.18.0.11", "198.18.0.12", "198.18.0.13", // backends
		"198.19.1.1", "198.19.1.2", // router's client side, client
		"203.0.113.10", "0.0.0.0", "127.0.0.1",
	} {
		var a Advert
		if a.Unmarshal(msg, netip.MustParseAddr(s), GroupIPv4) == nil {
			verifying = append(verifying, s)
		}
	}
	if len(verifying) != 1 || verifying[0] != referenceSource.String() {
		t.Errorf("sources whose pseudo-header verifies the reference: %v, want [%s]", verifying, referenceSource)
	}
	// Without the pseudo-header (VRRPv2's rule) the checksum would be
	// different: the reference follows RFC 5798 §5.2.8.
	if c := ^fold(sum16(0, msg[:6]) + sum16(0, msg[8:])); c == 0x23af {
		t.Errorf("the reference checksum also matches a sum without pseudo-header")
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst string
		addrs    []string
	}{
		{"ipv4 multicast", "198.18.0.2", "224.0.0.18", []string{"198.18.0.100"}},
		{"ipv4 unicast, three addresses", "198.18.0.2", "198.18.0.3", []string{"198.18.0.100", "203.0.113.10", "203.0.113.11"}},
		{"ipv4 no address", "198.18.0.2", "224.0.0.18", nil},
		{"ipv6 multicast", "fe80::fc:2ff:fe00:2", "ff02::12", []string{"2001:db8:2::100"}},
		{"ipv6 two addresses", "fe80::1", "ff02::12", []string{"2001:db8:2::100", "2001:db8:ffff::10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Advert{VRID: 7, Priority: 254, MaxAdvertInterval: 4095}
			for _, s := range tc.addrs {
				in.Addresses = append(in.Addresses, netip.MustParseAddr(s))
			}
			src, dst := netip.MustParseAddr(tc.src), netip.MustParseAddr(tc.dst)
			b, err := in.Marshal(src, dst)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != in.Len() {
				t.Errorf("len = %d, Len() = %d", len(b), in.Len())
			}
			if checksum(src, dst, b) != 0 {
				t.Errorf("marshalled message does not verify: % x", b)
			}
			var out Advert
			if err := out.Unmarshal(b, src, dst); err != nil {
				t.Fatalf("Unmarshal(% x): %v", b, err)
			}
			if out.VRID != in.VRID || out.Priority != in.Priority || out.MaxAdvertInterval != in.MaxAdvertInterval ||
				len(out.Addresses) != len(in.Addresses) {
				t.Fatalf("got %+v, want %+v", out, in)
			}
			for i := range in.Addresses {
				if out.Addresses[i] != in.Addresses[i] {
					t.Errorf("address %d = %s, want %s", i, out.Addresses[i], in.Addresses[i])
				}
			}
			// The same message from another source must not verify.
			other := src.Next()
			if err := out.Unmarshal(b, other, dst); !isReason(err, DropChecksum) {
				t.Errorf("from %s instead of %s: got %v, want a checksum error", other, src, err)
			}
		})
	}
}

// TestIPv6Checksum checks the IPv6 pseudo-header by an independent sum:
// source, destination, 32-bit length, zeros, next header 112.
func TestIPv6Checksum(t *testing.T) {
	src, dst := netip.MustParseAddr("fe80::1"), GroupIPv6
	a := Advert{VRID: 1, Priority: 100, MaxAdvertInterval: 10, Addresses: []netip.Addr{netip.MustParseAddr("2001:db8::1")}}
	b, err := a.Marshal(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	var pseudo []byte
	pseudo = appendIP(pseudo, src)
	pseudo = appendIP(pseudo, dst)
	pseudo = append(pseudo, 0, 0, 0, byte(len(b)), 0, 0, 0, Protocol)
	if got := ^fold(sum16(sum16(0, pseudo), b)); got != 0 {
		t.Errorf("sum over the RFC 2460 pseudo-header and % x = 0x%04x, want 0", b, got)
	}
}

func isReason(err error, r DropReason) bool {
	var pe *ParseError
	return errors.As(err, &pe) && pe.Reason == r
}

func TestUnmarshalRefuses(t *testing.T) {
	src, dst := netip.MustParseAddr("198.18.0.2"), GroupIPv4
	good := func() []byte {
		a := Advert{VRID: 51, Priority: 200, MaxAdvertInterval: 10, Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.100")}}
		b, err := a.Marshal(src, dst)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// reseal recomputes the checksum after a change, so that only the
	// change is wrong.
	reseal := func(b []byte) []byte {
		b[6], b[7] = 0, 0
		c := checksum(src, dst, b)
		b[6], b[7] = byte(c>>8), byte(c)
		return b
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		src  netip.Addr
		want DropReason
	}{
		{"empty", nil, src, DropShort},
		{"seven bytes", good()[:7], src, DropShort},
		{"version 2", reseal(func() []byte { b := good(); b[0] = 0x21; return b }()), src, DropVersion},
		{"version 4", reseal(func() []byte { b := good(); b[0] = 0x41; return b }()), src, DropVersion},
		{"type 2", reseal(func() []byte { b := good(); b[0] = 0x32; return b }()), src, DropType},
		{"count 2, one address", reseal(func() []byte { b := good(); b[3] = 2; return b }()), src, DropLength},
		{"count 0, one address", reseal(func() []byte { b := good(); b[3] = 0; return b }()), src, DropLength},
		{"truncated address", good()[:10], src, DropLength},
		{"trailing byte", reseal(append(good(), 0)), src, DropLength},
		{"bad checksum", func() []byte { b := good(); b[7] ^= 1; return b }(), src, DropChecksum},
		{"priority changed after sealing", func() []byte { b := good(); b[2] = 255; return b }(), src, DropChecksum},
		{"ipv6 source for ipv4 group", good(), netip.MustParseAddr("fe80::1"), DropFamily},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a Advert
			err := a.Unmarshal(tc.msg, tc.src, dst)
			if !isReason(err, tc.want) {
				t.Errorf("Unmarshal(% x) = %v, want reason %s", tc.msg, err, tc.want)
			}
		})
	}
}

func TestMarshalRefuses(t *testing.T) {
	src := netip.MustParseAddr("198.18.0.2")
	for _, tc := range []struct {
		name string
		a    Advert
		dst  netip.Addr
	}{
		{"interval over 12 bits", Advert{MaxAdvertInterval: 4096}, GroupIPv4},
		{"ipv6 address in ipv4 packet", Advert{Addresses: []netip.Addr{netip.MustParseAddr("2001:db8::1")}}, GroupIPv4},
		{"mixed source and destination", Advert{}, GroupIPv6},
		{"256 addresses", Advert{Addresses: make([]netip.Addr, 256)}, GroupIPv4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := tc.a.Marshal(src, tc.dst); err == nil {
				t.Errorf("Marshal = % x, want an error", b)
			}
		})
	}
}

// TestAppendDoesNotAllocate: the send path marshals into a reused buffer.
func TestAppendDoesNotAllocate(t *testing.T) {
	a := Advert{VRID: 51, Priority: 200, MaxAdvertInterval: 10, Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.100")}}
	src := netip.MustParseAddr("198.18.0.2")
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		b, err := a.Append(buf[:ipv4HeaderLen], src, GroupIPv4)
		if err != nil {
			t.Fatal(err)
		}
		putIPv4Header(b, src, GroupIPv4)
	})
	if allocs != 0 {
		t.Errorf("Append + header: %v allocations per run, want 0", allocs)
	}
}

func TestParse4(t *testing.T) {
	a := Advert{VRID: 51, Priority: 200, MaxAdvertInterval: 10, Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.100")}}
	src := netip.MustParseAddr("198.18.0.2")
	b, err := a.Append(make([]byte, ipv4HeaderLen), src, GroupIPv4)
	if err != nil {
		t.Fatal(err)
	}
	putIPv4Header(b, src, GroupIPv4)
	p := parse4(b)
	if p.short || p.src != src || p.dst != GroupIPv4 || p.ttl != 255 || !bytes.Equal(p.msg, b[ipv4HeaderLen:]) {
		t.Errorf("parse4 = %+v", p)
	}
	if p := parse4(b[:19]); !p.short {
		t.Errorf("parse4 of a 19-byte packet: not short")
	}
	if p := parse4(b[:len(b)-1]); !p.short {
		t.Errorf("parse4 of a packet shorter than its total length: not short")
	}
}

func TestFrames(t *testing.T) {
	mac := []byte{0x02, 0xfc, 0x02, 0, 0, 0x02}
	g := garpFrame(mac, netip.MustParseAddr("198.18.0.100"))
	want := "ffffffffffff" + "02fc02000002" + "0806" + "000108000604" + "0001" +
		"02fc02000002" + "c6120064" + "ffffffffffff" + "c6120064"
	if hex.EncodeToString(g) != want {
		t.Errorf("gratuitous ARP:\n got %x\nwant %s", g, want)
	}
	ll, vip := netip.MustParseAddr("fe80::fc:2ff:fe00:2"), netip.MustParseAddr("2001:db8:2::100")
	na := naFrame(mac, ll, vip)
	if len(na) != 14+40+32 {
		t.Fatalf("NA frame is %d bytes, want 86", len(na))
	}
	ip := na[14:]
	var pseudo []byte
	pseudo = appendIP(pseudo, ll)
	pseudo = appendIP(pseudo, allNodes)
	pseudo = append(pseudo, 0, 0, 0, 32, 0, 0, 0, 58)
	if c := ^fold(sum16(sum16(0, pseudo), ip[40:])); c != 0 {
		t.Errorf("NA ICMPv6 checksum does not verify (0x%04x)", c)
	}
	if ip[7] != 255 || ip[40] != 136 || ip[44] != 0x20 || !bytes.Equal(ip[48:64], vip.AsSlice()) || !bytes.Equal(ip[66:72], mac) {
		t.Errorf("NA frame fields wrong: % x", na)
	}
}

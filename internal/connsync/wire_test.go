package connsync

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// testEntries returns n distinct valid entries mixing the families, the
// protocols and the states.
func testEntries(n int) []Entry {
	out := make([]Entry, 0, n)
	for i := range n {
		e := Entry{
			Client:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), uint16(1024+i)),
			VIP:      netip.MustParseAddrPort("203.0.113.10:80"),
			Proto:    ProtoTCP,
			Backend:  netip.AddrFrom4([4]byte{198, 19, 0, byte(1 + i%7)}),
			State:    State(i % 4),
			Lifetime: time.Duration(i%900+1) * time.Second,
		}
		switch i % 5 {
		case 1:
			e.Proto, e.State = ProtoUDP, StateEstablished
		case 2:
			e.Client = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 1, 14: byte(i >> 8), 15: byte(i)}), uint16(i))
			e.VIP = netip.MustParseAddrPort("[2001:db8::10]:443")
			e.Backend = netip.MustParseAddr("2001:db8:2::7")
		case 3:
			// ipip to an IPv6 backend from IPv4 clients.
			e.Backend = netip.MustParseAddr("2001:db8:2::8")
		}
		out = append(out, e)
	}
	return out
}

// pack builds datagrams of es as a sender with the given epoch would,
// from sequence number seq on.
func pack(t testing.TB, key []byte, epoch, seq uint64, es []Entry) [][]byte {
	t.Helper()
	d, m := newDatagram(), newMAC(key)
	var out [][]byte
	for i := range es {
		if msg := es[i].check(); msg != "" {
			t.Fatalf("test entry %v: %s", es[i], msg)
		}
		if !d.room(&es[i]) {
			out = append(out, bytes.Clone(d.seal(m, typeEntries, 0, epoch, seq, time.Now())))
			seq++
			d.reset()
		}
		d.add(&es[i])
	}
	if d.count > 0 {
		out = append(out, bytes.Clone(d.seal(m, typeEntries, 0, epoch, seq, time.Now())))
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	want := testEntries(1000)
	var got []Entry
	dgs := pack(t, testKey, 7, 1, want)
	m := newMAC(testKey)
	ents := make([]Entry, 0, MaxEntries)
	for i, b := range dgs {
		if len(b) > MaxDatagram {
			t.Fatalf("datagram %d is %d bytes, over MaxDatagram %d", i, len(b), MaxDatagram)
		}
		h, es, r := decode(b, m, ents)
		if r != reasonNone {
			t.Fatalf("datagram %d: dropped as %s", i, r)
		}
		if h.sender != 7 || h.seq != uint64(1+i) || h.typ != typeEntries || int(h.count) != len(es) {
			t.Fatalf("datagram %d: header %+v with %d entries, want sender 7, seq %d", i, h, len(es), 1+i)
		}
		got = append(got, es...)
	}
	if !reflect.DeepEqual(got, want) {
		for i := range want {
			if i >= len(got) || got[i] != want[i] {
				t.Fatalf("entry %d: got %v, want %v (%d entries back of %d)", i, got[min(i, len(got)-1)], want[i], len(got), len(want))
			}
		}
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	// Packing: an all-IPv4 TCP datagram holds MaxEntries.
	v4 := make([]Entry, MaxEntries+1)
	for i := range v4 {
		v4[i] = testEntries(1)[0]
	}
	if dg := pack(t, testKey, 7, 1, v4); len(dg) != 2 || len(dg[0]) != HeaderLen+MaxEntries*minEntry+MACLen {
		t.Fatalf("%d IPv4 entries made %d datagrams, the first %d bytes; want 2, the first holding %d entries",
			len(v4), len(dg), len(dg[0]), MaxEntries)
	}
}

func TestLifetimeOnWire(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{0, 0},
		{1500 * time.Millisecond, 2 * time.Second}, // rounded up: never shorter than the sender's
		{MaxLifetime + time.Hour, MaxLifetime},
	} {
		e := testEntries(1)[0]
		e.Lifetime = c.in
		_, es, r := decode(pack(t, testKey, 1, 1, []Entry{e})[0], newMAC(testKey), nil)
		if r != reasonNone || es[0].Lifetime != c.want {
			t.Errorf("lifetime %s: got %v (%s), want %s", c.in, es, r, c.want)
		}
	}
}

// mutated returns a valid one-entry datagram changed by f and, when
// reseal, given a valid MAC again (as only a key holder could).
func mutated(t *testing.T, reseal bool, f func([]byte) []byte) []byte {
	b := f(pack(t, testKey, 1, 1, testEntries(1))[0])
	if reseal && len(b) >= MACLen {
		newMAC(testKey).appendSum(b[:len(b)-MACLen], b[:len(b)-MACLen])
	}
	return b
}

// badDatagrams are datagrams that each fail one check, with the reason.
func badDatagrams(t *testing.T) []struct {
	name string
	b    []byte
	want Reason
} {
	good := func() []byte { return pack(t, testKey, 1, 1, testEntries(3))[0] }
	two := pack(t, testKey, 1, 1, testEntries(2))[0]
	return []struct {
		name string
		b    []byte
		want Reason
	}{
		{"empty", nil, ReasonTruncated},
		{"half a magic", []byte("FC"), ReasonTruncated},
		{"header only", good()[:HeaderLen], ReasonTruncated},
		{"cut in an entry", good()[:HeaderLen+30], ReasonTruncated},
		{"cut before the MAC end", func() []byte { b := good(); return b[:len(b)-1] }(), ReasonTruncated},
		{"oversized", make([]byte, MaxDatagram+1), ReasonOversized},
		{"not sync", []byte("GET / HTTP/1.1\r\n\r\n"), ReasonBadMagic},
		{"version 2", mutated(t, true, func(b []byte) []byte { b[4] = 2; return b }), ReasonBadVersion},
		{"version 0", mutated(t, true, func(b []byte) []byte { b[4] = 0; return b }), ReasonBadVersion},
		{"type 9", mutated(t, true, func(b []byte) []byte { b[5] = 9; return b }), ReasonBadType},
		{"count over max", mutated(t, true, func(b []byte) []byte { binary.BigEndian.PutUint16(b[32:], 65535); return b }), ReasonBadCount},
		{"count short of the entries", func() []byte {
			b := bytes.Clone(two)
			binary.BigEndian.PutUint16(b[32:], 1)
			newMAC(testKey).appendSum(b[:len(b)-MACLen], b[:len(b)-MACLen])
			return b
		}(), ReasonBadCount},
		{"count past the entries", mutated(t, true, func(b []byte) []byte { binary.BigEndian.PutUint16(b[32:], 2); return b }), ReasonTruncated},
		{"count 0", mutated(t, true, func(b []byte) []byte { binary.BigEndian.PutUint16(b[32:], 0); return b }), ReasonBadCount},
		{"hello with entries", mutated(t, true, func(b []byte) []byte { b[5] = byte(typeHello); return b }), ReasonBadCount},
		{"reserved header bytes", mutated(t, true, func(b []byte) []byte { b[35] = 1; return b }), ReasonMalformed},
		{"protocol 1", mutated(t, true, func(b []byte) []byte { b[HeaderLen+1] = 1; return b }), ReasonMalformed},
		{"state 4", mutated(t, true, func(b []byte) []byte { b[HeaderLen+2] = 4; return b }), ReasonMalformed},
		{"unknown family bit", mutated(t, true, func(b []byte) []byte { b[HeaderLen] |= 4; return b }), ReasonMalformed},
		{"lifetime over the maximum", mutated(t, true, func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[HeaderLen+8:], uint32(MaxLifetime/time.Second)+1)
			return b
		}), ReasonMalformed},
		{"forged: entry changed, MAC kept", mutated(t, false, func(b []byte) []byte { b[HeaderLen+12] ^= 1; return b }), ReasonBadMAC},
		{"forged: sequence changed, MAC kept", mutated(t, false, func(b []byte) []byte { b[23]++; return b }), ReasonBadMAC},
		{"forged: MAC flipped", mutated(t, false, func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }), ReasonBadMAC},
		{"wrong key", pack(t, []byte("another key, as long as the real"), 1, 1, testEntries(3))[0], ReasonBadMAC},
	}
}

func TestDecodeRejects(t *testing.T) {
	m := newMAC(testKey)
	for _, c := range badDatagrams(t) {
		_, _, r := decode(c.b, m, make([]Entry, 0, MaxEntries))
		if r != c.want {
			t.Errorf("%s: got %s, want %s", c.name, r, c.want)
		}
	}
}

func TestEntryCheck(t *testing.T) {
	ok := testEntries(1)[0]
	for _, c := range []struct {
		name string
		f    func(*Entry)
	}{
		{"no backend", func(e *Entry) { e.Backend = netip.Addr{} }},
		{"mixed client and VIP", func(e *Entry) { e.VIP = netip.MustParseAddrPort("[2001:db8::1]:80") }},
		{"4in6 client", func(e *Entry) {
			e.Client = netip.AddrPortFrom(netip.AddrFrom16(e.Client.Addr().As16()), 1)
		}},
		{"icmp", func(e *Entry) { e.Proto = 1 }},
		{"udp in syn", func(e *Entry) { e.Proto, e.State = ProtoUDP, StateSYN }},
		{"state 9", func(e *Entry) { e.State = 9 }},
		{"negative lifetime", func(e *Entry) { e.Lifetime = -time.Second }},
	} {
		e := ok
		c.f(&e)
		if e.check() == "" {
			t.Errorf("%s: %v passes the check", c.name, e)
		}
	}
	if msg := ok.check(); msg != "" {
		t.Fatalf("%v: %s", ok, msg)
	}
}

// FuzzDecode: no input panics decode, or makes it allocate, and any input
// it accepts is exactly what encoding its result produces (so nothing in
// an accepted datagram goes unchecked).
func FuzzDecode(f *testing.F) {
	for _, b := range pack(f, testKey, 3, 9, testEntries(60)) {
		f.Add(b)
	}
	f.Add([]byte("FCSY\x01\x02"))
	f.Add(make([]byte, HeaderLen+MACLen))
	m := newMAC(testKey)
	ents := make([]Entry, 0, MaxEntries)
	f.Fuzz(func(t *testing.T, b []byte) {
		var h header
		var es []Entry
		var r Reason
		allocs := testing.AllocsPerRun(1, func() { h, es, r = decode(b, m, ents) })
		if allocs > 0 {
			t.Fatalf("decode of %d bytes allocated %.0f times", len(b), allocs)
		}
		if len(es) > MaxEntries || cap(es) != MaxEntries {
			t.Fatalf("decode returned %d entries (cap %d), want at most %d in the caller's slice", len(es), cap(es), MaxEntries)
		}
		if r == ReasonBadMAC {
			// Everything but the MAC passed: seal it as a key holder
			// would, so that the fuzzer's bodies reach the accepting
			// path too, not only the seeds.
			b = slices.Clone(b)
			m.appendSum(b[:len(b)-MACLen], b[:len(b)-MACLen])
			if h, es, r = decode(b, m, ents); r != reasonNone {
				t.Fatalf("resealed datagram dropped as %s", r)
			}
		}
		if r != reasonNone {
			return
		}
		// Accepted: re-encode and compare.
		d := newDatagram()
		for i := range es {
			if msg := es[i].check(); msg != "" {
				t.Fatalf("accepted entry %v: %s", es[i], msg)
			}
			d.add(&es[i])
		}
		again := d.seal(newMAC(testKey), h.typ, h.flags, h.sender, h.seq, time.Unix(0, h.sent))
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted %x\nre-encodes as %x", b, again)
		}
	})
}

func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("reason %d is named %q", r, s)
		}
		seen[s] = true
	}
	if got := fmt.Sprint(len(seen)); got != fmt.Sprint(int(numReasons)-1) {
		t.Errorf("got %s reasons, want %d", got, numReasons-1)
	}
}

// TestDatagram: what Datagram builds decodes as sent, and it refuses what
// a Node would not send.
func TestDatagram(t *testing.T) {
	es := testEntries(3)
	b, err := Datagram(testKey, 7, 9, time.Unix(0, 42), es)
	if err != nil {
		t.Fatal(err)
	}
	h, got, r := decode(b, newMAC(testKey), make([]Entry, 0, MaxEntries))
	if r != reasonNone || h.sender != 7 || h.seq != 9 || h.sent != 42 || h.typ != typeEntries || len(got) != 3 || got[0] != es[0] {
		t.Fatalf("decoded %+v, %v, %v; want epoch 7, seq 9, sent 42, the 3 entries", h, got, r)
	}
	if _, _, r := decode(b, newMAC([]byte("another key, 16+ bytes")), nil); r != ReasonBadMAC {
		t.Errorf("with another key: %v, want bad_mac", r)
	}
	for _, c := range []struct {
		key []byte
		seq uint64
		es  []Entry
	}{{testKey[:8], 1, nil}, {testKey, 0, nil}, {testKey, 1, []Entry{{}}}, {testKey, 1, testEntries(MaxEntries + 1)}} {
		if _, err := Datagram(c.key, 1, c.seq, time.Now(), c.es); err == nil {
			t.Errorf("Datagram(key %d bytes, seq %d, %d entries) built one; want an error", len(c.key), c.seq, len(c.es))
		}
	}
}

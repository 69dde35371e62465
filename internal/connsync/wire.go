package connsync

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"math"
	"net/netip"
	"time"
)

// The wire format, version 1 (docs/connections.md, "Sync"). Every integer
// is big-endian.
//
//	offset size
//	 0     4   magic "FCSY"
//	 4     1   version (1)
//	 5     1   type: 1 entries, 2 hello
//	 6     2   flags: bit 0 = part of a full resync; others 0, ignored
//	 8     8   sender id: the sending daemon's start time (Unix ns), its epoch
//	16     8   sequence number, from 1 within the epoch
//	24     8   timestamp: when the datagram was sent (Unix ns)
//	32     2   entry count (0 in a hello)
//	34     2   reserved, 0
//	36     ... entries
//	end-32 32  HMAC-SHA256 of every byte before it
//
// An entry is 12 fixed bytes and three addresses:
//
//	0 1 families: bit 0 = client and VIP are IPv6, bit 1 = backend is IPv6
//	1 1 protocol (6 or 17)
//	2 1 state (0 established, 1 syn, 2 fin, 3 closed)
//	3 1 reserved, 0
//	4 2 client port
//	6 2 VIP port
//	8 4 remaining lifetime, seconds
//	12  client, VIP, backend addresses: 4 bytes each if IPv4, 16 if IPv6
const (
	// MaxDatagram is the largest datagram sent or accepted (UDP
	// payload). With the 20 or 40 bytes of IP header and 8 of UDP it fits
	// a 1500-byte MTU, so that no datagram is fragmented; tunnels with
	// up to 52 bytes of overhead (IPv6 header plus GRE or VXLAN's) fit too.
	MaxDatagram = 1400
	// HeaderLen and MACLen frame every datagram.
	HeaderLen = 36
	MACLen    = sha256.Size
	// Version is the protocol version this package speaks.
	Version = 1

	entryFixed = 12
	minEntry   = entryFixed + 3*4
	maxEntry   = entryFixed + 3*16
	// MaxEntries is the most entries a datagram can hold (all IPv4).
	MaxEntries = (MaxDatagram - HeaderLen - MACLen) / minEntry

	famClient6  = 1 << 0
	famBackend6 = 1 << 1
)

var magic = [4]byte{'F', 'C', 'S', 'Y'}

type msgType uint8

const (
	typeEntries msgType = 1
	typeHello   msgType = 2
)

const flagResync uint16 = 1 << 0

// Reason is why a received datagram was dropped.
type Reason uint8

// The reasons, in the order the receiver checks them.
const (
	reasonNone Reason = iota
	// ReasonOversized: longer than MaxDatagram.
	ReasonOversized
	// ReasonUnknownPeer: from a source address and port that is not a
	// configured peer.
	ReasonUnknownPeer
	// ReasonTruncated: shorter than a header and a MAC, or ends before
	// the entries its count announces.
	ReasonTruncated
	// ReasonBadMagic: not a sync datagram.
	ReasonBadMagic
	// ReasonBadVersion: a protocol version this node does not speak.
	ReasonBadVersion
	// ReasonBadType: an unknown message type.
	ReasonBadType
	// ReasonBadCount: a count over MaxEntries, a hello with entries, an
	// entries message with none, or bytes left after the counted entries.
	ReasonBadCount
	// ReasonMalformed: an entry with a field out of its range.
	ReasonMalformed
	// ReasonBadMAC: the MAC does not match (forged, altered, or sent with
	// another key).
	ReasonBadMAC
	// ReasonReplay: a sequence number already seen or older than the
	// replay window, or an epoch older than the peer's current one.
	ReasonReplay
	// ReasonSelf: our own datagram came back (the peer list names this
	// node, or a multicast loop).
	ReasonSelf
	numReasons
)

var reasonNames = [numReasons]string{
	"", "oversized", "unknown_peer", "truncated", "bad_magic", "bad_version", "bad_type",
	"bad_count", "malformed", "bad_mac", "replay", "self",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every drop reason, for metrics that show all of them.
func Reasons() []Reason {
	out := make([]Reason, 0, numReasons-1)
	for r := reasonNone + 1; r < numReasons; r++ {
		out = append(out, r)
	}
	return out
}

// header is a datagram's header, decoded.
type header struct {
	typ    msgType
	flags  uint16
	sender uint64
	seq    uint64
	sent   int64 // Unix ns
	count  uint16
}

// mac computes and checks datagram MACs; one per goroutine.
type mac struct {
	h   hash.Hash
	sum [MACLen]byte // scratch, so that checking allocates nothing
}

// newMAC returns the datagram MAC keyed with key.
func newMAC(key []byte) *mac { return &mac{h: hmac.New(sha256.New, key)} }

// appendSum appends the MAC of b to dst.
func (m *mac) appendSum(dst, b []byte) []byte {
	m.h.Reset()
	m.h.Write(b)
	return m.h.Sum(dst)
}

// verify reports whether sum is the MAC of b, in constant time.
func (m *mac) verify(b, sum []byte) bool {
	return hmac.Equal(m.appendSum(m.sum[:0], b), sum)
}

// datagram builds one outgoing datagram in a buffer of MaxDatagram bytes.
type datagram struct {
	buf   []byte
	count int
}

func newDatagram() *datagram { return &datagram{buf: make([]byte, HeaderLen, MaxDatagram)} }

// reset empties d for a new message.
func (d *datagram) reset() {
	d.buf, d.count = d.buf[:HeaderLen], 0
}

func entrySize(e *Entry) int {
	n := entryFixed + 4
	if e.IPv6() {
		n += 2 * 16
	} else {
		n += 2 * 4
	}
	if e.Backend.Is6() {
		n += 12
	}
	return n
}

// room reports whether e fits beside what d holds.
func (d *datagram) room(e *Entry) bool {
	return d.count < MaxEntries && len(d.buf)+entrySize(e)+MACLen <= MaxDatagram
}

// add appends e, which must fit (room) and be valid (check).
func (d *datagram) add(e *Entry) {
	var fam byte
	if e.IPv6() {
		fam |= famClient6
	}
	if e.Backend.Is6() {
		fam |= famBackend6
	}
	secs := uint32(math.Ceil(min(e.Lifetime, MaxLifetime).Seconds()))
	b := append(d.buf, fam, e.Proto, byte(e.State), 0)
	b = binary.BigEndian.AppendUint16(b, e.Client.Port())
	b = binary.BigEndian.AppendUint16(b, e.VIP.Port())
	b = binary.BigEndian.AppendUint32(b, secs)
	d.buf = appendAddr(appendAddr(appendAddr(b, e.Client.Addr()), e.VIP.Addr()), e.Backend)
	d.count++
}

// seal writes the header and the MAC and returns the datagram, valid until
// the next reset.
func (d *datagram) seal(m *mac, typ msgType, flags uint16, sender, seq uint64, now time.Time) []byte {
	h := d.buf[:HeaderLen]
	copy(h, magic[:])
	h[4], h[5] = Version, byte(typ)
	binary.BigEndian.PutUint16(h[6:], flags)
	binary.BigEndian.PutUint64(h[8:], sender)
	binary.BigEndian.PutUint64(h[16:], seq)
	binary.BigEndian.PutUint64(h[24:], uint64(now.UnixNano()))
	binary.BigEndian.PutUint16(h[32:], uint16(d.count))
	binary.BigEndian.PutUint16(h[34:], 0)
	return m.appendSum(d.buf, d.buf)
}

// appendAddr appends a's 4 (IPv4) or 16 bytes; entries have no zone
// (Entry.check), so AppendBinary adds nothing else and cannot fail.
func appendAddr(b []byte, a netip.Addr) []byte {
	b, _ = a.AppendBinary(b)
	return b
}

// decode parses and authenticates a datagram. Entries are decoded into
// ents[:0] (cap MaxEntries, so nothing is allocated); nothing in b is
// trusted before the MAC is checked, and nothing decoded is used by the
// caller unless the reason is reasonNone. Checks go from the cheapest to
// the MAC, so that a drop's reason says what was wrong first.
func decode(b []byte, m *mac, ents []Entry) (header, []Entry, Reason) {
	var h header
	ents = ents[:0]
	switch {
	case len(b) > MaxDatagram:
		return h, ents, ReasonOversized
	case len(b) < 4 || [4]byte(b[:4]) != magic:
		if len(b) < 4 && string(b) == string(magic[:len(b)]) {
			return h, ents, ReasonTruncated
		}
		return h, ents, ReasonBadMagic
	case len(b) < 5:
		return h, ents, ReasonTruncated
	case b[4] != Version:
		return h, ents, ReasonBadVersion
	case len(b) < HeaderLen+MACLen:
		return h, ents, ReasonTruncated
	}
	h = header{
		typ:    msgType(b[5]),
		flags:  binary.BigEndian.Uint16(b[6:]),
		sender: binary.BigEndian.Uint64(b[8:]),
		seq:    binary.BigEndian.Uint64(b[16:]),
		sent:   int64(binary.BigEndian.Uint64(b[24:])),
		count:  binary.BigEndian.Uint16(b[32:]),
	}
	switch {
	case h.typ != typeEntries && h.typ != typeHello:
		return h, ents, ReasonBadType
	case h.count > MaxEntries, h.typ == typeHello && h.count != 0, h.typ == typeEntries && h.count == 0:
		return h, ents, ReasonBadCount
	case binary.BigEndian.Uint16(b[34:]) != 0:
		return h, ents, ReasonMalformed
	}
	body, sum := b[HeaderLen:len(b)-MACLen], b[len(b)-MACLen:]
	for range h.count {
		if len(body) < entryFixed {
			return h, ents, ReasonTruncated
		}
		fam := body[0]
		n := entryFixed + 4*3
		if fam&famClient6 != 0 {
			n += 2 * 12
		}
		if fam&famBackend6 != 0 {
			n += 12
		}
		if len(body) < n {
			return h, ents, ReasonTruncated
		}
		e, ok := decodeEntry(body[:n])
		if !ok {
			return h, ents, ReasonMalformed
		}
		ents = append(ents, e)
		body = body[n:]
	}
	if len(body) != 0 {
		return h, ents, ReasonBadCount
	}
	if !m.verify(b[:len(b)-MACLen], sum) {
		return h, ents, ReasonBadMAC
	}
	return h, ents, reasonNone
}

// decodeEntry reads one entry of exactly its size.
func decodeEntry(b []byte) (Entry, bool) {
	fam, proto, state := b[0], b[1], State(b[2])
	if fam&^(famClient6|famBackend6) != 0 || b[3] != 0 ||
		(proto != ProtoTCP && proto != ProtoUDP) || state > StateClosed ||
		(proto == ProtoUDP && state != StateEstablished) {
		return Entry{}, false
	}
	secs := binary.BigEndian.Uint32(b[8:])
	if time.Duration(secs)*time.Second > MaxLifetime {
		return Entry{}, false
	}
	rest := b[entryFixed:]
	addr := func(v6 bool) (netip.Addr, bool) {
		if v6 {
			a := netip.AddrFrom16([16]byte(rest[:16]))
			rest = rest[16:]
			return a, !a.Is4In6()
		}
		a := netip.AddrFrom4([4]byte(rest[:4]))
		rest = rest[4:]
		return a, true
	}
	c, ok1 := addr(fam&famClient6 != 0)
	v, ok2 := addr(fam&famClient6 != 0)
	be, ok3 := addr(fam&famBackend6 != 0)
	if !ok1 || !ok2 || !ok3 {
		return Entry{}, false
	}
	return Entry{
		Client:   netip.AddrPortFrom(c, binary.BigEndian.Uint16(b[4:])),
		VIP:      netip.AddrPortFrom(v, binary.BigEndian.Uint16(b[6:])),
		Proto:    proto,
		Backend:  be,
		State:    state,
		Lifetime: time.Duration(secs) * time.Second,
	}, true
}

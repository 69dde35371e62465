package vrrp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Wire constants of VRRPv3 (RFC 5798 §5).
const (
	Version           = 3   // the protocol version this package speaks
	TypeAdvertisement = 1   // the only message type of VRRPv3
	Protocol          = 112 // IP protocol number (and IPv6 next header)
	TTL               = 255 // IPv4 TTL / IPv6 hop limit, sent and required on receipt
	HeaderLen         = 8   // the fixed part of a message, before the addresses

	// MaxAdvertInterval is the largest Max Adver Int: a 12-bit field, in
	// centiseconds (40.95 s).
	MaxAdvertInterval = 0x0fff
	// MaxAddresses is the most addresses one advertisement can list (the
	// count field is 8 bits).
	MaxAddresses = 255
)

// The multicast groups advertisements are sent to (RFC 5798 §5.1.1.2 and
// §5.1.2.2).
var (
	GroupIPv4 = netip.AddrFrom4([4]byte{224, 0, 0, 18})
	GroupIPv6 = netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 15: 0x12})
)

// Advert is a VRRPv3 advertisement (RFC 5798 §5.2):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	|Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//	|(rsvd) |     Max Adver Int     |          Checksum             |
//	|                       IPvX Address(es)                        |
//
// All addresses are of one family, the family of the IP packet that
// carries the message.
type Advert struct {
	VRID     uint8
	Priority uint8 // 0 = the master is stopping; 255 = the address owner
	// MaxAdvertInterval is the sender's advertisement interval in
	// centiseconds, 12 bits.
	MaxAdvertInterval uint16
	Addresses         []netip.Addr
}

// Len is the length of the message on the wire.
func (a *Advert) Len() int {
	n := HeaderLen
	for _, ip := range a.Addresses {
		n += ip.BitLen() / 8
	}
	return n
}

// Marshal returns the message as sent from src to dst, whose addresses
// enter the checksum through the pseudo-header.
func (a *Advert) Marshal(src, dst netip.Addr) ([]byte, error) {
	return a.Append(make([]byte, 0, a.Len()), src, dst)
}

// Append appends the message as sent from src to dst to b. It does not
// allocate when b has room for Len more bytes.
func (a *Advert) Append(b []byte, src, dst netip.Addr) ([]byte, error) {
	src, dst = src.Unmap(), dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return b, fmt.Errorf("vrrp: marshal: source %s and destination %s must be addresses of one family", src, dst)
	}
	if len(a.Addresses) > MaxAddresses {
		return b, fmt.Errorf("vrrp: marshal: %d addresses, at most %d fit an advertisement", len(a.Addresses), MaxAddresses)
	}
	if a.MaxAdvertInterval > MaxAdvertInterval {
		return b, fmt.Errorf("vrrp: marshal: interval %d cs is over the maximum %d", a.MaxAdvertInterval, MaxAdvertInterval)
	}
	start := len(b)
	b = append(b, Version<<4|TypeAdvertisement, a.VRID, a.Priority, uint8(len(a.Addresses)))
	b = binary.BigEndian.AppendUint16(b, a.MaxAdvertInterval)
	b = append(b, 0, 0) // checksum
	for _, ip := range a.Addresses {
		ip = ip.Unmap()
		if ip.Is4() != src.Is4() {
			return b[:start], fmt.Errorf("vrrp: marshal: address %s is not of the packet's family", ip)
		}
		b = appendIP(b, ip)
	}
	msg := b[start:]
	binary.BigEndian.PutUint16(msg[6:], checksum(src, dst, msg))
	return b, nil
}

// Unmarshal parses and validates msg, a message received from src to dst
// (the addresses of the IP header; they enter the checksum). It checks the
// version, the type, the length against the address count and the
// checksum, in that order, and returns a *ParseError naming the first that
// fails. It reuses a.Addresses' storage.
func (a *Advert) Unmarshal(msg []byte, src, dst netip.Addr) error {
	src, dst = src.Unmap(), dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return &ParseError{DropFamily, fmt.Sprintf("source %s and destination %s are not addresses of one family", src, dst)}
	}
	if len(msg) < HeaderLen {
		return &ParseError{DropShort, fmt.Sprintf("%d bytes, a message has at least %d", len(msg), HeaderLen)}
	}
	if v := msg[0] >> 4; v != Version {
		return &ParseError{DropVersion, fmt.Sprintf("version %d, want %d", v, Version)}
	}
	if t := msg[0] & 0x0f; t != TypeAdvertisement {
		return &ParseError{DropType, fmt.Sprintf("type %d, want %d (advertisement)", t, TypeAdvertisement)}
	}
	size := 4
	if src.Is6() {
		size = 16
	}
	count := int(msg[3])
	if want := HeaderLen + count*size; len(msg) != want {
		return &ParseError{DropLength, fmt.Sprintf("%d bytes for %d addresses, want %d", len(msg), count, want)}
	}
	if c := checksum(src, dst, msg); c != 0 {
		return &ParseError{DropChecksum, fmt.Sprintf("checksum 0x%04x does not verify from %s to %s", binary.BigEndian.Uint16(msg[6:]), src, dst)}
	}
	a.VRID = msg[1]
	a.Priority = msg[2]
	a.MaxAdvertInterval = binary.BigEndian.Uint16(msg[4:]) & MaxAdvertInterval
	a.Addresses = a.Addresses[:0]
	for off := HeaderLen; off < len(msg); off += size {
		ip, _ := netip.AddrFromSlice(msg[off : off+size])
		a.Addresses = append(a.Addresses, ip)
	}
	return nil
}

// ParseError says why a packet is not a valid advertisement.
type ParseError struct {
	Reason DropReason
	Detail string
}

func (e *ParseError) Error() string {
	return "vrrp: invalid advertisement: " + e.Reason.String() + ": " + e.Detail
}

// checksum returns the Internet checksum of msg (with whatever its checksum
// field holds) and the pseudo-header of src and dst: RFC 5798 §5.2.8 for
// IPv4 (source, destination, zero, protocol, length) and RFC 2460 §8.1 for
// IPv6 (source, destination, 32-bit length, three zero bytes, next header).
// Filled into a zero checksum field it makes the message verify; over a
// message that verifies it is 0.
func checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		sum = sum16(sum, s[:])
		sum = sum16(sum, d[:])
	} else {
		s, d := src.As16(), dst.As16()
		sum = sum16(sum, s[:])
		sum = sum16(sum, d[:])
		sum += uint32(len(msg)) >> 16
	}
	sum += Protocol + uint32(len(msg))&0xffff
	sum = sum16(sum, msg)
	return ^fold(sum)
}

// sum16 adds b to sum as big-endian 16-bit words (an odd last byte padded
// with zero).
func sum16(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
		if sum > 0xffff0000 {
			sum = uint32(fold(sum))
		}
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

// fold adds the carries of a ones' complement sum back in.
func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// DropReason says why a received packet was not taken as an advertisement
// of this virtual router.
type DropReason int

// Reasons for dropping a received packet.
const (
	DropShort    DropReason = iota // shorter than a message, or than its IP header says
	DropTTL                        // TTL / hop limit not 255
	DropVersion                    // version not 3
	DropType                       // type not advertisement
	DropLength                     // length does not match the address count
	DropChecksum                   // checksum does not verify
	DropVRID                       // another virtual router's advertisement
	DropFamily                     // addresses of the wrong family
	DropPeer                       // with unicast peers: the source is not one
	DropInterval                   // Max Adver Int 0
	numDropReasons
)

var dropNames = [numDropReasons]string{"short", "ttl", "version", "type", "length", "checksum", "vrid", "family", "peer", "interval"}

func (r DropReason) String() string {
	if r >= 0 && r < numDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("DropReason(%d)", int(r))
}

// DropReasons lists every reason, in order.
func DropReasons() []DropReason {
	out := make([]DropReason, numDropReasons)
	for i := range out {
		out[i] = DropReason(i)
	}
	return out
}

// appendIP appends the 4 or 16 bytes of a.
func appendIP(b []byte, a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return append(b, v[:]...)
	}
	v := a.As16()
	return append(b, v[:]...)
}

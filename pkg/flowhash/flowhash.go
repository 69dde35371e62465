// Package flowhash is the Go twin of bpf/flowhash.h: the hash that the XDP
// balancer computes over a packet's flow to pick a Maglev slot. Go uses it to
// predict the backend of any packet (`fulcrum explain`, tests).
//
// The two implementations are checked against each other with the vectors in
// testdata/vectors.json: the Go test here and the BPF_PROG_RUN test in
// pkg/datapath read the same file. Change both or neither.
//
// The function is the final mix of Bob Jenkins' lookup3 over three 32-bit
// words: the source address, the destination address and the port pair, with
// the protocol added to the seed. Words are packet bytes read as
// little-endian, as the BPF program loads them on a little-endian host; an
// IPv6 address is first folded to one word by XOR.
package flowhash

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Seed is FLOW_HASH_SEED of bpf/consts.h.
const Seed uint32 = 0x7a3c19e5

// Hash3 is lookup3's final mix of three words with an initial value.
func Hash3(a, b, c, initval uint32) uint32 {
	a += 0xdeadbeef + 12 + initval
	b += 0xdeadbeef + 12 + initval
	c += 0xdeadbeef + 12 + initval
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return c
}

// Word returns an address folded to the word the BPF program hashes: the
// IPv4 address as loaded, or the XOR of the four words of an IPv6 address.
func Word(a netip.Addr) uint32 {
	if a.Is4() || a.Is4In6() {
		b := a.Unmap().As4()
		return binary.LittleEndian.Uint32(b[:])
	}
	b := a.As16()
	return binary.LittleEndian.Uint32(b[0:]) ^ binary.LittleEndian.Uint32(b[4:]) ^
		binary.LittleEndian.Uint32(b[8:]) ^ binary.LittleEndian.Uint32(b[12:])
}

// Ports returns the port pair as the BPF program loads it from the first
// four bytes of a TCP or UDP header.
func Ports(sport, dport uint16) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return binary.LittleEndian.Uint32(b[:])
}

// Flow returns the hash of a 5-tuple, as the balancer computes it for a VIP
// with the default (maglev) scheduler.
func Flow(src, dst netip.Addr, sport, dport uint16, proto uint8) uint32 {
	return Hash3(Word(src), Word(dst), Ports(sport, dport), Seed+uint32(proto))
}

// Source returns the hash of the client address alone, as the balancer
// computes it for a VIP with the source-hash scheduler.
func Source(src netip.Addr, proto uint8) uint32 {
	return Hash3(Word(src), 0, 0, Seed+uint32(proto))
}

// Slot maps a hash onto a ring of size slots the way the BPF program does:
// (hash × size) >> 32, a multiply instead of a modulo.
func Slot(hash, size uint32) uint32 {
	return uint32(uint64(hash) * uint64(size) >> 32)
}

package datapath

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// hostFilter is the Go side of the destination prefilter (bpf/hostfilter.h):
// the host_filter bitmap, mapped into this process, and which addresses hold
// which of its bits. A bit is set while some address that hashes to it has
// a VIP or a fragment policy; the program passes a packet whose destination
// bit is clear without looking at the connection table. A missing bit would
// send a VIP's packets to the host (a bug), an extra one only costs those
// packets the normal path, so:
//
//   - an address's bit is set before the first VIP on it is published
//     (putVIPKey holds it), and cleared only after its last VIP and its
//     policy are gone from the maps (syncGlobals releases it);
//   - a bit that several addresses share stays set while any holds it
//     (refs counts them);
//   - a word is rewritten with one 8-byte atomic store into the map's
//     memory, so the program's 8-byte load sees it whole, old or new.
//
// It is guarded by the datapath's mu.
type hostFilter struct {
	mem   []byte   // the map's memory, mapped shared
	words []uint64 // the same memory as words
	shift uint     // the hash's bits past it are an address's bit
	// held maps each address that holds a bit to that bit (word << 6 |
	// bit); refs counts the addresses holding each set bit.
	held map[netip.Addr]uint32
	refs map[uint32]uint32
}

// newHostFilter maps the host_filter map m, whose words it takes as they
// are (adopt rewrites them from the pinned VIPs).
func newHostFilter(m *ebpf.Map) (*hostFilter, error) {
	n := m.MaxEntries()
	if m.ValueSize() != 8 || n < 64 || n&(n-1) != 0 {
		return nil, fmt.Errorf("host_filter: want a power of two of 8-byte words, at least 64, got %d of %d bytes", n, m.ValueSize())
	}
	mem, words, err := mapArray[uint64](m, true)
	if err != nil {
		return nil, fmt.Errorf("host_filter: %w", err)
	}
	return &hostFilter{
		mem:   mem,
		words: words,
		shift: uint(32 - 6 - bits.TrailingZeros32(n)),
		held:  make(map[netip.Addr]uint32),
		refs:  make(map[uint32]uint32),
	}, nil
}

func (h *hostFilter) close() {
	if h != nil && h.mem != nil {
		unix.Munmap(h.mem)
		h.mem, h.words = nil, nil
	}
}

// hostFilterHash is bpf/hostfilter.h host_filter_hash (Fibonacci hashing).
func hostFilterHash(a uint32) uint32 {
	return a * 0x9e3779b1
}

// addrWord is an address as the program hashes it: the IPv4 address, or
// the IPv6 address folded by XOR, loaded little-endian (flowhash.h).
func addrWord(a netip.Addr) uint32 {
	if a.Is4() {
		b := a.As4()
		return binary.LittleEndian.Uint32(b[:])
	}
	b := a.As16()
	var w uint32
	for i := 0; i < 16; i += 4 {
		w ^= binary.LittleEndian.Uint32(b[i:])
	}
	return w
}

// bit returns the address's bit, word << 6 | bit in the word: the top
// bits of its hash, as many as the map has bits.
func (h *hostFilter) bit(a netip.Addr) uint32 {
	return hostFilterHash(addrWord(a)) >> h.shift
}

// set sets or clears a bit with one store of its whole word. Only Go
// writes the map, under the datapath's lock, so the load cannot race.
func (h *hostFilter) set(bit uint32, on bool) {
	w := &h.words[bit>>6]
	v := atomic.LoadUint64(w)
	if on {
		v |= 1 << (bit & 63)
	} else {
		v &^= 1 << (bit & 63)
	}
	atomic.StoreUint64(w, v)
}

// hold makes sure the address's bit is set, before a VIP on it is
// published.
func (h *hostFilter) hold(a netip.Addr) {
	if _, ok := h.held[a]; ok {
		return
	}
	b := h.bit(a)
	h.held[a] = b
	h.refs[b]++
	if h.refs[b] == 1 {
		h.set(b, true)
	}
}

// release drops the hold of every address that inUse no longer reports,
// clearing the bits no address holds any more.
func (h *hostFilter) release(inUse func(netip.Addr) bool) {
	for a, b := range h.held {
		if inUse(a) {
			continue
		}
		delete(h.held, a)
		h.refs[b]--
		if h.refs[b] == 0 {
			delete(h.refs, b)
			h.set(b, false)
		}
	}
}

// rebuild holds exactly the addresses given and rewrites every word that
// differs from what they need: bits they need are never cleared, not even
// for an instant, and bits nobody needs (an earlier daemon's leftovers) go.
func (h *hostFilter) rebuild(addrs []netip.Addr) {
	h.held = make(map[netip.Addr]uint32, len(addrs))
	h.refs = make(map[uint32]uint32)
	want := make(map[uint32]uint64)
	for _, a := range addrs {
		if _, ok := h.held[a]; ok {
			continue
		}
		b := h.bit(a)
		h.held[a] = b
		h.refs[b]++
		want[b>>6] |= 1 << (b & 63)
	}
	for i := range h.words {
		if w := want[uint32(i)]; atomic.LoadUint64(&h.words[i]) != w {
			atomic.StoreUint64(&h.words[i], w)
		}
	}
}

// addrsInUse reports whether an address has a VIP or a policy in the maps
// (as the datapath wrote them), the addresses whose bits must stay set.
func (d *Datapath) addrsInUse() func(netip.Addr) bool {
	used := make(map[netip.Addr]bool, len(d.vips)+len(d.written.policy))
	for v := range d.vips {
		used[v.Addr] = true
	}
	for a := range d.written.policy {
		used[a] = true
	}
	return func(a netip.Addr) bool { return used[a] }
}

// adoptHostFilter brings the pinned prefilter in line with the adopted VIPs
// and policies.
func (d *Datapath) adoptHostFilter() {
	var addrs []netip.Addr
	for v := range d.vips {
		addrs = append(addrs, v.Addr)
	}
	for a := range d.written.policy {
		addrs = append(addrs, a)
	}
	d.hosts.rebuild(addrs)
}

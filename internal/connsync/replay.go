package connsync

// windowBits is the replay window: how far behind the highest sequence
// number seen a datagram may arrive (reordered) and still be accepted
// once. IPsec's default is 32 or 64 (RFC 4303 §3.4.3). A sender numbers
// and sends under one lock, so only the network reorders; but a resync
// sends thousands of datagrams a second, and 128 bytes a peer buys a
// window that a reordering path or a multi-queue NIC will not outrun.
const windowBits = 1024

// window is an anti-replay sliding window (RFC 4303 appendix A): the
// highest sequence number accepted and a bitmap of the windowBits numbers
// at and below it. Its size is fixed, whatever the peer sends.
type window struct {
	top  uint64
	bits [windowBits / 64]uint64
}

// check reports whether seq may be accepted; it changes nothing, so that
// a datagram that fails a later check does not consume its number.
func (w *window) check(seq uint64) bool {
	switch {
	case seq == 0:
		return false
	case seq > w.top:
		return true
	case w.top-seq >= windowBits:
		return false
	}
	i := seq % windowBits
	return w.bits[i/64]&(1<<(i%64)) == 0
}

// mark records seq as seen; check(seq) must have been true.
func (w *window) mark(seq uint64) {
	if seq > w.top {
		// Clear the numbers the window slides over: they are new slots.
		if seq-w.top >= windowBits {
			w.bits = [windowBits / 64]uint64{}
		} else {
			for s := w.top + 1; s < seq; s++ {
				i := s % windowBits
				w.bits[i/64] &^= 1 << (i % 64)
			}
		}
		w.top = seq
	}
	i := seq % windowBits
	w.bits[i/64] |= 1 << (i % 64)
}

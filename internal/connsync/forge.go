package connsync

import (
	"errors"
	"fmt"
	"time"
)

// Datagram builds one datagram as a Node with this key and epoch sends it
// as its seq-th: an entries datagram, or a hello when entries is empty.
// It is for tests and tools that play a peer (the daemon's bad-input test
// forges, replays and alters what it builds); a Node numbers and sends
// its own.
func Datagram(key []byte, epoch, seq uint64, sent time.Time, entries []Entry) ([]byte, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("connsync: the key is %d bytes, under the minimum %d", len(key), MinKeyLen)
	}
	if seq == 0 {
		return nil, errors.New("connsync: sequence numbers start at 1")
	}
	d := newDatagram()
	for i := range entries {
		if why := entries[i].check(); why != "" {
			return nil, fmt.Errorf("connsync: entry %d (%v): %s", i, entries[i], why)
		}
		if !d.room(&entries[i]) {
			return nil, fmt.Errorf("connsync: entry %d does not fit a %d-byte datagram", i, MaxDatagram)
		}
		d.add(&entries[i])
	}
	typ := typeEntries
	if len(entries) == 0 {
		typ = typeHello
	}
	return d.seal(newMAC(key), typ, 0, epoch, seq, sent), nil
}

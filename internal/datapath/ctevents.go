package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
)

// ConnEvents reads the connection entries the fast path exports while
// sync is on (SetSync): each new entry and each TCP state change, from the
// ct_events ring buffer (bpf/ctevents.h). Events the ring had no room for
// are counted by the fast path (StatCtExportFull), not here.
type ConnEvents struct {
	d   *Datapath
	rd  *ringbuf.Reader
	rec ringbuf.Record
	res *connResolver
	at  time.Time // when res was taken
	// unresolved counts events whose VIP or backend was gone (or changed)
	// when they were read: nothing to tell a peer about.
	unresolved uint64
	deadline   time.Time // SetDeadline's
}

// connEventPoll is how often Read looks at the ring: the fast path never
// wakes the reader (bpf/ctevents.h: a wakeup per event doubles a new
// flow's cost), so an event waits for the next poll at most this long.
const connEventPoll = 5 * time.Millisecond

// resolverAge bounds how long a reader trusts its copy of the VIPs: a
// changed timeout reaches the events within it. An event whose backend is
// unknown to the copy takes a fresh one at once.
const resolverAge = time.Second

// ctEventSize is sizeof(struct ct_event).
const ctEventSize = 48

// The struct must stay what decodeEvent reads (unsafe.Sizeof of the Go
// type, which bpf2go lays out as C does).
var _ [ctEventSize]byte = [unsafe.Sizeof(balancerCtEvent{})]byte{}

// ConnEvents opens a reader of the fast path's exported entries. One
// reader at a time: a ring buffer has one consumer position.
func (d *Datapath) ConnEvents() (*ConnEvents, error) {
	rd, err := ringbuf.NewReader(d.objs.CtEvents)
	if err != nil {
		return nil, fmt.Errorf("open the connection event ring buffer: %w", err)
	}
	return &ConnEvents{d: d, rd: rd}, nil
}

// Read waits for the next exported entry whose VIP and backend still
// exist, and returns it with its full lifetime (the event is as fresh as
// the packet that made it). After Close it returns an error wrapping
// os.ErrClosed.
func (r *ConnEvents) Read() (SyncEntry, error) {
	for {
		// While records remain, the next read returns at once: the
		// deadline is set (a clock read and a lock) only to wait.
		if r.rec.Remaining == 0 {
			poll := time.Now().Add(connEventPoll)
			if !r.deadline.IsZero() && r.deadline.Before(poll) {
				poll = r.deadline
			}
			r.rd.SetDeadline(poll)
		}
		err := r.rd.ReadInto(&r.rec)
		if errors.Is(err, os.ErrDeadlineExceeded) && (r.deadline.IsZero() || time.Now().Before(r.deadline)) {
			continue // the next poll
		}
		if err != nil {
			return SyncEntry{}, err
		}
		ev, ok := decodeEvent(r.rec.RawSample)
		if !ok {
			r.unresolved++
			continue
		}
		if e, ok := r.resolve(ev); ok {
			return e, nil
		}
		r.unresolved++
	}
}

// Unresolved counts the events Read skipped: their VIP or backend had
// gone, or changed generation, by the time they were read.
func (r *ConnEvents) Unresolved() uint64 { return r.unresolved }

// SetDeadline makes Read return os.ErrDeadlineExceeded once t passes
// with no event; the zero time waits for ever.
func (r *ConnEvents) SetDeadline(t time.Time) { r.deadline = t }

// Close ends the reader; a blocked Read returns.
func (r *ConnEvents) Close() error { return r.rd.Close() }

// resolve turns an event's ids into addresses.
func (r *ConnEvents) resolve(ev balancerCtEvent) (SyncEntry, bool) {
	for fresh := false; ; fresh = true {
		if r.res == nil || fresh || time.Since(r.at) > resolverAge {
			r.res, r.at = r.d.resolver(), time.Now()
		}
		b, ok := r.res.backend(ev.Backend, ev.BackendGen)
		if ok && r.res.byIndex[ev.VipIndex] == b.vip {
			f := eventFlow(ev)
			s := ConnState(ev.State & 3)
			return SyncEntry{Flow: f, VIP: b.vip, Backend: b.addr, State: s, Lifetime: b.timeouts.of(b.vip.Proto, s)}, true
		}
		if fresh {
			return SyncEntry{}, false
		}
	}
}

// decodeEvent reads a struct ct_event; false if it is not one.
func decodeEvent(raw []byte) (balancerCtEvent, bool) {
	var ev balancerCtEvent
	if len(raw) < ctEventSize {
		return ev, false
	}
	le := binary.LittleEndian
	for i := range 4 {
		ev.Src[i] = le.Uint32(raw[4*i:])
		ev.Dst[i] = le.Uint32(raw[16+4*i:])
	}
	ev.Sport, ev.Dport = le.Uint16(raw[32:]), le.Uint16(raw[34:])
	ev.Backend = le.Uint32(raw[36:])
	ev.BackendGen, ev.VipIndex = le.Uint16(raw[40:]), le.Uint16(raw[42:])
	ev.Family, ev.Proto, ev.State = raw[44], raw[45], raw[46]
	return ev, ev.Family == 4 || ev.Family == 6
}

// eventFlow is the flow of an event: its tuple as a tuple record holds it.
func eventFlow(ev balancerCtEvent) Flow {
	if ev.Family == 4 {
		return flowOfV4(balancerCtKeyV4{Src: ev.Src[0], Dst: ev.Dst[0], Sport: ev.Sport, Dport: ev.Dport, Proto: ev.Proto})
	}
	return flowOfV6(balancerCtKeyV6{Src: ev.Src, Dst: ev.Dst, Sport: ev.Sport, Dport: ev.Dport, Proto: ev.Proto})
}

package vrrp

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// rxAdvert is a valid advertisement of our VRID.
type rxAdvert struct {
	at       time.Time
	src      netip.Addr
	priority uint8
	interval int
}

func (r *Router) handleAdvert(a rxAdvert) {
	if a.priority == 0 {
		r.zeroReceived.Add(1)
	}
	if r.State() == Backup && a.priority != 0 && a.src == r.lastRxFrom && !r.lastRx.IsZero() {
		r.noteGap(a.at.Sub(r.lastRx))
	}
	r.m.receive(a.at, a.src, a.priority, a.interval)
	// Others' advertisements (a weaker router's, say) do not break the
	// series of the master's.
	if r.State() == Backup && a.priority != 0 && a.src == r.m.master {
		r.lastRx, r.lastRxFrom = a.at, a.src
	}
	r.masterInt.Store(int32(r.m.masterInt))
	r.setMaster(r.m.master)
}

func (r *Router) setMaster(a netip.Addr) {
	r.masterMu.Lock()
	r.master = a
	r.masterMu.Unlock()
}

// advertise implements actions: one advertisement to the group or to each
// peer. It does not allocate.
func (r *Router) advertise(priority uint8) {
	if priority == 0 {
		r.zeroSent.Add(1)
	}
	r.sendMu.Lock()
	if priority == 0 {
		r.disarm() // no guard sends the old priority after this
	}
	// A guard sent this one while the thread was held up (guard.go).
	if !r.due.IsZero() && !r.guard.covered.Before(r.due) {
		r.sendMu.Unlock()
		r.noteGuarded(time.Since(r.due))
		return
	}
	if !r.due.IsZero() {
		r.guard.covered, r.guard.byGuard = r.due, false
	}
	r.adv.Priority = priority
	if !r.src.IsValid() {
		r.sendMu.Unlock()
		r.sendErrors.Add(1)
		return
	}
	t0 := time.Now()
	n, err := r.sock.send(&r.adv, r.src, r.buf)
	r.sendMu.Unlock()
	r.sent.Add(uint64(n))
	if err != nil {
		r.sendErrors.Add(1)
		r.log.Debug("vrrp: send advertisement", "err", err)
	}
	if !r.due.IsZero() {
		r.noteSend(t0.Sub(r.due), time.Since(t0))
	}
	// The repeats ride on later advertisements, not on the one that
	// follows the takeover's own announcement.
	if r.announced {
		r.announced = false
	} else if r.garpLeft > 0 && r.State() == Master {
		r.garpLeft--
		r.announce()
	}
}

// maxDrain bounds the packets read in one go, so that a flood cannot keep
// the timers from running.
const maxDrain = 256

// drain reads and handles the packets waiting on the socket.
func (r *Router) drain() {
	for range maxDrain {
		p, ok, err := r.sock.readNow()
		if !ok {
			if err != nil {
				r.log.Debug("vrrp: receive", "err", err)
			}
			return
		}
		a, reason, ok := r.validate(&r.rxAdv, p)
		if !ok {
			r.dropped[reason].Add(1)
			continue
		}
		r.handleAdvert(a)
	}
}

// validate applies the checks of RFC 5798 §7.1 to a received packet.
func (r *Router) validate(adv *Advert, p packet) (rxAdvert, DropReason, bool) {
	drop := func(reason DropReason, err error, attrs ...any) (rxAdvert, DropReason, bool) {
		if r.log.Enabled(context.Background(), slog.LevelDebug) {
			attrs = append(attrs, "reason", reason, "source", p.src)
			if err != nil {
				attrs = append(attrs, "err", err)
			}
			r.log.Debug("vrrp: dropped packet", attrs...)
		}
		return rxAdvert{}, reason, false
	}
	if p.short {
		return drop(DropShort, nil)
	}
	// keepalived checks the TTL only for multicast; unicast peers may be
	// routed hops away.
	if p.ttl != TTL && r.multicast {
		return drop(DropTTL, nil, "ttl", p.ttl)
	}
	if err := adv.Unmarshal(p.msg, p.src, p.dst); err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			return drop(pe.Reason, err)
		}
		return drop(DropShort, err)
	}
	if adv.VRID != uint8(r.cfg.VRID) {
		return drop(DropVRID, nil, "vrid", adv.VRID)
	}
	if !r.multicast && !slices.Contains(r.cfg.UnicastPeers, p.src) {
		return drop(DropPeer, nil)
	}
	if adv.MaxAdvertInterval == 0 {
		return drop(DropInterval, nil)
	}
	r.received.Add(1)
	if same := sameSet(adv.Addresses, r.ours); same == r.mismatch {
		r.mismatch = !same
		if !same {
			r.log.Warn("vrrp: advertised addresses differ from ours (accepted, RFC 5798 §7.1)",
				"source", p.src, "theirs", slices.Clone(adv.Addresses), "ours", r.ours)
		}
	}
	if r.mismatch {
		r.mismatches.Add(1)
	}
	return rxAdvert{at: p.at, src: p.src, priority: adv.Priority, interval: int(adv.MaxAdvertInterval)}, 0, true
}

func sameSet(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

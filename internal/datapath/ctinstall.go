package datapath

import "time"

// InstallResult says what InstallSynced did with a batch of entries.
type InstallResult struct {
	// Installed entries are in the table now.
	Installed int
	// Fresher: the table's entry of the flow is live and was seen at
	// least as recently as the peer's (local traffic refreshed it, or an
	// earlier sync did): kept.
	Fresher int
	// Unknown: the entry's VIP is not configured here (or has no
	// connection table), or its backend is not one of the VIP's.
	Unknown int
	// Full: every way of the flow's bucket holds another live entry;
	// sync never evicts one.
	Full int
	// Expired: the entry's lifetime was over.
	Expired int
}

// InstallSynced files entries a peer sent into the connection table, where
// the fast path looks for them: the flow's own way of its bucket, else an
// empty way, else one whose entry the fast path would no longer use (its
// backend or VIP gone, or expired), as bpf/balancer.c ct_victim chooses,
// but it never evicts a live entry. Each installed entry's last_seen is
// set so that it expires when the sender's would (its Lifetime from now),
// unless a packet refreshes it. A live entry of the flow at least as fresh
// is kept (fresherThan): the flow's traffic came here since, and this
// node's view is the fresher. Entries of an unknown VIP or backend are
// skipped; the ids are this node's, resolved from addresses. An entry's
// VIP is looked up as given, then as the every-port VIP of its address.
//
// Each entry is written into its way alone, from a fresh read of its
// bucket, as the program writes (ctmem.go): a packet's write to another
// way of the bucket stays. A packet that chose the same way from a read
// before Go's write overwrites Go's entry (as if evicted).
func (d *Datapath) InstallSynced(entries []SyncEntry) (InstallResult, error) {
	var res InstallResult
	clk, err := d.clock()
	if err != nil {
		return res, err
	}
	r := d.resolver()
	for _, e := range entries {
		cv, ok := r.byVIP[e.VIP]
		if !ok && e.VIP.Port != 0 {
			// A peer names the flow's port; here it may be an
			// every-port VIP's, as the fast path's lookup falls back.
			e.VIP.Port = 0
			cv, ok = r.byVIP[e.VIP]
		}
		ig, known := cv.backends[e.Backend]
		if !ok || !known || !e.VIP.holds(e.Flow) {
			res.Unknown++
			continue
		}
		t := cv.timeouts.of(e.VIP.Proto, e.State)
		life := min(e.Lifetime, t)
		if life <= 0 {
			res.Expired++
			continue
		}
		v := balancerCtValue{
			Backend:    ig.id,
			BackendGen: ig.gen,
			State:      uint8(e.State & 3),
			LastSeen:   clk.jiffies - uint32((t-life)*time.Duration(clk.hz)/time.Second),
		}
		mem, done, err := d.ctWriter(e.Flow.Dst.Is4())
		if err != nil {
			return res, err
		}
		installed, fresher, err := d.install(mem, r, clk, e.Flow, v)
		done()
		switch {
		case err != nil:
			return res, err
		case fresher:
			res.Fresher++
		case !installed:
			res.Full++
		default:
			res.Installed++
		}
	}
	return res, nil
}

// install writes entry v of flow f where installWay says, choosing again
// from a new read whenever another writer changed that way first, and
// adjusts the counts for what it replaced.
func (d *Datapath) install(mem *ctMem, r *connResolver, clk kernelClock, f Flow, v balancerCtValue) (installed, fresher bool, err error) {
	p := placeOf(f, uint32(len(mem.buckets)))
	for range ctRetries {
		b := mem.load(p.bucket)
		live := func(w int) bool { return r.live(clk, decodeWay(&b, w)) }
		way, fresher := installWay(&b, p, v, clk.hz, live)
		if way < 0 {
			return false, fresher, nil
		}
		oldLive := b.Ident[way] != 0 && live(way)
		if mem.put(f, p, way, &b, v) {
			d.countReplace(decodeWay(&b, way), oldLive, &v)
			return true, false, nil
		}
	}
	return false, false, errBucketBusy(p.bucket)
}

// installWay returns the way of b a synced entry v goes to, or -1 if none
// may take it; fresher reports that the flow's own way holds a live entry
// at least as fresh (then way is -1): see fresherThan.
func installWay(b *balancerCtBucket, p ctPlace, v balancerCtValue, hz uint32, live func(w int) bool) (way int, fresher bool) {
	for w := range ctWays {
		if p.holds(b, w) {
			if live(w) && fresherThan(decodeWay(b, w), v, hz) {
				return -1, true
			}
			return w, false
		}
	}
	for w := range ctWays {
		if b.Ident[w] == 0 {
			return w, false
		}
	}
	for w := range ctWays {
		if !live(w) {
			return w, false
		}
	}
	return -1, false
}

// stateRank orders the states as a connection goes through them (syn,
// established, fin, closed; bpf/conntrack.h ct_state_after).
var stateRank = [4]int{ConnSYN: 0, ConnEstablished: 1, ConnFIN: 2, ConnClosed: 3}

// fresherThan reports whether the table's entry old of a flow is at least
// as fresh as a synced one, v: seen later by more than a second (the
// wire's lifetimes are whole seconds, so closer times do not say which
// came first), or within a second and as far along in the connection's
// states. Events of one connection (its syn, then its established) often
// arrive in one datagram with the same time: the later state wins.
func fresherThan(old, v balancerCtValue, hz uint32) bool {
	d := int64(int32(old.LastSeen - v.LastSeen))
	switch {
	case d > int64(hz):
		return true
	case d < -int64(hz):
		return false
	}
	ro, rv := stateRank[old.State&3], stateRank[v.State&3]
	return ro > rv || (ro == rv && d >= 0)
}

// live reports whether the fast path would still use entry v: its backend
// is the one it was made for, its VIP has a connection table, and it has
// not been idle past its timeout (bpf/balancer.c ct_vip).
func (r *connResolver) live(clk kernelClock, v balancerCtValue) bool {
	b, ok := r.backend(v.Backend, v.BackendGen)
	return ok && !clk.expired(&v, b.timeouts.of(b.vip.Proto, ConnState(v.State&3)))
}

// holds reports whether flow f is one of the VIP's: its destination, port
// (any, for an every-port VIP) and protocol.
func (v VIP) holds(f Flow) bool {
	return f.Dst == v.Addr && f.Proto == v.Proto && (v.Port == 0 || f.Dport == v.Port)
}

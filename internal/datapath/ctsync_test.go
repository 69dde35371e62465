package datapath

import (
	"errors"
	"os"
	"testing"
	"time"
)

// readEvent returns the next exported entry, or ok false when none comes
// within wait.
func readEvent(t *testing.T, r *ConnEvents, wait time.Duration) (e SyncEntry, ok bool) {
	t.Helper()
	r.SetDeadline(time.Now().Add(wait))
	e, err := r.Read()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return e, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return e, true
}

// TestConnEventsExport: with sync on, a new entry and each TCP state change
// make one event, decoded with the VIP and the backend's address and the
// state's full timeout; a packet that changes no state makes none; with
// sync off nothing is exported.
func TestConnEventsExport(t *testing.T) {
	d := newCTDatapath(t)
	r, err := d.ConnEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := ctCases()[0]
	send(t, d, c.packet(41000, "S"))
	if e, ok := readEvent(t, r, 50*time.Millisecond); ok {
		t.Fatalf("sync off: exported %+v", e.Flow)
	}
	if err := d.SetSync(true); err != nil {
		t.Fatal(err)
	}
	type step struct {
		flags string
		state ConnState
		event bool
	}
	tcp := []step{{"S", ConnSYN, true}, {"A", ConnEstablished, true}, {"A", ConnEstablished, false},
		{"F", ConnFIN, true}, {"", ConnFIN, false}, {"R", ConnClosed, true}, {"", ConnClosed, false}}
	udp := []step{{"", ConnEstablished, true}, {"", ConnEstablished, false}}
	sport := uint16(43000)
	for _, c := range ctCases() {
		steps := tcp
		if c.vip.Proto == UDP {
			steps = udp
		}
		sport++
		t.Run(c.name, func(t *testing.T) {
			f := c.flow(sport)
			for i, s := range steps {
				to, _ := send(t, d, c.packet(sport, s.flags))
				e, ok := readEvent(t, r, 50*time.Millisecond)
				if ok != s.event {
					t.Fatalf("step %d (%q): event %v (%+v), want %v", i, s.flags, ok, e, s.event)
				}
				if !ok {
					continue
				}
				want := SyncEntry{Flow: f, VIP: c.vip, Backend: to, State: s.state,
					Lifetime: d.vips[c.vip].cfg.Timeouts.Normal(c.vip.Proto).of(c.vip.Proto, s.state)}
				if e != want {
					t.Errorf("step %d (%q): event %+v, want %+v", i, s.flags, e, want)
				}
			}
		})
	}
	if err := d.SetSync(false); err != nil {
		t.Fatal(err)
	}
	send(t, d, c.packet(41001, "S"))
	if e, ok := readEvent(t, r, 50*time.Millisecond); ok {
		t.Fatalf("sync off again: exported %+v", e.Flow)
	}
}

// TestConnEventsFull: a ring buffer nobody reads fills; the packets go on
// (each still forwarded), the events that found no room are counted as
// ct_export_full, and every other one is there to read.
func TestConnEventsFull(t *testing.T) {
	d := newCTDatapath(t)
	if err := d.SetSync(true); err != nil {
		t.Fatal(err)
	}
	r, err := d.ConnEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// 2 MiB holds 37449 events of 56 bytes.
	const n = 40000
	c := ctCases()[0]
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p := c.packet(uint16(1024+i), "S")
		if v, _ := runProg(t, d.Program(), p.Build()); v != xdpTX {
			t.Fatalf("packet %d: verdict %s with the ring full", i, verdictNames[v])
		}
	}
	after, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	full := statsDelta(before, after)[StatCtExportFull]
	if full == 0 {
		t.Fatalf("%d events into a ring of %d bytes: ct_export_full 0", n, 1<<21)
	}
	read := 0
	for {
		if _, ok := readEvent(t, r, 20*time.Millisecond); !ok {
			break
		}
		read++
	}
	if uint64(read)+full != n {
		t.Errorf("read %d events and counted %d lost, want %d in all", read, full, n)
	}
	t.Logf("%d events: %d read, %d lost to a full ring (ct_export_full)", n, read, full)
}

// TestInstallSynced: entries of one node, listed by SyncEntries, install
// into another as the fast path finds them, pinned to the sender's backend
// even where the receiver's ring names another; a fresher local entry is
// kept; an unknown backend and a spent lifetime install nothing; an
// installed entry expires when the sender's would.
func TestInstallSynced(t *testing.T) {
	src, dst := newCTDatapath(t), newCTDatapath(t)
	sport := uint16(44000)
	var sent []SyncEntry
	for _, c := range ctCases() {
		sport++
		f := c.flow(sport)
		_, other := c.ring(t, f)
		// The sender's table keeps the flow on a backend its ring no
		// longer names, idle 10s.
		setEntry(t, src, c.vip, f, other, ConnEstablished, 10*time.Second)
		var got *SyncEntry
		for e, err := range src.SyncEntries() {
			if err != nil {
				t.Fatal(err)
			}
			if e.Flow == f {
				got = &e
			}
		}
		if got == nil {
			t.Fatalf("%s: SyncEntries lists no entry of %+v", c.name, f)
		}
		timeout := src.vips[c.vip].cfg.Timeouts.Normal(c.vip.Proto).of(c.vip.Proto, ConnEstablished)
		if got.Backend != other || got.VIP != c.vip || got.Lifetime > timeout-10*time.Second || got.Lifetime < timeout-12*time.Second {
			t.Fatalf("%s: listed %+v, want backend %s, lifetime %s less 10s", c.name, got, other, timeout)
		}
		sent = append(sent, *got)
	}
	res, err := dst.InstallSynced(sent)
	if err != nil {
		t.Fatal(err)
	}
	if res != (InstallResult{Installed: len(sent)}) {
		t.Fatalf("install: %+v, want %d installed", res, len(sent))
	}
	clk, err := dst.clock()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range ctCases() {
		e := sent[i]
		v, ok := entry(t, dst, e.Flow)
		if !ok {
			t.Fatalf("%s: no entry installed", c.name)
		}
		timeout := dst.vips[c.vip].cfg.Timeouts.Normal(c.vip.Proto).of(c.vip.Proto, e.State)
		if idle := clk.idle(v.LastSeen); idle < timeout-e.Lifetime-time.Second || idle > timeout-e.Lifetime+time.Second {
			t.Errorf("%s: installed idle %s, want %s (expires as the sender's)", c.name, idle, timeout-e.Lifetime)
		}
		p := c.packet(e.Flow.Sport, "A")
		if to, ev := send(t, dst, p); to != e.Backend || ev != StatCtHit {
			t.Errorf("%s: packet went to %s (%s), want the synced backend %s by ct_hit", c.name, to, ev, e.Backend)
		}
	}

	// The flows now had a packet on dst (last seen now): an older copy
	// from the peer is not fresher.
	older := append([]SyncEntry(nil), sent...)
	for i := range older {
		older[i].Lifetime -= 30 * time.Second
	}
	if res, err := dst.InstallSynced(older); err != nil || res != (InstallResult{Fresher: len(older)}) {
		t.Errorf("older copies: %+v, %v; want all %d kept as fresher", res, err, len(older))
	}
	// A connection's syn and established events in one datagram, with
	// the same time: the later state wins; its fin a moment later too.
	c := ctCases()[0]
	f := c.flow(45000)
	syn := SyncEntry{Flow: f, VIP: c.vip, Backend: backends4[0].Addr, State: ConnSYN, Lifetime: time.Minute}
	est := syn
	est.State, est.Lifetime = ConnEstablished, DefaultConnTimeouts.Established
	fin := syn
	fin.State, fin.Lifetime = ConnFIN, DefaultConnTimeouts.FIN
	if res, err := dst.InstallSynced([]SyncEntry{syn, est}); err != nil || res != (InstallResult{Installed: 2}) {
		t.Errorf("syn and established together: %+v, %v; want both installed", res, err)
	}
	if res, err := dst.InstallSynced([]SyncEntry{syn, fin}); err != nil || res != (InstallResult{Fresher: 1, Installed: 1}) {
		t.Errorf("the syn again, then a fin: %+v, %v; want the syn kept out as older, the fin installed", res, err)
	}
	if v, ok := entry(t, dst, f); !ok || ConnState(v.State) != ConnFIN {
		t.Errorf("after syn, established, syn, fin: entry %+v (%v), want fin", v, ok)
	}

	bad := sent[0]
	bad.Backend = addr("198.18.99.99")
	spent := sent[0]
	spent.Lifetime = 0
	vipless := sent[0]
	vipless.VIP.Port++
	if res, err := dst.InstallSynced([]SyncEntry{bad, spent, vipless}); err != nil || res != (InstallResult{Unknown: 2, Expired: 1}) {
		t.Errorf("unknown backend, spent lifetime, unknown VIP: %+v, %v; want 2 unknown, 1 expired", res, err)
	}
}

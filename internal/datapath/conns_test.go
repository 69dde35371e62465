package datapath

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// connKey is what a test knows of a flow: its client port and family.
type connKey struct {
	client netip.AddrPort
	vip    VIP
}

// TestWalkConns makes entries in every state through the balancer itself
// (BPF_PROG_RUN), for both families, plus a stale one (its backend's
// generation moved on) and an expired one: the walk yields exactly the
// live ones, each with its backend, state, idle time and expiry, and the
// per-backend counts are IPVS's (established active, the rest inactive).
func TestWalkConns(t *testing.T) {
	d := newCTDatapath(t)
	type made struct {
		state   ConnState
		backend netip.Addr
		vip     VIP
	}
	want := make(map[connKey]made)
	sport := uint16(30000)
	for _, c := range ctCases()[:2] { // v4 and v6 tcp
		for _, seq := range []struct {
			flags []string
			state ConnState
		}{
			{[]string{"S", ""}, ConnEstablished},
			{[]string{"S", "", "A"}, ConnEstablished},
			{[]string{""}, ConnEstablished},
			{[]string{"S"}, ConnSYN},
			{[]string{"S", "", "F"}, ConnFIN},
			{[]string{"S", "R"}, ConnClosed},
		} {
			sport++
			var to netip.Addr
			for _, fl := range seq.flags {
				to = sendTo(t, d, c.packet(sport, fl))
			}
			f := c.flow(sport)
			want[connKey{netip.AddrPortFrom(f.Src, sport), c.vip}] = made{seq.state, to, c.vip}
		}
	}
	// A UDP VIP's entries are established.
	udp := ctCases()[2]
	to := sendTo(t, d, udp.packet(31000, ""))
	want[connKey{netip.AddrPortFrom(addr(udp.client), 31000), udp.vip}] = made{ConnEstablished, to, udp.vip}

	// Stale: the entry names a generation its backend no longer has.
	web := ctCases()[0]
	stale := web.flow(32000)
	setEntry(t, d, vipWeb4, stale, backends4[0].Addr, ConnEstablished, 0)
	v, _ := entry(t, d, stale)
	v.BackendGen++
	buckets, keys := ctTables(true, &d.objs)
	if _, err := putConntrack(buckets, keys, stale, v); err != nil {
		t.Fatal(err)
	}
	// Expired: idle past the established timeout.
	setEntry(t, d, vipWeb4, web.flow(32001), backends4[1].Addr, ConnEstablished, DefaultConnTimeouts.Established+2*time.Second)
	// Nearly expired, still live: listed, with little time left.
	setEntry(t, d, vipWeb4, web.flow(32002), backends4[2].Addr, ConnFIN, DefaultConnTimeouts.FIN-30*time.Second)
	want[connKey{netip.AddrPortFrom(addr(web.client), 32002), vipWeb4}] = made{ConnFIN, backends4[2].Addr, vipWeb4}

	got := make(map[connKey]Conn)
	counts := make(map[VIP]map[netip.Addr]ConnCount)
	if err := d.WalkConns(func(c Conn) error {
		k := connKey{c.Client, c.VIP}
		if _, dup := got[k]; dup {
			t.Errorf("entry %s -> %s listed twice", c.Client, c.VIP)
		}
		got[k] = c
		if counts[c.VIP] == nil {
			counts[c.VIP] = make(map[netip.Addr]ConnCount)
		}
		n := counts[c.VIP][c.Backend]
		n.Add(c.State)
		counts[c.VIP][c.Backend] = n
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantCounts := make(map[VIP]map[netip.Addr]ConnCount)
	for k, w := range want {
		c, ok := got[k]
		if !ok {
			t.Errorf("entry %s -> %s (%s on %s) not listed", k.client, k.vip, w.state, w.backend)
			continue
		}
		if c.Backend != w.backend || c.State != w.state || c.VIP != w.vip || c.Dst != netip.AddrPortFrom(w.vip.Addr, w.vip.Port) || c.Proto != w.vip.Proto {
			t.Errorf("entry %s: got %+v, want backend %s state %s vip %s", k.client, c, w.backend, w.state, w.vip)
		}
		timeout := DefaultConnTimeouts.Normal(w.vip.Proto).of(w.vip.Proto, w.state)
		if c.Idle+c.ExpiresIn > timeout || c.Idle+c.ExpiresIn < timeout-time.Second {
			t.Errorf("entry %s: idle %v + expires in %v, want %v (its state's timeout) within a second", k.client, c.Idle, c.ExpiresIn, timeout)
		}
		if wantCounts[w.vip] == nil {
			wantCounts[w.vip] = make(map[netip.Addr]ConnCount)
		}
		n := wantCounts[w.vip][w.backend]
		n.Add(w.state)
		wantCounts[w.vip][w.backend] = n
	}
	for k, c := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("listed an entry that is stale or expired: %+v", c)
		}
	}
	if fmt.Sprint(counts) != fmt.Sprint(wantCounts) {
		t.Errorf("counts %v, want %v", counts, wantCounts)
	}
	if c := got[connKey{netip.AddrPortFrom(addr(web.client), 32002), vipWeb4}]; c.Idle < DefaultConnTimeouts.FIN-31*time.Second || c.ExpiresIn > 31*time.Second {
		t.Errorf("nearly expired entry: idle %v expires in %v, want about %v and 30s", c.Idle, c.ExpiresIn, DefaultConnTimeouts.FIN-30*time.Second)
	}

	// ErrStopWalk ends the walk after the first entry, without an error.
	n := 0
	if err := d.WalkConns(func(Conn) error { n++; return ErrStopWalk }); err != nil || n != 1 {
		t.Errorf("stopped walk: %d entries, err %v; want 1, nil", n, err)
	}

	// DeleteConns deletes exactly the entries it selects: a backend's.
	victim := backends4[2].Addr
	wantDeleted := int(counts[vipWeb4][victim].Active + counts[vipWeb4][victim].Inactive + counts[udp.vip][victim].Active)
	if wantDeleted == 0 {
		t.Fatal("no entry on the backend to delete: the test proves nothing")
	}
	deleted, err := d.DeleteConns(func(c Conn) bool { return c.Backend == victim })
	if err != nil || deleted != wantDeleted {
		t.Fatalf("DeleteConns: %d deleted (%v), want %d", deleted, err, wantDeleted)
	}
	left := 0
	if err := d.WalkConns(func(c Conn) error {
		if c.Backend == victim {
			t.Errorf("entry of %s left after the flush: %+v", victim, c)
		}
		left++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if left != len(got)-deleted {
		t.Errorf("%d entries after deleting %d of %d", left, deleted, len(got))
	}
}

// TestWalkConnsChunks fills the table past several chunks of the batch
// lookup: every entry is seen exactly once.
func TestWalkConnsChunks(t *testing.T) {
	const n = 3*ctChunk + 17
	d, placed := loadFilled(t, n, 1<<15)
	seen := make(map[netip.AddrPort]bool, n)
	if err := d.WalkConns(func(c Conn) error {
		if seen[c.Client] {
			t.Errorf("%s seen twice", c.Client)
		}
		seen[c.Client] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != placed {
		t.Fatalf("walked %d entries, want the %d placed", len(seen), placed)
	}
	// The walk's memory does not grow with the table: far fewer
	// allocations than entries (the chunk buffers and the backends'
	// table, not one per entry).
	allocs := testing.AllocsPerRun(2, func() {
		if err := d.WalkConns(func(Conn) error { return nil }); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > n/10 {
		t.Errorf("a walk of %d entries made %.0f allocations, want at most %d", n, allocs, n/10)
	}
}

// loadFilled returns a datapath whose ct_v4 holds live established
// entries on vipWeb4's backends for n flows, and how many it placed: at
// most n, since a flow whose bucket is full is left out rather than evict
// another (a table of capacity entries, written whole). It fails unless at
// least 95% are placed, so a table at most half full keeps nearly all.
func loadFilled(tb testing.TB, n int, capacity uint32) (*Datapath, int) {
	tb.Helper()
	require.BPF(tb)
	d, err := Load(Options{ConntrackEntries: capacity})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	if err := d.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4); err != nil {
		tb.Fatal(err)
	}
	clk, err := d.clock()
	if err != nil {
		tb.Fatal(err)
	}
	e := d.vips[vipWeb4]
	var ids []*backendEntry
	for _, b := range e.backends {
		ids = append(ids, b)
	}
	buckets, keys := ctTables(true, &d.objs)
	img := newTableImage(buckets.MaxEntries(), true)
	placed := 0
	for i := range n {
		src := netip.AddrFrom4([4]byte{198, 19, byte(i >> 16), byte(i >> 8)})
		f := Flow{Src: src, Dst: vipWeb4.Addr, Sport: uint16(1024 + i&0xff), Dport: 80, Proto: TCP}
		b := ids[i%len(ids)]
		if ok, _ := img.add(f, balancerCtValue{Backend: b.id, BackendGen: b.gen, State: uint8(ConnEstablished), LastSeen: clk.jiffies}, false); ok {
			placed++
		}
	}
	if placed < n*95/100 {
		tb.Fatalf("placed %d of %d flows in a table of %d entries, want at least 95%%", placed, n, capacity)
	}
	if err := img.write(buckets, keys); err != nil {
		tb.Fatal(err)
	}
	return d, placed
}

// BenchmarkWalkConns1M walks a connection table of 1 M live entries, as
// the daemon's count does every interval: `go test -run '^$' -bench
// WalkConns1M -benchmem ./internal/datapath/`. It prints the walk's time
// and what it allocated: a bounded amount, not a copy of the table.
func BenchmarkWalkConns1M(b *testing.B) {
	const n = 1 << 20
	d, placed := loadFilled(b, n, 4<<20)
	var before, after runtime.MemStats
	var walked int
	b.ResetTimer()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for range b.N {
		walked = 0
		var c ConnCount
		if err := d.WalkConns(func(conn Conn) error { walked++; c.Add(conn.State); return nil }); err != nil {
			b.Fatal(err)
		}
	}
	el := time.Since(start)
	runtime.ReadMemStats(&after)
	b.StopTimer()
	if walked != placed {
		b.Fatalf("walked %d entries, want the %d placed", walked, placed)
	}
	b.ReportMetric(float64(walked), "entries")
	fmt.Printf("control conn-walk-1M ms=%.1f allocs=%d bytes=%d\n", el.Seconds()*1000/float64(b.N),
		(after.Mallocs-before.Mallocs)/uint64(b.N), (after.TotalAlloc-before.TotalAlloc)/uint64(b.N))
}

package datapath

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// idCounts is a backend id's (active, inactive, syn).
type idCounts = classes

// walkByID counts the live entries by backend id, as CorrectCounts' walk
// does: the truth the fast path's counts are held to.
func walkByID(t *testing.T, d *Datapath) map[uint32]idCounts {
	t.Helper()
	out, err := d.walkCounts()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fastByID returns the fast path's counts of every live backend.
func fastByID(d *Datapath) map[uint32]idCounts {
	out := make(map[uint32]idCounts)
	for id := range d.connOwners() {
		out[id] = d.counts.read(id)
	}
	return out
}

// countsGap is the sum over backends of |fast - walk|, active and inactive.
func countsGap(t *testing.T, d *Datapath) (gap int64, fast, walk map[uint32]idCounts) {
	t.Helper()
	fast, walk = fastByID(d), walkByID(t, d)
	for id, f := range fast {
		w := walk[id]
		gap += abs64(f[0]-w[0]) + abs64(f[1]-w[1]) + abs64(f[2]-w[2])
	}
	return gap, fast, walk
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// checkCounts fails unless every live backend's fast-path counts equal
// the walk's exactly.
func checkCounts(t *testing.T, d *Datapath, when string) {
	t.Helper()
	if gap, fast, walk := countsGap(t, d); gap != 0 {
		t.Fatalf("%s: fast-path counts %v, the walk's %v (by backend id: active, inactive, syn)", when, fast, walk)
	}
}

// total sums the fast path's counts of one VIP's backends.
func total(d *Datapath, vip VIP) idCounts {
	var out idCounts
	for _, b := range d.vips[vip].byID {
		c := d.counts.read(b.id)
		for i := range out {
			out[i] += c[i]
		}
	}
	return out
}

// TestConnCountsFollowEntries: every packet that makes an entry, moves it
// between established and the other states, or overwrites a live one (a
// SYN on a known tuple) moves the fast path's counts exactly: after each
// packet they equal the walk's, and the VIP's totals are the ones stated.
func TestConnCountsFollowEntries(t *testing.T) {
	d := newCTDatapath(t)
	type step struct {
		flags string
		want  idCounts // the VIP's totals after the step, from zero
	}
	byProto := map[Proto][]step{
		TCP: {
			{"S", idCounts{0, 1, 1}}, {"", idCounts{1, 0, 0}}, {"A", idCounts{1, 0, 0}}, {"F", idCounts{0, 1, 0}},
			{"R", idCounts{0, 1, 0}}, {"S", idCounts{0, 1, 1}}, {"A", idCounts{1, 0, 0}}, {"S", idCounts{0, 1, 1}},
		},
		UDP: {{"", idCounts{1, 0, 0}}, {"", idCounts{1, 0, 0}}},
	}
	for i, c := range ctCases() {
		sport, steps := uint16(45000+i), byProto[c.vip.Proto]
		t.Run(c.name, func(t *testing.T) {
			base := total(d, c.vip)
			for i, s := range steps {
				sendTo(t, d, c.packet(sport, s.flags))
				got := total(d, c.vip)
				if moved := (idCounts{got[0] - base[0], got[1] - base[1], got[2] - base[2]}); moved != s.want {
					t.Errorf("step %d (%q): the vip's counts (active, inactive, syn) moved to %v, want %v", i, s.flags, moved, s.want)
				}
				checkCounts(t, d, fmt.Sprintf("step %d (%q)", i, s.flags))
			}
		})
	}
}

// TestConnCountsEviction: new flows into a table whose every way holds a
// live entry evict one entry each; the evicted entries leave their
// backends' counts as the new ones join, so the counts stay exact and
// their sum stays the table's capacity.
func TestConnCountsEviction(t *testing.T) {
	require.BPF(t)
	d, err := Load(Options{ConntrackEntries: 8192})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR}, backends4); err != nil {
		t.Fatal(err)
	}
	filled, err := fillTable(d, vipWeb4, 8080)
	if err != nil {
		t.Fatal(err)
	}
	// fillTable writes behind the fast path's back, as a migration
	// would: the walk's correction brings the counts to the truth.
	if _, err := d.CorrectCounts(); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, d, "the filled table, corrected")
	before, _ := d.Counters()
	const fresh = 300
	for i := range fresh {
		p := pkt(client4, vipWeb4.Addr.String(), TCP, uint16(20000+i), vipWeb4.Port)
		p.SYN = i%2 == 0 // half syn (inactive), half mid-flow (active)
		sendTo(t, d, p)
	}
	after, _ := d.Counters()
	if ev := after.Stat(StatCtEvicted) - before.Stat(StatCtEvicted); ev != fresh {
		t.Fatalf("%d new flows evicted %d entries, want %d", fresh, ev, fresh)
	}
	checkCounts(t, d, "after the evictions")
	if tot := total(d, vipWeb4); tot[0]+tot[1] != int64(len(filled)) {
		t.Fatalf("the counts sum to %d, the table holds %d", tot[0]+tot[1], len(filled))
	}

	// Every third entry expired, the rest live: buckets mix the two, and
	// a new flow takes an expired way (nothing to take off: the walk
	// did) wherever its bucket has one, else evicts a live one.
	e := d.vips[vipWeb4]
	timeout := DefaultConnTimeouts.Normal(TCP).of(TCP, ConnEstablished)
	n := 0
	for f, id := range filled {
		if n++; n%3 == 0 {
			setEntry(t, d, vipWeb4, f, e.byID[id].Addr, ConnEstablished, timeout+time.Minute)
		}
	}
	if _, err := d.CorrectCounts(); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, d, "a third expired, corrected")
	before, _ = d.Counters()
	for i := range fresh {
		p := pkt(client4, vipWeb4.Addr.String(), TCP, uint16(30000+i), vipWeb4.Port)
		p.SYN = true
		sendTo(t, d, p)
	}
	after, _ = d.Counters()
	t.Logf("%d new flows into the mixed table: %d evictions", fresh, after.Stat(StatCtEvicted)-before.Stat(StatCtEvicted))
	checkCounts(t, d, "new flows into buckets of live and expired entries")
}

// TestConnCountsExpiry: an entry that expires in place stays counted
// until a walk corrects it; a packet that then reuses its way adds the
// new entry without taking the expired one off again, so the counts stay
// exact; reused before a walk, the expired entry is counted once too many
// until the next walk.
func TestConnCountsExpiry(t *testing.T) {
	d := newCTDatapath(t)
	for i, c := range ctCases() {
		t.Run(c.name, func(t *testing.T) {
			sport := uint16(46000 + 10*i)
			f := c.flow(sport)
			sendTo(t, d, c.packet(sport, "S"))
			sendTo(t, d, c.packet(sport, "A"))
			checkCounts(t, d, "established")
			timeout := DefaultConnTimeouts.Normal(c.vip.Proto).of(c.vip.Proto, ConnEstablished)
			v, _ := entry(t, d, f)
			be := d.vips[c.vip].byID[v.Backend]
			age := func() {
				setEntry(t, d, c.vip, f, be.Addr, ConnEstablished, timeout+2*time.Second)
			}

			age()
			if a := d.counts.read(be.id)[0]; a != 1 {
				t.Fatalf("expired in place: active %d, want still 1 (only the walk sees expiry)", a)
			}
			if _, err := d.CorrectCounts(); err != nil {
				t.Fatal(err)
			}
			checkCounts(t, d, "expired, corrected")
			if a := d.counts.read(be.id)[0]; a != 0 {
				t.Fatalf("expired, corrected: active %d, want 0", a)
			}
			if to, ev := send(t, d, c.packet(sport, "A")); ev != StatCtExpired || !to.IsValid() {
				t.Fatalf("packet of the expired flow counted %s, want ct_expired", ev)
			}
			checkCounts(t, d, "the expired way reused after the walk")

			age()
			sendTo(t, d, c.packet(sport, "A"))
			gap, fast, walk := countsGap(t, d)
			if gap != 1 {
				t.Fatalf("reused before a walk: fast %v, walk %v: want the expired entry counted once too many", fast, walk)
			}
			if _, err := d.CorrectCounts(); err != nil {
				t.Fatal(err)
			}
			checkCounts(t, d, "reused, then corrected")
		})
	}
}

// TestCorrectCountsConverges: counts far off are set right by one walk;
// a walk that runs while packets change the counts leaves them off by at
// most the changes made during it, and the next quiet walk makes them
// exact.
func TestCorrectCountsConverges(t *testing.T) {
	d := newCTDatapath(t)
	sport := uint16(47000)
	for _, c := range ctCases() {
		for range 50 {
			sport++
			sendTo(t, d, c.packet(sport, "S"))
			if sport%3 != 0 {
				sendTo(t, d, c.packet(sport, "A"))
			}
		}
	}
	checkCounts(t, d, "50 flows per vip")
	for id := range d.connOwners() {
		d.counts.add(id, classes{1000 + int64(id), -77, 5})
	}
	if _, err := d.CorrectCounts(); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, d, "counts off by hundreds, corrected once")

	// Packets during walks: each sent packet is at most one change (a
	// new entry, or a move between classes).
	var changes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := ctCases()[0]
		for n := uint16(0); ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			p := uint16(50000) + n%5000
			flags := []string{"S", "A", "F"}[n/5000%3]
			in := c.packet(p, flags).Build()
			if _, err := d.Program().Run(&ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+512)}); err != nil {
				t.Error(err)
				return
			}
			changes.Add(1)
		}
	}()
	// A correction leaves the counts off by what its walk saw wrong,
	// W - T(start): at most the changes during the walk, in each class
	// they touch (a move from syn to established seen after it is off by
	// one in all three), whatever the error before; the packets after it
	// move the counts exactly.
	var during int64
	for range 5 {
		c0 := changes.Load()
		if _, err := d.CorrectCounts(); err != nil {
			t.Fatal(err)
		}
		during = changes.Load() - c0
	}
	close(stop)
	wg.Wait()
	gap, _, _ := countsGap(t, d)
	if gap > 3*during {
		t.Fatalf("off by %d after a walk during which %d changes were made", gap, during)
	}
	if changes.Load() == 0 {
		t.Fatal("no packet ran during the walks")
	}
	t.Logf("%d changes during the walks, %d during the last: the counts were off by %d after it", changes.Load(), during, gap)
	if _, err := d.CorrectCounts(); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, d, "a quiet walk after the traffic")
}

// TestConnCountsGoWrites: the entries Go writes (sync's installs) and
// deletes (a flush) move the counts as the fast path's own would.
func TestConnCountsGoWrites(t *testing.T) {
	src, dst := newCTDatapath(t), newCTDatapath(t)
	sport := uint16(48000)
	var sent []SyncEntry
	for _, c := range ctCases() {
		for range 20 {
			sport++
			sendTo(t, src, c.packet(sport, "S"))
			if sport%2 == 0 {
				sendTo(t, src, c.packet(sport, "A"))
			}
		}
	}
	for e, err := range src.SyncEntries() {
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, e)
	}
	res, err := dst.InstallSynced(sent)
	if err != nil || res.Installed != len(sent) {
		t.Fatalf("install %d: %+v, %v", len(sent), res, err)
	}
	checkCounts(t, dst, "installed from a peer")
	// Installing the same again overwrites each entry with itself.
	for i := range sent {
		sent[i].Lifetime += time.Minute
	}
	if _, err := dst.InstallSynced(sent); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, dst, "installed again")
	victim := backends4[1].Addr
	n, err := dst.DeleteConns(func(c Conn) bool { return c.Backend == victim })
	if err != nil || n == 0 {
		t.Fatalf("flush %s: %d, %v", victim, n, err)
	}
	checkCounts(t, dst, "flushed one backend")
	if c := dst.counts.read(dst.vips[vipWeb4].backends[victim].id); c != (classes{}) {
		t.Fatalf("flushed backend counts %v, want 0", c)
	}
}

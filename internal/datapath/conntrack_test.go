package datapath

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

// vipUDP4 is an IPv4 UDP VIP that tracks connections (the fixtures' IPv4
// UDP VIP bypasses the table).
var vipUDP4 = VIP{Addr: addr("203.0.113.60"), Port: 53, Proto: UDP}

// ctCase is one family and protocol the state tests run for.
type ctCase struct {
	name     string
	vip      VIP
	client   string
	backends []Backend
	ringSize uint32
}

func ctCases() []ctCase {
	return []ctCase{
		{"v4 tcp", vipWeb4, client4, backends4, 0},
		{"v6 tcp", vipWeb6, client6, backends6, 0},
		{"v4 udp", vipUDP4, client4, backends4, smallRing},
		{"v6 udp", vipDNS6, client6, backends6, smallRing},
	}
}

// ring returns the backend the VIP's ring gives flow f, and another one.
func (c ctCase) ring(t *testing.T, f Flow) (ring, other netip.Addr) {
	ring = expectBackend(t, c.backends, c.ringSize, f.Src, f.Dst, f.Sport, f.Dport, f.Proto, false).Addr
	for _, x := range c.backends {
		if x.Addr != ring {
			return ring, x.Addr
		}
	}
	t.Fatal("the VIP has one backend")
	return
}

func newCTDatapath(t *testing.T) *Datapath {
	t.Helper()
	d := newTestDatapath(t)
	provision(t, d)
	if err := d.AddVIP(vipUDP4, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4); err != nil {
		t.Fatal(err)
	}
	return d
}

func (c ctCase) flow(sport uint16) Flow {
	return Flow{Src: addr(c.client), Dst: c.vip.Addr, Sport: sport, Dport: c.vip.Port, Proto: c.vip.Proto}
}

func (c ctCase) packet(sport uint16, flags string) testpacket.Packet {
	p := pkt(c.client, c.vip.Addr.String(), c.vip.Proto, sport, c.vip.Port)
	for _, f := range flags {
		switch f {
		case 'S':
			p.SYN = true
		case 'A':
			p.ACK = true
		case 'F':
			p.FIN = true
		case 'R':
			p.RST = true
		}
	}
	return p
}

// entry returns the flow's connection entry as the fast path finds it; ok
// is false if there is none.
func entry(t *testing.T, d *Datapath, f Flow) (v balancerCtValue, ok bool) {
	t.Helper()
	ct, err := d.lookupConntrack(f)
	if err != nil {
		t.Fatal(err)
	}
	if ct == nil {
		return v, false
	}
	return *ct, true
}

// setEntry is the tests' clock and state hook: it writes the flow's entry
// as one naming backend b of vip, in state s, last seen idle ago. Time in
// the fast path is the kernel's, so tests move an entry back in time rather
// than wait.
func setEntry(t *testing.T, d *Datapath, vip VIP, f Flow, b netip.Addr, s ConnState, idle time.Duration) {
	t.Helper()
	be := d.vips[vip].backends[b]
	if be == nil {
		t.Fatalf("vip %s has no backend %s", vip, b)
	}
	clk, err := d.clock()
	if err != nil {
		t.Fatal(err)
	}
	back := uint32(idle * time.Duration(clk.hz) / time.Second)
	v := balancerCtValue{Backend: be.id, BackendGen: be.gen, State: uint8(s), LastSeen: clk.jiffies - back}
	buckets, keys := ctTables(f.Dst.Is4(), &d.objs)
	if _, err := putConntrack(buckets, keys, f, v); err != nil {
		t.Fatal(err)
	}
}

// send runs one packet and returns the backend it reached and the
// connection-table event it counted (ct_hit, ct_miss, ct_syn, ...).
func send(t *testing.T, d *Datapath, p testpacket.Packet) (netip.Addr, Stat) {
	t.Helper()
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	to := sendTo(t, d, p)
	after, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var events []Stat
	for s, n := range statsDelta(before, after) {
		if !s.IsVerdict() {
			for range n {
				events = append(events, s)
			}
		}
	}
	if len(events) != 1 {
		t.Fatalf("packet moved events %v, want exactly one", events)
	}
	return to, events[0]
}

// TestConnStateTransitions walks every client-side TCP transition, and the
// one state of UDP, for both families, checking the event each packet
// counts, the entry's state after it, and that the backend never moves
// while the entry lives.
func TestConnStateTransitions(t *testing.T) {
	d := newCTDatapath(t)
	type step struct {
		flags string // S(YN) A(CK) F(IN) R(ST); "" is a bare ACK (UDP: any datagram)
		event Stat
		state ConnState
	}
	tcp := map[string][]step{
		"syn, ack, fin, ack, rst, ack, fin, then a new syn": {
			{"S", StatCtSYN, ConnSYN}, {"", StatCtHit, ConnEstablished}, {"A", StatCtHit, ConnEstablished},
			{"F", StatCtHit, ConnFIN}, {"", StatCtHit, ConnFIN}, {"R", StatCtHit, ConnClosed},
			{"", StatCtHit, ConnClosed}, {"F", StatCtHit, ConnClosed}, {"S", StatCtSYN, ConnSYN},
		},
		"syn then fin":           {{"S", StatCtSYN, ConnSYN}, {"F", StatCtHit, ConnFIN}},
		"syn then rst":           {{"S", StatCtSYN, ConnSYN}, {"R", StatCtHit, ConnClosed}},
		"syn, syn again":         {{"S", StatCtSYN, ConnSYN}, {"S", StatCtSYN, ConnSYN}, {"", StatCtHit, ConnEstablished}},
		"established then rst":   {{"", StatCtMiss, ConnEstablished}, {"R", StatCtHit, ConnClosed}},
		"fin then rst":           {{"", StatCtMiss, ConnEstablished}, {"F", StatCtHit, ConnFIN}, {"R", StatCtHit, ConnClosed}},
		"first seen: a fin":      {{"F", StatCtMiss, ConnFIN}, {"", StatCtHit, ConnFIN}},
		"first seen: an rst":     {{"R", StatCtMiss, ConnClosed}},
		"first seen: a bare ack": {{"", StatCtMiss, ConnEstablished}},
	}
	udp := map[string][]step{
		"datagrams": {{"", StatCtMiss, ConnEstablished}, {"", StatCtHit, ConnEstablished}, {"", StatCtHit, ConnEstablished}},
	}
	sport := uint16(42000)
	for _, c := range ctCases() {
		seqs := tcp
		if c.vip.Proto == UDP {
			seqs = udp
		}
		for name, steps := range seqs {
			sport++
			t.Run(c.name+"/"+name, func(t *testing.T) {
				f := c.flow(sport)
				var first netip.Addr
				for i, s := range steps {
					to, ev := send(t, d, c.packet(sport, s.flags))
					if ev != s.event {
						t.Errorf("step %d (%q): event %s, want %s", i, s.flags, ev, s.event)
					}
					if i == 0 {
						first = to
					} else if to != first {
						t.Errorf("step %d (%q): reached %s, the flow's backend is %s", i, s.flags, to, first)
					}
					v, ok := entry(t, d, f)
					if !ok {
						t.Fatalf("step %d (%q): no entry", i, s.flags)
					}
					if ConnState(v.State) != s.state {
						t.Errorf("step %d (%q): state %s, want %s", i, s.flags, ConnState(v.State), s.state)
					}
				}
			})
		}
	}
}

// TestConnTimeouts checks every timeout at its edge: an entry idle one
// second less than its state's timeout keeps its backend (a hit), one
// second more is a miss that takes the ring and is rewritten; one last seen
// after the packet's clock is a hit. The entry
// names a backend other than the ring's, so the two outcomes differ; and
// Predict must say what the packet then does.
func TestConnTimeouts(t *testing.T) {
	d := newCTDatapath(t)
	const eps = time.Second
	sport := uint16(43000)
	for _, c := range ctCases() {
		states := []ConnState{ConnSYN, ConnEstablished, ConnFIN, ConnClosed}
		if c.vip.Proto == UDP {
			states = []ConnState{ConnEstablished}
		}
		for _, s := range states {
			timeout := DefaultConnTimeouts.Normal(c.vip.Proto).of(c.vip.Proto, s)
			// -2 s: another CPU touched the entry after the jiffy this
			// packet read; the entry is fresh, not 2^32 jiffies old.
			for _, idle := range []time.Duration{-2 * time.Second, timeout - eps, timeout + eps} {
				sport++
				live := idle < timeout
				t.Run(fmt.Sprintf("%s/%s/idle %v", c.name, s, idle), func(t *testing.T) {
					f := c.flow(sport)
					ring, pinned := c.ring(t, f)
					setEntry(t, d, c.vip, f, pinned, s, idle)

					pred, err := d.Predict(f, false)
					if err != nil {
						t.Fatal(err)
					}
					want, wantEvent := ring, StatCtExpired
					if live {
						want, wantEvent = pinned, StatCtHit
					}
					if pred.Backend != want || pred.Entry == nil || pred.Entry.Expired == live || pred.Entry.State != s {
						t.Errorf("Predict: backend %s, entry %+v; want backend %s, expired %v, state %s", pred.Backend, pred.Entry, want, !live, s)
					}
					to, ev := send(t, d, c.packet(sport, ""))
					if to != want || ev != wantEvent {
						t.Errorf("packet reached %s counting %s, want %s counting %s", to, ev, want, wantEvent)
					}
					v, _ := entry(t, d, f)
					if got := d.vips[c.vip].byID[v.Backend]; got == nil || got.Addr != want {
						t.Errorf("the entry now names backend id %d, want %s's", v.Backend, want)
					}
				})
			}
		}
	}
}

// TestFinAndRstShortenLife: after a FIN an entry lives 120 s idle, after an
// RST 10 s, where an established one lives 900 s.
func TestFinAndRstShortenLife(t *testing.T) {
	d := newCTDatapath(t)
	for i, c := range ctCases()[:2] { // TCP, both families
		for j, end := range []struct {
			flags string
			idle  time.Duration // past the end state's timeout, within established's
		}{{"F", DefaultConnTimeouts.FIN + time.Second}, {"R", DefaultConnTimeouts.Closed + time.Second}} {
			sport := uint16(44000 + 10*i + j)
			t.Run(fmt.Sprintf("%s/%s", c.name, end.flags), func(t *testing.T) {
				f := c.flow(sport)
				ring, pinned := c.ring(t, f)
				if to, _ := send(t, d, c.packet(sport, "S")); to != ring {
					t.Fatalf("syn reached %s, want the ring's %s", to, ring)
				}
				// An established entry pinned elsewhere survives the idle
				// time...
				setEntry(t, d, c.vip, f, pinned, ConnEstablished, end.idle)
				if to, ev := send(t, d, c.packet(sport, "")); to != pinned || ev != StatCtHit {
					t.Fatalf("established, idle %v: reached %s (%s), want %s (ct_hit)", end.idle, to, ev, pinned)
				}
				// ...the same entry after the client's FIN or RST does not.
				if to, ev := send(t, d, c.packet(sport, end.flags)); to != pinned || ev != StatCtHit {
					t.Fatalf("%s: reached %s (%s), want %s (ct_hit)", end.flags, to, ev, pinned)
				}
				v, _ := entry(t, d, f)
				setEntry(t, d, c.vip, f, pinned, ConnState(v.State), end.idle)
				if to, ev := send(t, d, c.packet(sport, "")); to != ring || ev != StatCtExpired {
					t.Fatalf("after %s, idle %v: reached %s (%s), want the ring's %s (ct_expired)", end.flags, end.idle, to, ev, ring)
				}
			})
		}
	}
}

// TestSynOnClosedTupleTakesRing: a SYN on a tuple whose entry is closed (or
// live) takes the ring and starts a new entry in state syn.
func TestSynOnClosedTupleTakesRing(t *testing.T) {
	d := newCTDatapath(t)
	for i, c := range ctCases()[:2] {
		for j, s := range []ConnState{ConnClosed, ConnEstablished, ConnFIN} {
			sport := uint16(45000 + 10*i + j)
			t.Run(fmt.Sprintf("%s/%s", c.name, s), func(t *testing.T) {
				f := c.flow(sport)
				ring, pinned := c.ring(t, f)
				setEntry(t, d, c.vip, f, pinned, s, time.Second)
				if pred, err := d.Predict(f, true); err != nil || pred.Backend != ring {
					t.Errorf("Predict(syn) = %s, %v; want the ring's %s", pred.Backend, err, ring)
				}
				if to, ev := send(t, d, c.packet(sport, "S")); to != ring || ev != StatCtSYN {
					t.Fatalf("syn reached %s (%s), want the ring's %s (ct_syn)", to, ev, ring)
				}
				v, _ := entry(t, d, f)
				if ConnState(v.State) != ConnSYN || d.vips[c.vip].byID[v.Backend].Addr != ring {
					t.Errorf("entry after the syn: state %s, backend id %d; want syn, %s", ConnState(v.State), v.Backend, ring)
				}
			})
		}
	}
}

// TestEntryOutlivesShadowingVIP: the table is read before the VIP, so a
// flow that an every-port VIP placed keeps its backend when a VIP for its
// exact port appears; its next SYN goes to the new VIP. Predict agrees.
func TestEntryOutlivesShadowingVIP(t *testing.T) {
	d := newCTDatapath(t)
	f := Flow{Src: addr(client4), Dst: vipAll4.Addr, Sport: 47000, Dport: 8080, Proto: TCP}
	first := sendTo(t, d, pkt(client4, vipAll4.Addr.String(), TCP, f.Sport, f.Dport))
	exact := VIP{Addr: vipAll4.Addr, Port: 8080, Proto: TCP}
	other := []Backend{{Addr: addr("198.18.0.99"), MAC: mustMAC("02:00:00:00:0b:99"), Weight: 1}}
	if err := d.AddVIP(exact, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, other); err != nil {
		t.Fatal(err)
	}
	pred, err := d.Predict(f, false)
	if err != nil {
		t.Fatal(err)
	}
	if pred.VIP != exact || pred.Backend != first || !pred.Conntrack {
		t.Errorf("Predict: vip %s backend %s conntrack %v; want vip %s, the entry's %s", pred.VIP, pred.Backend, pred.Conntrack, exact, first)
	}
	if to, ev := send(t, d, pkt(client4, vipAll4.Addr.String(), TCP, f.Sport, f.Dport)); to != first || ev != StatCtHit {
		t.Errorf("established packet reached %s (%s), want %s (ct_hit)", to, ev, first)
	}
	syn := pkt(client4, vipAll4.Addr.String(), TCP, f.Sport, f.Dport)
	syn.SYN = true
	verdict, out := runProg(t, d.Program(), syn.Build())
	if verdict != xdpTX || !bytes.Equal(out[0:6], other[0].MAC) {
		t.Errorf("syn: verdict %s to MAC %x, want XDP_TX to the new VIP's backend %s", verdictNames[verdict], out[0:6], other[0].MAC)
	}
}

// TestMigrationKeepsConnState: a migration copies each entry's TCP state
// and last-seen time with its translated backend, so a closing connection
// keeps its short timeout and every entry its idle age.
func TestMigrationKeepsConnState(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	d1 := loadProvisioned(t, dir)
	c := ctCases()[0]
	want := make(map[Flow]balancerCtValue)
	for i, s := range []ConnState{ConnSYN, ConnEstablished, ConnFIN, ConnClosed} {
		f := c.flow(uint16(48000 + i))
		ring, _ := c.ring(t, f)
		setEntry(t, d1, c.vip, f, ring, s, time.Duration(i+1)*time.Second)
		v, _ := entry(t, d1, f)
		want[f] = v
	}
	d1.Close()

	d2, err := Load(Options{ConntrackEntries: 16384, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	// Another VIP first, so that the fixture's backend ids change.
	if err := d2.AddVIP(VIP{Addr: addr("203.0.113.99"), Port: 80, Proto: TCP}, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4); err != nil {
		t.Fatal(err)
	}
	provision(t, d2)
	if _, err := d2.CompleteMigration(); err != nil {
		t.Fatal(err)
	}
	for f, old := range want {
		v, ok := entry(t, d2, f)
		if !ok {
			t.Fatalf("%v: entry lost", f)
		}
		if v.State != old.State || v.LastSeen != old.LastSeen || v.Backend == old.Backend {
			t.Errorf("%v: entry %+v after the migration, want state %d and last_seen %d of %+v with a translated backend id",
				f, v, old.State, old.LastSeen, old)
		}
	}
}

// TestVIPTimeouts: a VIP's own timeouts decide its entries' life, each at
// its edge, as Predict says; a restarted datapath reads them back from the
// maps; bad ones are refused by name and change nothing.
func TestVIPTimeouts(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	d, err := Load(Options{ConntrackEntries: 8192, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	web := ConnTimeouts{Established: 30 * time.Second, Closed: 2 * time.Second}
	dns := ConnTimeouts{UDP: 5 * time.Second}
	cases := []ctCase{
		{"v4 tcp", vipWeb4, client4, backends4, smallRing},
		{"v6 udp", vipDNS6, client6, backends6, smallRing},
	}
	if err := d.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR, RingSize: smallRing, Timeouts: web}, backends4); err != nil {
		t.Fatal(err)
	}
	if err := d.AddVIP(vipDNS6, VIPConfig{Mode: ModeDSR, RingSize: smallRing, Timeouts: dns}, backends6); err != nil {
		t.Fatal(err)
	}
	edges := []struct {
		c       ctCase
		state   ConnState
		timeout time.Duration
	}{
		{cases[0], ConnEstablished, 30 * time.Second}, {cases[0], ConnClosed, 2 * time.Second},
		{cases[0], ConnFIN, DefaultConnTimeouts.FIN}, {cases[1], ConnEstablished, 5 * time.Second},
	}
	check := func(t *testing.T, d *Datapath) {
		sport := uint16(49000)
		for _, e := range edges {
			for _, idle := range []time.Duration{e.timeout - time.Second, e.timeout + time.Second} {
				sport++
				f := e.c.flow(sport)
				ring, pinned := e.c.ring(t, f)
				setEntry(t, d, e.c.vip, f, pinned, e.state, idle)
				want, wantEvent := pinned, StatCtHit
				if idle > e.timeout {
					want, wantEvent = ring, StatCtExpired
				}
				pred, err := d.Predict(f, false)
				if err != nil || pred.Backend != want || pred.Entry == nil || pred.Entry.Timeout != e.timeout {
					t.Errorf("%s %s idle %v: Predict %s (entry %+v, %v), want %s with timeout %v", e.c.name, e.state, idle, pred.Backend, pred.Entry, err, want, e.timeout)
				}
				if to, ev := send(t, d, e.c.packet(sport, "")); to != want || ev != wantEvent {
					t.Errorf("%s %s idle %v: reached %s (%s), want %s (%s)", e.c.name, e.state, idle, to, ev, want, wantEvent)
				}
			}
		}
	}
	check(t, d)

	// Refused by name; the VIP keeps its timeouts.
	for _, bad := range []struct {
		t    ConnTimeouts
		name string
	}{{ConnTimeouts{FIN: 1500 * time.Millisecond}, "timeout fin"}, {ConnTimeouts{Established: 200 * time.Hour}, "timeout established"}} {
		err := d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR, RingSize: smallRing, Timeouts: bad.t}, backends4)
		if err == nil || !strings.Contains(err.Error(), bad.name) {
			t.Errorf("SetVIP with %+v: err %v, want it to name %q", bad.t, err, bad.name)
		}
	}
	check(t, d)

	// A restart reads them back: the same configuration writes nothing.
	d.Close()
	d, err = Load(Options{ConntrackEntries: 8192, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.vips[vipWeb4].cfg.Timeouts; got != web.Normal(TCP) {
		t.Errorf("adopted timeouts of %s: %+v, want %+v", vipWeb4, got, web.Normal(TCP))
	}
	if got := d.vips[vipDNS6].cfg.Timeouts; got != dns.Normal(UDP) {
		t.Errorf("adopted timeouts of %s: %+v, want %+v", vipDNS6, got, dns.Normal(UDP))
	}
	if p, err := d.prepare(vipWeb4, VIPConfig{Mode: ModeDSR, RingSize: smallRing, Timeouts: web}, backends4); err != nil || p != nil {
		t.Errorf("the same configuration after a restart: prepare = %v, %v; want nothing to write", p, err)
	}
	check(t, d)
}

// fillTable fills every way of vip's family's connection table with a live
// entry (stamped now) of a flow from 10.0.0.0/8 or 2001:db8:ff::/48 to vip
// on port dport, each to a backend of vip chosen by the flow's index. It
// returns the flows it wrote with their backend ids.
func fillTable(d *Datapath, vip VIP, dport uint16) (map[Flow]uint32, error) {
	e := d.vips[vip]
	var bes []*backendEntry
	for _, x := range e.byID {
		bes = append(bes, x)
	}
	clk, err := d.clock()
	if err != nil {
		return nil, err
	}
	v4 := vip.Addr.Is4()
	buckets, keys := ctTables(v4, &d.objs)
	img := newTableImage(buckets.MaxEntries(), v4)
	want := make(map[Flow]uint32)
	ways := int(buckets.MaxEntries()) * ctWays
	// Flows land in buckets at random: offer several times the capacity
	// and keep those that find a free way.
	for i := 0; len(want) < ways && i < 8*ways; i++ {
		var src netip.Addr
		if v4 {
			src = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		} else {
			src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 12: byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
		}
		f := Flow{Src: src, Dst: vip.Addr, Sport: uint16(1024 + i%50000), Dport: dport, Proto: vip.Proto}
		be := bes[i%len(bes)]
		if placed, _ := img.add(f, balancerCtValue{Backend: be.id, BackendGen: be.gen, LastSeen: clk.jiffies}, false); placed {
			want[f] = be.id
		}
	}
	if len(want) != ways {
		return nil, fmt.Errorf("filled %d ways of %d", len(want), ways)
	}
	return want, img.write(buckets, keys)
}

// TestFullTableKeepsForwarding: with every way of a default-sized (1 M)
// table holding a live entry, new flows are still forwarded, each
// evicting one entry (counted as ct_evicted), and every entry the table
// kept, old or new, still names the backend it was made with. The IPv6
// table is checked the same way at a smaller size.
func TestFullTableKeepsForwarding(t *testing.T) {
	require.BPF(t)
	for _, c := range []struct {
		name    string
		entries uint32
		vip     VIP
		client  string
		set     []Backend
	}{
		{"v4 1M", 0, vipWeb4, client4, backends4},
		{"v6", 8192, vipWeb6, client6, backends6},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := Load(Options{ConntrackEntries: c.entries})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			defer d.Close()
			if err := d.AddVIP(c.vip, VIPConfig{Mode: ModeDSR}, c.set); err != nil {
				t.Fatal(err)
			}
			want, err := fillTable(d, c.vip, 8080)
			if err != nil {
				t.Fatal(err)
			}
			capacity := len(want)
			if c.entries == 0 && capacity != DefaultConntrackEntries {
				t.Fatalf("the full table holds %d entries, want %d", capacity, DefaultConntrackEntries)
			}
			before, err := d.Counters()
			if err != nil {
				t.Fatal(err)
			}
			const fresh = 500
			ids := make(map[netip.Addr]uint32)
			for _, b := range d.vips[c.vip].byID {
				ids[b.Addr] = b.id
			}
			for i := range fresh {
				// A mid-connection ACK: a miss that makes an entry.
				p := pkt(c.client, c.vip.Addr.String(), TCP, uint16(20000+i), c.vip.Port)
				p.ACK = true
				to := sendTo(t, d, p)
				want[Flow{Src: addr(c.client), Dst: c.vip.Addr, Sport: uint16(20000 + i), Dport: c.vip.Port, Proto: TCP}] = ids[to]
			}
			after, err := d.Counters()
			if err != nil {
				t.Fatal(err)
			}
			delta := statsDelta(before, after)
			if delta[StatCtMiss] != fresh || delta[StatCtEvicted] != fresh || delta[StatTxDSR] != fresh {
				t.Fatalf("%d new flows into a full table: counters moved %s, want %d ct_miss, ct_evicted and tx_dsr",
					fresh, formatStats(delta), fresh)
			}
			seen := 0
			for e, err := range d.TableEntries() {
				if err != nil {
					t.Fatal(err)
				}
				id, ok := want[e.Flow]
				if !ok {
					t.Fatalf("the table holds an entry for %v, a flow never sent nor written", e.Flow)
				}
				if e.Backend != id {
					t.Fatalf("%v: entry names backend %d, made with %d", e.Flow, e.Backend, id)
				}
				seen++
			}
			if seen != capacity {
				t.Fatalf("the table holds %d entries after the new flows, want it still full (%d)", seen, capacity)
			}
		})
	}
}

// TestConntrackGoFindsInserts: Go's placement (placeOf, lookupConntrack)
// finds every entry the program made, both families and protocols, and
// TableEntries lists exactly those.
func TestConntrackGoFindsInserts(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)
	sent := make(map[Flow]netip.Addr)
	for _, c := range []struct {
		vip    VIP
		client string
	}{{vipWeb4, client4}, {vipWeb6, client6}, {vipDNS6, client6}} {
		for i := range 50 {
			f := Flow{Src: addr(c.client), Dst: c.vip.Addr, Sport: uint16(30000 + i), Dport: c.vip.Port, Proto: c.vip.Proto}
			sent[f] = sendTo(t, d, pkt(c.client, c.vip.Addr.String(), c.vip.Proto, f.Sport, f.Dport))
		}
	}
	for f, to := range sent {
		v, ok := entry(t, d, f)
		if !ok {
			t.Fatalf("%v: Go finds no entry after a packet", f)
		}
		if _, b := d.backendByID(v.Backend); b == nil || b.Addr != to {
			t.Fatalf("%v: Go finds backend id %d, the packet went to %s", f, v.Backend, to)
		}
	}
	n := 0
	for e, err := range d.TableEntries() {
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := sent[e.Flow]; !ok {
			t.Fatalf("TableEntries lists %v, never sent", e.Flow)
		}
		n++
	}
	if n != len(sent) {
		t.Fatalf("TableEntries lists %d entries, want %d", n, len(sent))
	}
}

package connsync

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

type tuple struct {
	client, vip netip.AddrPort
	proto       uint8
}

func keyOf(e Entry) tuple { return tuple{e.Client, e.VIP, e.Proto} }

// table is a test node's connection table: its Source lists the local
// entries, and its Installer records the received ones apart (installing
// every one: the freshness rule is the daemon's), so that a test sees
// exactly what sync delivered.
type table struct {
	local   []Entry
	mu      sync.Mutex
	m       map[tuple]Entry // installed
	calls   atomic.Int64
	entries atomic.Int64
}

func newTable(local ...Entry) *table {
	return &table{local: local, m: map[tuple]Entry{}}
}

func (t *table) Install(es []Entry) int {
	t.calls.Add(1)
	t.entries.Add(int64(len(es)))
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range es {
		t.m[keyOf(e)] = e
	}
	return len(es)
}

func (t *table) Snapshot(yield func(Entry) bool) {
	for _, e := range t.local {
		if !yield(e) {
			return
		}
	}
}

func (t *table) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// holds says what of want t lacks or holds differently; nil if nothing.
func (t *table) holds(want []Entry) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	missing, differ := 0, 0
	var example string
	for _, w := range want {
		got, ok := t.m[keyOf(w)]
		switch {
		case !ok:
			missing++
			example = fmt.Sprintf("missing %v", w)
		case got != w:
			differ++
			example = fmt.Sprintf("got %v, want %v", got, w)
		}
	}
	if missing+differ > 0 {
		return fmt.Errorf("%d of %d entries missing, %d differ (%s); table holds %d", missing, len(want), differ, example, len(t.m))
	}
	return nil
}

// listen binds a UDP socket on an ephemeral loopback port.
func listen(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// start runs a Node on conn until the test ends; stop ends it early.
func start(t testing.TB, cfg Config, tab interface {
	Source
	Installer
}) (n *Node, stop func()) {
	t.Helper()
	if cfg.Key == nil {
		cfg.Key = testKey
	}
	cfg.Logger = quiet
	n, err := New(cfg, tab, tab)
	if err != nil {
		t.Fatal(err)
	}
	return startNode(t, n)
}

// startNode runs n until the test ends; stop ends it early.
func startNode(t testing.TB, n *Node) (_ *Node, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return within 5s of its context's end")
			}
		})
	}
	t.Cleanup(stop)
	return n, stop
}

func noDrops(t testing.TB, who string, s Stats) {
	t.Helper()
	for r, c := range s.Dropped {
		if c != 0 {
			t.Errorf("%s dropped %d datagrams as %s", who, c, r)
		}
	}
}

// TestExchange: two nodes on loopback send each other what they are
// offered, in batches, and each installs exactly the other's entries.
func TestExchange(t *testing.T) {
	ca, cb := listen(t), listen(t)
	ta, tb := newTable(), newTable()
	a, _ := start(t, Config{Conn: ca, Peers: []netip.AddrPort{addrOf(cb)}}, ta)
	b, _ := start(t, Config{Conn: cb, Peers: []netip.AddrPort{addrOf(ca)}}, tb)

	all := testEntries(1500)
	fromA, fromB := all[:1000], all[1000:]
	for _, e := range fromA {
		if !a.Offer(e) {
			t.Fatalf("a.Offer(%v) refused", e)
		}
	}
	for _, e := range fromB {
		if !b.Offer(e) {
			t.Fatalf("b.Offer(%v) refused", e)
		}
	}
	require.Eventually(t, 10*time.Second, func() error { return tb.holds(fromA) })
	require.Eventually(t, 10*time.Second, func() error { return ta.holds(fromB) })
	if tb.len() != len(fromA) || ta.len() != len(fromB) {
		t.Fatalf("tables hold %d and %d entries, want %d and %d: nothing else", ta.len(), tb.len(), len(fromB), len(fromA))
	}

	sa, sb := a.Stats(), b.Stats()
	noDrops(t, "a", sa)
	noDrops(t, "b", sb)
	// Batching: 1000 entries took far fewer datagrams than entries
	// (hellos and the empty resync are datagrams too, a few).
	if sa.SentEntries != uint64(len(fromA)) || sa.SentDatagrams*5 > sa.SentEntries {
		t.Errorf("a sent %d entries in %d datagrams; want %d entries, 5 or more a datagram", sa.SentEntries, sa.SentDatagrams, len(fromA))
	}
	if sa.SendLag.Count != uint64(len(fromA)/lagSample) || sa.SendLag.Max <= 0 || sa.SendLag.Max > 5*time.Second {
		t.Errorf("a's send lag %+v; want %d entries measured (one in %d), each above 0 and within 5s", sa.SendLag, len(fromA)/lagSample, lagSample)
	}
	if sb.ReceiveAge.Count == 0 || sb.Installed != uint64(len(fromA)) || sb.ReceivedEntries != sb.Installed {
		t.Errorf("b: received %d entries, installed %d, receive age %+v; want %d, all installed",
			sb.ReceivedEntries, sb.Installed, sb.ReceiveAge, len(fromA))
	}
	if len(sb.Peers) != 1 || !sb.Peers[0].Up || sb.Peers[0].Address != addrOf(ca) || sb.Peers[0].Epoch != a.epoch {
		t.Errorf("b's peers %+v; want a (%s, epoch %d) up", sb.Peers, addrOf(ca), a.epoch)
	}
}

// TestResyncAfterRestart: a standby that restarts (a new Node, empty
// table, same address) learns every existing entry by a full resync,
// not only the entries that change afterwards.
func TestResyncAfterRestart(t *testing.T) {
	ca, cb := listen(t), listen(t)
	bAddr := addrOf(cb)
	existing := testEntries(3000) // never offered: only a resync carries them
	ta := newTable(existing...)
	a, _ := start(t, Config{Conn: ca, Peers: []netip.AddrPort{bAddr}, ResyncRate: 1_000_000}, ta)

	tb1 := newTable()
	_, stop1 := start(t, Config{Conn: cb, Peers: []netip.AddrPort{addrOf(ca)}}, tb1)
	require.Eventually(t, 10*time.Second, func() error { return tb1.holds(existing) })
	stop1()

	// The restarted standby: same port, new epoch, empty table.
	cb2, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(bAddr))
	if err != nil {
		t.Fatalf("rebind %s: %v", bAddr, err)
	}
	tb2 := newTable()
	b2, _ := start(t, Config{Conn: cb2, Peers: []netip.AddrPort{addrOf(ca)}}, tb2)
	require.Eventually(t, 10*time.Second, func() error { return tb2.holds(existing) })
	if tb2.len() != len(existing) {
		t.Fatalf("restarted table holds %d entries, want %d", tb2.len(), len(existing))
	}
	s := a.Stats()
	if s.Resyncs < 2 || s.ResyncEntries < 2*uint64(len(existing)) {
		t.Errorf("a sent %d resyncs of %d entries in all; want 2 or more, of %d entries each", s.Resyncs, s.ResyncEntries, len(existing))
	}
	noDrops(t, "a", s)
	noDrops(t, "b2", b2.Stats())
}

// TestResyncPaced: a resync sends no faster than ResyncRate.
func TestResyncPaced(t *testing.T) {
	ca, cb := listen(t), listen(t)
	existing := testEntries(1000)
	const rate = 5000 // entries/s: 1000 entries take at least 0.2 s
	a, _ := start(t, Config{Conn: ca, Peers: []netip.AddrPort{addrOf(cb)}, ResyncRate: rate}, newTable(existing...))
	tb := newTable()
	begin := time.Now()
	start(t, Config{Conn: cb, Peers: []netip.AddrPort{addrOf(ca)}}, tb)
	require.Eventually(t, 10*time.Second, func() error { return tb.holds(existing) })
	// The last datagram leaves once the ones before it have waited their
	// turn: at least (1000 - one datagram's worth) / rate.
	if took, least := time.Since(begin), time.Duration(float64(len(existing)-MaxEntries)/rate*float64(time.Second)); took < least {
		t.Fatalf("a resync of %d entries at %d/s took %s, want at least %s", len(existing), rate, took, least)
	}
	// The counters follow the last send.
	require.Eventually(t, 5*time.Second, func() error {
		if s := a.Stats(); s.Resyncs != 1 || s.ResyncEntries != uint64(len(existing)) {
			return fmt.Errorf("a sent %d resyncs of %d entries, want 1 of %d", s.Resyncs, s.ResyncEntries, len(existing))
		}
		return nil
	})
}

// testNode is a Node that is not running: tests feed handle directly.
func testNode(t *testing.T, peers ...netip.AddrPort) (*Node, *table, *time.Time) {
	t.Helper()
	clock := time.Unix(1_800_000_000, 0)
	tab := newTable()
	n, err := New(Config{Conn: listen(t), Peers: peers, Key: testKey, Logger: quiet, now: func() time.Time { return clock }}, tab, tab)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, tab, &clock
}

var quiet = slog.New(slog.DiscardHandler)

var peerA = netip.MustParseAddrPort("198.18.0.2:8473")

// TestDropsInstallNothing: every bad datagram is counted under its reason,
// once, and installs nothing; the good ones around them install.
func TestDropsInstallNothing(t *testing.T) {
	n, tab, _ := testNode(t, peerA)
	m := newMAC(testKey)
	ents := make([]Entry, 0, MaxEntries)
	want := map[string]uint64{}
	expect := func(what string, b []byte, from netip.AddrPort, r Reason) {
		t.Helper()
		before := tab.calls.Load()
		n.handle(b, from, m, ents)
		if r != reasonNone {
			want[r.String()]++
		}
		if got := n.Stats().Dropped; !mapsEqual(got, want) {
			t.Fatalf("%s: dropped %v, want %v", what, nonZero(got), nonZero(want))
		}
		if installs := tab.calls.Load() - before; (r == reasonNone) != (installs == 1) {
			t.Fatalf("%s (%s): %d Install calls", what, r, installs)
		}
	}
	for _, c := range badDatagrams(t) {
		expect(c.name, c.b, peerA, c.want)
	}
	es := testEntries(3)
	dg := func(epoch, seq uint64) []byte { return pack(t, testKey, epoch, seq, es)[0] }
	expect("from a stranger", dg(100, 1), netip.MustParseAddrPort("198.18.0.99:8473"), ReasonUnknownPeer)
	expect("from the peer's address, another port", dg(100, 1), netip.MustParseAddrPort("198.18.0.2:8474"), ReasonUnknownPeer)
	expect("our own", dg(n.epoch, 1), peerA, ReasonSelf)
	expect("good", dg(100, 5), peerA, reasonNone)
	expect("the same again", dg(100, 5), peerA, ReasonReplay)
	expect("reordered", dg(100, 4), peerA, reasonNone)
	expect("reordered, again", dg(100, 4), peerA, ReasonReplay)
	expect("far ahead", dg(100, 5+2*windowBits), peerA, reasonNone)
	expect("older than the window", dg(100, 6), peerA, ReasonReplay)
	expect("an older epoch", dg(99, 1_000_000), peerA, ReasonReplay)
	expect("a forged newer epoch", mutated(t, false, func([]byte) []byte {
		b := dg(200, 1)
		b[15]++
		return b
	}), peerA, ReasonBadMAC)
	if got := n.Stats().Peers[0].Epoch; got != 100 {
		t.Fatalf("the peer's epoch is %d after a forged one, want 100", got)
	}
	expect("the peer restarted", dg(200, 1), peerA, reasonNone)
	expect("the old epoch's next", dg(100, 6+2*windowBits), peerA, ReasonReplay)

	s := n.Stats()
	if s.ReceivedDatagrams != 4 || s.ReceivedEntries != 12 || s.Installed != 12 || tab.entries.Load() != 12 {
		t.Fatalf("received %d datagrams, %d entries, installed %d (Install saw %d); want 4, 12, 12, 12",
			s.ReceivedDatagrams, s.ReceivedEntries, s.Installed, tab.entries.Load())
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// TestReappear: a peer is owed a resync when first heard, when it
// restarts, and when heard after more than PeerTimeout of silence; not
// otherwise.
func TestReappear(t *testing.T) {
	n, _, clock := testNode(t, peerA)
	m := newMAC(testKey)
	hello := func(epoch, seq uint64) []byte {
		return slices.Clone(newDatagram().seal(m, typeHello, 0, epoch, seq, *clock))
	}
	owed := func(what string, want bool) {
		t.Helper()
		n.mu.Lock()
		got := n.order[0].pending
		n.order[0].pending = false
		n.mu.Unlock()
		if got != want {
			t.Fatalf("%s: resync owed %v, want %v", what, got, want)
		}
	}
	ents := make([]Entry, 0, MaxEntries)
	n.handle(hello(10, 1), peerA, m, ents)
	owed("first heard", true)
	*clock = clock.Add(DefaultHelloInterval)
	n.handle(hello(10, 2), peerA, m, ents)
	owed("next hello", false)
	*clock = clock.Add(DefaultPeerTimeout)
	n.handle(hello(10, 3), peerA, m, ents)
	owed("heard at the timeout", false)
	*clock = clock.Add(DefaultPeerTimeout + time.Millisecond)
	n.handle(hello(10, 4), peerA, m, ents)
	owed("heard after the timeout", true)
	if s := n.Stats(); !s.Peers[0].Up {
		t.Fatalf("peer not up after a hello: %+v", s.Peers[0])
	}
	n.handle(hello(11, 1), peerA, m, ents)
	owed("restarted", true)
	*clock = clock.Add(DefaultPeerTimeout + time.Millisecond)
	if s := n.Stats(); s.Peers[0].Up {
		t.Fatalf("peer up after %s of silence: %+v", DefaultPeerTimeout+time.Millisecond, s.Peers[0])
	}
}

// TestReceiveBounded: a flood of garbage, from a peer's address and from
// strangers, allocates nothing per datagram and grows no state.
func TestReceiveBounded(t *testing.T) {
	n, tab, _ := testNode(t, peerA)
	m := newMAC(testKey)
	ents := make([]Entry, 0, MaxEntries)
	rng := rand.New(rand.NewPCG(1, 2))
	valid := pack(t, testKey, 5, 1, testEntries(40))[0]
	garbage := make([][]byte, 256)
	for i := range garbage {
		switch i % 3 {
		case 0: // random bytes of a random size
			garbage[i] = make([]byte, rng.IntN(2*MaxDatagram))
			for j := range garbage[i] {
				garbage[i][j] = byte(rng.Uint32())
			}
		case 1: // a valid datagram with one byte changed
			garbage[i] = slices.Clone(valid)
			garbage[i][rng.IntN(len(valid))] ^= byte(1 + rng.IntN(255))
		case 2: // a valid header claiming the most entries, random body
			garbage[i] = slices.Clone(valid)
			garbage[i][33] = MaxEntries
			for j := HeaderLen; j < len(garbage[i]); j++ {
				garbage[i][j] = byte(rng.Uint32())
			}
		}
	}
	strangers := []netip.AddrPort{peerA, netip.MustParseAddrPort("198.18.7.7:1"), netip.MustParseAddrPort("[2001:db8::7]:8473")}
	i := 0
	allocs := testing.AllocsPerRun(3000, func() {
		n.handle(garbage[i%len(garbage)], strangers[i%len(strangers)], m, ents)
		i++
	})
	if allocs != 0 {
		t.Fatalf("handling garbage allocated %.2f times per datagram, want 0", allocs)
	}
	var dropped uint64
	for _, c := range n.Stats().Dropped {
		dropped += c
	}
	if dropped != uint64(i) || tab.calls.Load() != 0 || len(n.peers) != 1 || n.order[0].epoch != 0 {
		t.Fatalf("after %d garbage datagrams: %d dropped, %d installs, %d peers tracked, peer epoch %d; want all dropped, none installed, 1 peer, epoch 0",
			i, dropped, tab.calls.Load(), len(n.peers), n.order[0].epoch)
	}
}

// TestBadInputOverUDP: the checks hold on the real socket path.
func TestBadInputOverUDP(t *testing.T) {
	peer, stranger, cb := listen(t), listen(t), listen(t)
	tb := newTable()
	b, _ := start(t, Config{Conn: cb, Peers: []netip.AddrPort{addrOf(peer)}}, tb)
	to := net.UDPAddrFromAddrPort(addrOf(cb))
	good := testEntries(4)
	send := func(c *net.UDPConn, p []byte) {
		t.Helper()
		if _, err := c.WriteToUDP(p, to); err != nil {
			t.Fatal(err)
		}
	}
	dg := pack(t, testKey, 42, 1, good)[0]
	send(peer, dg)
	send(peer, dg) // replayed
	send(peer, pack(t, []byte("not the key, but long enough too"), 42, 2, testEntries(9))[0])
	send(peer, dg[:len(dg)-3])
	send(peer, make([]byte, 9000)) // oversized: fragmented on the wire, whole here
	send(peer, []byte("FCSY\x02"))
	send(stranger, pack(t, testKey, 42, 3, testEntries(9))[0])
	want := map[string]uint64{"replay": 1, "bad_mac": 1, "truncated": 1, "oversized": 1, "bad_version": 1, "unknown_peer": 1}
	require.Eventually(t, 5*time.Second, func() error {
		if got := nonZero(b.Stats().Dropped); !mapsEqual(got, want) {
			return fmt.Errorf("dropped %v, want %v", got, want)
		}
		return nil
	})
	if err := tb.holds(good); err != nil || tb.len() != len(good) || tb.calls.Load() != 1 {
		t.Fatalf("table after one good datagram and six bad: %d entries in %d installs (%v); want %d in 1",
			tb.len(), tb.calls.Load(), err, len(good))
	}
}

// TestQueueOverflow: Offer never blocks; what does not fit the queue is
// counted.
func TestQueueOverflow(t *testing.T) {
	tab := newTable()
	n, err := New(Config{Conn: listen(t), Peers: []netip.AddrPort{peerA}, Key: testKey, QueueSize: 10}, tab, tab)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	// Not running: nothing drains the queue.
	var queued atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, e := range testEntries(25) {
			if n.Offer(e) {
				queued.Add(1)
			}
		}
	}()
	require.Eventually(t, 5*time.Second, func() error {
		select {
		case <-done:
			return nil
		default:
			return fmt.Errorf("Offer blocked on a full queue after %d entries queued", queued.Load())
		}
	})
	if queued.Load() != 10 {
		t.Fatalf("%d offers queued, want 10 (the queue's size)", queued.Load())
	}
	bad := testEntries(1)[0]
	bad.Proto = 1
	if n.Offer(bad) {
		t.Fatal("an ICMP entry was queued")
	}
	if s := n.Stats(); s.QueueOverflow != 15 || s.Queued != 10 || s.Invalid != 1 {
		t.Fatalf("queue overflow %d, queued %d, invalid %d; want 15, 10, 1", s.QueueOverflow, s.Queued, s.Invalid)
	}
}

func TestNewRejects(t *testing.T) {
	tab := newTable()
	peers := []netip.AddrPort{peerA}
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"no key", Config{Peers: peers}},
		{"short key", Config{Peers: peers, Key: []byte("short")}},
		{"no peers", Config{Key: testKey}},
		{"a peer twice", Config{Key: testKey, Peers: []netip.AddrPort{peerA, peerA}}},
		{"a peer without port", Config{Key: testKey, Peers: []netip.AddrPort{netip.AddrPortFrom(peerA.Addr(), 0)}}},
		{"timeout under the hello interval", Config{Key: testKey, Peers: peers, HelloInterval: time.Second, PeerTimeout: time.Second}},
	} {
		c.cfg.Listen = netip.MustParseAddrPort("127.0.0.1:0")
		if n, err := New(c.cfg, tab, tab); err == nil {
			n.Close()
			t.Errorf("%s: New accepted it", c.name)
		}
	}
}

// TestDualStack: a node bound to [::] (the daemon's default) exchanges
// with an IPv4 peer, whose datagrams arrive from IPv4-mapped addresses.
func TestDualStack(t *testing.T) {
	ca := listen(t)
	tb := newTable()
	b, err := New(Config{Listen: netip.MustParseAddrPort("[::]:0"), Peers: []netip.AddrPort{addrOf(ca)}, Key: testKey, Logger: quiet}, tb, tb)
	if err != nil {
		t.Fatal(err)
	}
	startNode(t, b)
	ta := newTable()
	a, _ := start(t, Config{Conn: ca, Peers: []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.Addr().Port())}}, ta)
	es := testEntries(100)
	for _, e := range es {
		a.Offer(e)
	}
	require.Eventually(t, 10*time.Second, func() error { return tb.holds(es) })
	noDrops(t, "b", b.Stats())
}

// TestResyncAfterSilence: a peer heard again after more than PeerTimeout
// of silence (a partition healed; same epoch) is sent a full resync, over
// the real socket; one heard within the timeout is not.
func TestResyncAfterSilence(t *testing.T) {
	peer, ca := listen(t), listen(t)
	existing := testEntries(120)
	a, _ := start(t, Config{Conn: ca, Peers: []netip.AddrPort{addrOf(peer)},
		HelloInterval: 20 * time.Millisecond, PeerTimeout: 200 * time.Millisecond}, newTable(existing...))
	m := newMAC(testKey)
	seq := uint64(0)
	hello := func() {
		t.Helper()
		seq++
		if _, err := peer.WriteToUDP(newDatagram().seal(m, typeHello, 0, 77, seq, time.Now()), net.UDPAddrFromAddrPort(addrOf(ca))); err != nil {
			t.Fatal(err)
		}
	}
	resyncs := func(want uint64) {
		t.Helper()
		require.Eventually(t, 5*time.Second, func() error {
			if s := a.Stats(); s.Resyncs != want || s.ResyncEntries != want*uint64(len(existing)) {
				return fmt.Errorf("%d resyncs of %d entries in all, want %d of %d each", s.Resyncs, s.ResyncEntries, want, len(existing))
			}
			return nil
		})
	}
	hello()
	resyncs(1) // first heard
	hello()
	hello()
	require.Eventually(t, 5*time.Second, func() error {
		if s := a.Stats(); s.ReceivedDatagrams != 3 {
			return fmt.Errorf("a accepted %d hellos, want 3", s.ReceivedDatagrams)
		}
		return nil
	})
	if s := a.Stats(); s.Resyncs != 1 {
		t.Fatalf("%d resyncs after hellos within the timeout, want still 1", s.Resyncs)
	}
	// Silence until a counts the peer as gone, then a hello again.
	require.Eventually(t, 5*time.Second, func() error {
		if p := a.Stats().Peers[0]; p.Up {
			return fmt.Errorf("peer still up, last heard %s ago", time.Since(p.LastHeard))
		}
		return nil
	})
	hello()
	resyncs(2)
	// What the peer received: every entry, twice, in resync datagrams.
	got := map[tuple]int{}
	buf := make([]byte, MaxDatagram+1)
	ents := make([]Entry, 0, MaxEntries)
	rm := newMAC(testKey)
	for len(got) < len(existing) || slices.ContainsFunc(existing, func(e Entry) bool { return got[keyOf(e)] < 2 }) {
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		nb, _, err := peer.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("peer received %d distinct entries of %d: %v", len(got), len(existing), err)
		}
		h, es, r := decode(buf[:nb], rm, ents)
		if r != reasonNone {
			t.Fatalf("peer dropped a datagram from a: %s", r)
		}
		if h.typ == typeEntries && h.flags&flagResync == 0 {
			t.Fatalf("an entries datagram without the resync flag: %+v", h)
		}
		for _, e := range es {
			got[keyOf(e)]++
		}
	}
}

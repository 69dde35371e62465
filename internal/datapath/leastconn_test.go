package datapath

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

var (
	vipLC4    = VIP{Addr: addr("203.0.113.90"), Port: 80, Proto: TCP}
	vipLCUDP4 = VIP{Addr: addr("203.0.113.90"), Port: 53, Proto: UDP}
	vipLC6    = VIP{Addr: addr("2001:db8:ffff::90"), Port: 80, Proto: TCP}
	// least-time's (leasttime_test.go)
	vipLT4    = VIP{Addr: addr("203.0.113.91"), Port: 80, Proto: TCP}
	vipLTUDP4 = VIP{Addr: addr("203.0.113.91"), Port: 53, Proto: UDP}
	vipLT6    = VIP{Addr: addr("2001:db8:ffff::91"), Port: 80, Proto: TCP}
)

// manyBackends returns n IPv4 backends of weight 1 with distinct MACs.
func manyBackends(n int) []Backend {
	out := make([]Backend, n)
	for i := range out {
		out[i] = Backend{Addr: netip.AddrFrom4([4]byte{198, 18, 8 + byte(i>>8), byte(i)}),
			MAC: []byte{2, 0, 0, 0xc0, byte(i >> 8), byte(i)}, Weight: 1}
	}
	return out
}

// sendAmong runs one packet and returns the backend of set it went to.
func sendAmong(t *testing.T, d *Datapath, p testpacket.Packet, set []Backend) netip.Addr {
	t.Helper()
	verdict, out := runProg(t, d.Program(), p.Build())
	if verdict != xdpTX {
		t.Fatalf("%v:%d -> %v:%d: verdict %s, want XDP_TX", p.Src, p.Sport, p.Dst, p.Dport, verdictNames[verdict])
	}
	for _, b := range set {
		if bytes.Equal(out[0:6], b.MAC) {
			return b.Addr
		}
	}
	t.Fatalf("frame went to unknown MAC %x", out[0:6])
	return netip.Addr{}
}

// activeOf returns the load least-conn compares (active and syn) of each
// backend of vip.
func activeOf(d *Datapath, vip VIP) map[netip.Addr]int64 {
	out := make(map[netip.Addr]int64)
	for a, b := range d.vips[vip].backends {
		out[a] = int64(d.counts.read(b.id).load())
	}
	return out
}

// lcCost is (active + 1) / weight, for messages and checks.
func lcCost(active int64, w uint32) float64 { return float64(active+1) / float64(w) }

// newLCFlow sends a new flow (a SYN, then for TCP an ACK that makes it
// established; one datagram for UDP) after asking Predict, and checks that
// the fast path chose what Predict said, by the comparison it reports.
func newLCFlow(t *testing.T, d *Datapath, vip VIP, client string, sport uint16, set []Backend) (netip.Addr, *LeastConnChoice) {
	t.Helper()
	to, pred, p := sendNewFlow(t, d, vip, client, sport, set)
	if vip.Proto == TCP {
		p.SYN, p.ACK = false, true
		if again := sendAmong(t, d, p, set); again != to {
			t.Fatalf("flow %d: the ACK went to %s, its entry names %s", sport, again, to)
		}
	}
	return to, pred.LeastConn
}

// sendNewFlow asks Predict about a new flow of least-conn or least-time
// VIP vip, sends its first packet (a SYN for TCP) and checks that the
// fast path chose what Predict said. It returns the backend, the
// prediction and the packet.
func sendNewFlow(t *testing.T, d *Datapath, vip VIP, client string, sport uint16, set []Backend) (netip.Addr, Prediction, testpacket.Packet) {
	t.Helper()
	f := Flow{Src: addr(client), Dst: vip.Addr, Sport: sport, Dport: vip.Port, Proto: vip.Proto}
	pred, err := d.Predict(f, vip.Proto == TCP)
	if err != nil {
		t.Fatal(err)
	}
	if pred.LeastConn == nil {
		t.Fatalf("Predict of a new flow of a %s vip: no least-conn or least-time choice (%+v)", pred.Scheduler, pred)
	}
	p := pkt(client, vip.Addr.String(), vip.Proto, sport, vip.Port)
	p.SYN = vip.Proto == TCP
	to := sendAmong(t, d, p, set)
	if to != pred.Backend {
		t.Fatalf("flow %d went to %s, Predict said %s (%+v)", sport, to, pred.Backend, pred.LeastConn.Candidates)
	}
	return to, pred, p
}

// leastCase is a VIP of a scheduler fixture, the client that opens its
// flows and its backends.
type leastCase struct {
	vip    VIP
	client string
	set    []Backend
}

// runLeastCases adds each case's VIP with cfg to one datapath and runs fn
// on it in a subtest named by the VIP.
func runLeastCases(t *testing.T, cfg VIPConfig, cases []leastCase, fn func(t *testing.T, d *Datapath, c leastCase)) {
	d := newTestDatapath(t)
	for _, c := range cases {
		t.Run(c.vip.String(), func(t *testing.T) {
			if err := d.AddVIP(c.vip, cfg, c.set); err != nil {
				t.Fatal(err)
			}
			fn(t, d, c)
		})
	}
}

// TestLeastConnExact: new flows of a least-conn VIP with a small pool go
// to the backend of lowest (active + 1) / weight, as Predict computes it
// from the counts; established flows stay; weights 1:2:3 end with active
// counts 1:2:3; both families, TCP and UDP.
func TestLeastConnExact(t *testing.T) {
	cases := []leastCase{{vipLC4, client4, backends4}, {vipLCUDP4, client4, backends4}, {vipLC6, client6, backends6}}
	runLeastCases(t, VIPConfig{Mode: ModeDSR, LeastConn: true}, cases, func(t *testing.T, d *Datapath, c leastCase) {
		before, _ := d.Counters()
		const flows = 60
		var wsum uint32
		for _, b := range c.set {
			wsum += b.Weight
		}
		for i := range flows {
			act := activeOf(d, c.vip)
			to, ch := newLCFlow(t, d, c.vip, c.client, uint16(30000+i), c.set)
			if !ch.Exact || len(ch.Candidates) != len(c.set) {
				t.Fatalf("flow %d: compared %+v, want all %d backends", i, ch, len(c.set))
			}
			var w uint32
			for _, b := range c.set {
				if b.Addr == to {
					w = b.Weight
				}
			}
			for _, b := range c.set {
				if lcCost(act[b.Addr], b.Weight) < lcCost(act[to], w) {
					t.Fatalf("flow %d went to %s at cost %.2f; %s cost %.2f (counts %v)", i, to, lcCost(act[to], w), b.Addr, lcCost(act[b.Addr], b.Weight), act)
				}
			}
		}
		act := activeOf(d, c.vip)
		for _, b := range c.set {
			want := int64(flows * b.Weight / wsum)
			if act[b.Addr] < want-1 || act[b.Addr] > want+1 {
				t.Errorf("%s (weight %d): %d active, want %d±1 (all: %v)", b.Addr, b.Weight, act[b.Addr], want, act)
			}
		}
		after, _ := d.Counters()
		if n := after.Stat(StatSchedLCExact) - before.Stat(StatSchedLCExact); n != flows {
			t.Errorf("%d new flows counted %d exact least-conn decisions", flows, n)
		}
		if n := after.Decisions[c.vip] - before.Decisions[c.vip]; n != flows || after.Scheduler[c.vip] != "least-conn" {
			t.Errorf("the vip's decisions: %d by %q, want %d by least-conn", n, after.Scheduler[c.vip], flows)
		}
	})
}

// newLCDatapath loads a datapath with vipLC4 (least-conn over backends4)
// holding n established flows.
func newLCDatapath(t *testing.T, n int) *Datapath {
	t.Helper()
	d := newTestDatapath(t)
	if err := d.AddVIP(vipLC4, VIPConfig{Mode: ModeDSR, LeastConn: true}, backends4); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		newLCFlow(t, d, vipLC4, client4, uint16(30000+i), backends4)
	}
	return d
}

// TestLeastConnMissMidFlow: a TCP packet without SYN that the table misses
// takes the ring, even to the busiest backend, and no least-conn decision
// is counted.
func TestLeastConnMissMidFlow(t *testing.T) {
	d := newLCDatapath(t, 30)
	// backends4[0] has weight 1 of 6: least-conn gave it the fewest
	// flows, but it is as costly as the others. Load it more.
	busy := backends4[0]
	d.counts.add(d.vips[vipLC4].backends[busy.Addr].id, classes{100, 0, 0})
	for sport := uint16(40000); ; sport++ {
		ring := expectBackend(t, backends4, 0, addr(client4), vipLC4.Addr, sport, vipLC4.Port, TCP, false)
		if ring.Addr != busy.Addr {
			continue
		}
		before, _ := d.Counters()
		p := pkt(client4, vipLC4.Addr.String(), TCP, sport, vipLC4.Port)
		p.ACK = true
		pred, err := d.Predict(Flow{Src: addr(client4), Dst: vipLC4.Addr, Sport: sport, Dport: vipLC4.Port, Proto: TCP}, false)
		if err != nil {
			t.Fatal(err)
		}
		if to := sendTo(t, d, p); to != busy.Addr || pred.Backend != busy.Addr || pred.LeastConn != nil {
			t.Fatalf("mid-flow miss went to %s (Predict: %s, least-conn %+v), want the ring's %s", to, pred.Backend, pred.LeastConn, busy.Addr)
		}
		after, _ := d.Counters()
		if n := after.Stat(StatSchedLCExact) + after.Stat(StatSchedLCTwo) - before.Stat(StatSchedLCExact) - before.Stat(StatSchedLCTwo); n != 0 {
			t.Fatalf("a mid-flow miss counted %d least-conn decisions", n)
		}
		return
	}
}

// TestLeastConnDrainAndDown: a drained backend (weight 0) gets no new
// flow even when it holds the fewest connections; a VIP whose every
// backend is drained drops new flows as a Maglev VIP does.
func TestLeastConnDrainAndDown(t *testing.T) {
	d := newLCDatapath(t, 30)
	drained := backends4[2].Addr
	if _, err := d.DeleteConns(func(c Conn) bool { return c.Backend == drained }); err != nil {
		t.Fatal(err)
	}
	if err := d.SetWeight(vipLC4, drained, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if to, _ := newLCFlow(t, d, vipLC4, client4, uint16(31000+i), backends4); to == drained {
			t.Fatalf("new flow %d went to the drained backend %s", i, drained)
		}
	}
	for _, b := range backends4 {
		if err := d.SetWeight(vipLC4, b.Addr, 0); err != nil {
			t.Fatal(err)
		}
	}
	p := pkt(client4, vipLC4.Addr.String(), TCP, 32000, vipLC4.Port)
	p.SYN = true
	if v, _ := runProg(t, d.Program(), p.Build()); v != xdpDrop {
		t.Fatalf("every backend drained: verdict %s, want XDP_DROP (no backend)", verdictNames[v])
	}
}

// TestLeastConnTwoChoices: beyond LeastConnExactMax backends, a new flow
// goes to the cheaper of the ring's slot and a second, rehashed one, as
// Predict says; the spread of active counts is tighter than the ring's.
func TestLeastConnTwoChoices(t *testing.T) {
	d := newTestDatapath(t)
	set := manyBackends(4 * LeastConnExactMax)
	if err := d.AddVIP(vipLC4, VIPConfig{Mode: ModeDSR, LeastConn: true}, set); err != nil {
		t.Fatal(err)
	}
	before, _ := d.Counters()
	flows := 10 * len(set)
	for i := range flows {
		act := activeOf(d, vipLC4)
		to, ch := newLCFlow(t, d, vipLC4, client4, uint16(20000+i), set)
		if ch.Exact || len(ch.Candidates) == 0 || len(ch.Candidates) > 2 {
			t.Fatalf("flow %d: compared %+v, want two ring slots", i, ch)
		}
		for _, c := range ch.Candidates {
			if c.Active != uint64(act[c.Backend]) {
				t.Fatalf("flow %d: Predict read %s at %d active, the counts say %d", i, c.Backend, c.Active, act[c.Backend])
			}
			if lcCost(act[c.Backend], 1) < lcCost(act[to], 1) {
				t.Fatalf("flow %d went to %s (%d active), candidate %s has %d", i, to, act[to], c.Backend, act[c.Backend])
			}
		}
	}
	after, _ := d.Counters()
	if n := after.Stat(StatSchedLCTwo) - before.Stat(StatSchedLCTwo); n != uint64(flows) {
		t.Errorf("%d new flows counted %d two-choice decisions", flows, n)
	}
	lo, hi := int64(1<<62), int64(0)
	for _, a := range activeOf(d, vipLC4) {
		lo, hi = min(lo, a), max(hi, a)
	}
	// The ring alone, 10 flows a backend on average, spreads them as a
	// binomial: some backend near 2 and another near 20. Two choices keep
	// every one within a few of the mean.
	t.Logf("%d flows over %d backends by two choices: active from %d to %d", flows, len(set), lo, hi)
	if lo < 6 || hi > 14 {
		t.Errorf("active counts from %d to %d, want within 10±4", lo, hi)
	}
}

// TestLeastConnSYNRetransmit: a SYN again on a flow whose entry is still
// in state syn keeps the entry's backend, though least-conn would now
// choose another; after the handshake a new SYN on the tuple chooses
// afresh.
func TestLeastConnSYNRetransmit(t *testing.T) {
	d := newTestDatapath(t)
	if err := d.AddVIP(vipLC4, VIPConfig{Mode: ModeDSR, LeastConn: true}, backends4); err != nil {
		t.Fatal(err)
	}
	p := pkt(client4, vipLC4.Addr.String(), TCP, 30000, vipLC4.Port)
	p.SYN = true
	first := sendTo(t, d, p)
	// Make the first choice the costliest by far.
	d.counts.add(d.vips[vipLC4].backends[first].id, classes{1000, 0, 0})
	if again := sendTo(t, d, p); again != first {
		t.Fatalf("retransmitted SYN went to %s, its entry names %s", again, first)
	}
	p.SYN, p.ACK = false, true
	sendTo(t, d, p)
	p.SYN, p.ACK = true, false
	if fresh := sendTo(t, d, p); fresh == first {
		t.Fatalf("a SYN on an established tuple went back to %s, the costliest backend", first)
	}
}

// TestLeastConnRefused: least-conn or least-time without the connection
// table, with the source hash, with another scheduler or with pools
// (whose clients the fast path gives their pool's ring) is refused with a
// reason, and nothing is written.
func TestLeastConnRefused(t *testing.T) {
	d := newTestDatapath(t)
	pools, err := NewPools([]Pool{{Name: "eu", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Backends: []netip.Addr{backends4[0].Addr}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg  VIPConfig
		want string
	}{
		{VIPConfig{Mode: ModeDSR, LeastConn: true, NoConntrack: true}, "least-conn needs the connection table and the 5-tuple hash"},
		{VIPConfig{Mode: ModeDSR, LeastConn: true, SourceHash: true}, "least-conn needs the connection table and the 5-tuple hash"},
		{VIPConfig{Mode: ModeDSR, LeastConn: true, RoundRobin: true}, "least-conn and round robin are two schedulers"},
		{VIPConfig{Mode: ModeDSR, LeastConn: true, Pools: pools}, "least-conn does not take source-prefix pools"},
		{VIPConfig{Mode: ModeDSR, LeastTime: true, NoConntrack: true}, "least-time needs the connection table and the 5-tuple hash"},
		{VIPConfig{Mode: ModeDSR, LeastTime: true, SourceHash: true}, "least-time needs the connection table and the 5-tuple hash"},
		{VIPConfig{Mode: ModeDSR, LeastTime: true, RoundRobin: true}, "least-time and round robin are two schedulers"},
		{VIPConfig{Mode: ModeDSR, LeastTime: true, LeastConn: true}, "least-conn and least-time are two schedulers"},
		{VIPConfig{Mode: ModeDSR, LeastTime: true, Pools: pools}, "least-time does not take source-prefix pools"},
	} {
		err := d.AddVIP(vipLC4, c.cfg, backends4)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want a refusal saying %q", c.cfg, err, c.want)
		}
		if len(d.VIPs()) != 0 {
			t.Fatalf("%+v: refused, yet the datapath holds %d vips", c.cfg, len(d.VIPs()))
		}
	}
}

package datapath

import (
	"net/netip"
	"testing"
	"time"
)

// ltConfig is a least-time VIP's (the VIPs vipLT* are beside least-conn's).
var ltConfig = VIPConfig{Mode: ModeDSR, LeastTime: true}

// equal4 is three IPv4 backends of weight 1 (backends4's addresses).
var equal4 = []Backend{
	{Addr: backends4[0].Addr, MAC: backends4[0].MAC, Weight: 1},
	{Addr: backends4[1].Addr, MAC: backends4[1].MAC, Weight: 1},
	{Addr: backends4[2].Addr, MAC: backends4[2].MAC, Weight: 1},
}

// setRT writes backend b's response time in µs (0: not measured).
func setRT(t *testing.T, d *Datapath, vip VIP, b netip.Addr, us int) {
	t.Helper()
	if err := d.SetBackendCost(vip, b, time.Duration(us)*time.Microsecond); err != nil {
		t.Fatal(err)
	}
}

// ltCost is least-time's cost (active + 1) x rt / weight, rt 1 when
// either side compared is not measured (the caller passes 1 then).
func ltCost(active int64, rt uint32, w uint32) float64 {
	return float64(active+1) * float64(rt) / float64(w)
}

// newLTFlow sends a new flow of least-time VIP vip, after asking Predict,
// checks that the fast path chose what Predict said, and, unless keep,
// takes the flow's load off its backend again (the entry stays), so that
// the next flow sees the same counts. It returns the backend and the
// comparison.
func newLTFlow(t *testing.T, d *Datapath, vip VIP, client string, sport uint16, set []Backend, keep bool) (netip.Addr, *LeastConnChoice) {
	t.Helper()
	to, pred, _ := sendNewFlow(t, d, vip, client, sport, set)
	if !pred.LeastConn.LeastTime || pred.Scheduler != "least-time" {
		t.Fatalf("Predict of a new flow of a least-time vip: %+v, want a least-time choice", pred)
	}
	if !keep {
		id := d.vips[vip].backends[to].id
		if vip.Proto == TCP {
			d.counts.add(id, classes{0, -1, -1})
		} else {
			d.counts.add(id, classes{-1, 0, 0})
		}
	}
	return to, pred.LeastConn
}

// TestLeastTimeExact: a new flow of a least-time VIP with a small pool
// goes to the backend of lowest (active + 1) x rt / weight, as Predict
// computes it, no other lower by more than the margin; the loads end in
// inverse proportion to the response times; both families, TCP and UDP;
// each decision counted for the VIP and as an exact least-time one.
func TestLeastTimeExact(t *testing.T) {
	cases := []leastCase{{vipLT4, client4, equal4}, {vipLTUDP4, client4, equal4}, {vipLT6, client6, backends6}}
	runLeastCases(t, ltConfig, cases, func(t *testing.T, d *Datapath, c leastCase) {
		rts := []uint32{100, 300, 900}
		for i, b := range c.set {
			setRT(t, d, c.vip, b.Addr, int(rts[i]))
		}
		rtOf := map[netip.Addr]uint32{}
		for i, b := range c.set {
			rtOf[b.Addr] = rts[i]
		}
		before, _ := d.Counters()
		const flows = 65
		for i := range flows {
			act := activeOf(d, c.vip)
			to, ch := newLTFlow(t, d, c.vip, c.client, uint16(30000+i), c.set, true)
			if !ch.Exact || len(ch.Candidates) != len(c.set) {
				t.Fatalf("flow %d: compared %+v, want all %d backends", i, ch, len(c.set))
			}
			for _, cand := range ch.Candidates {
				if cand.RT != rtOf[cand.Backend] || cand.Active != uint64(act[cand.Backend]) {
					t.Fatalf("flow %d: Predict read %+v, the maps hold rt %d active %d", i, cand, rtOf[cand.Backend], act[cand.Backend])
				}
			}
			chosen := ltCost(act[to], rtOf[to], 1)
			for _, b := range c.set {
				if other := ltCost(act[b.Addr], rtOf[b.Addr], 1); other < chosen*(1-LeastTimeMargin)-1 {
					t.Fatalf("flow %d went to %s at cost %.0f; %s is lower by more than the margin, %.0f (counts %v)", i, to, chosen, b.Addr, other, act)
				}
			}
		}
		// Equal costs (a + 1) x rt: 100, 300 and 900 µs take loads
		// near 9:3:1 of 65 flows, less what the margin blurs.
		act := activeOf(d, c.vip)
		a, b, cc := act[c.set[0].Addr], act[c.set[1].Addr], act[c.set[2].Addr]
		if a < 40 || a > 50 || b < 11 || b > 19 || cc < 3 || cc > 7 {
			t.Errorf("loads %d, %d, %d for rt 100, 300, 900 µs over %d flows, want about 45, 15, 5", a, b, cc, flows)
		}
		after, _ := d.Counters()
		if n := after.Stat(StatSchedLTExact) - before.Stat(StatSchedLTExact); n != flows {
			t.Errorf("%d new flows counted %d exact least-time decisions", flows, n)
		}
		if n := after.Stat(StatSchedLCExact) - before.Stat(StatSchedLCExact); n != 0 {
			t.Errorf("least-time flows counted %d least-conn decisions", n)
		}
		if n := after.Decisions[c.vip] - before.Decisions[c.vip]; n != flows || after.Scheduler[c.vip] != "least-time" {
			t.Errorf("the vip's decisions: %d by %q, want %d by least-time", n, after.Scheduler[c.vip], flows)
		}
	})
}

// TestLeastTimeHysteresis: two backends whose costs differ by less than
// the margin (1/8) share new flows by the hash's start; beyond it the
// cheaper takes every one. The counts stay equal (each flow's load is
// taken off again), so the response times alone decide.
func TestLeastTimeHysteresis(t *testing.T) {
	set := equal4[:2]
	for _, c := range []struct {
		rtA, rtB   int
		shared     bool
		comparison string
	}{
		{100, 110, true, "110 is 10% above 100: within the margin"},
		{100, 112, true, "112 is 12% above 100: within the margin"},
		{100, 116, false, "116 is 16% above 100: beyond the margin"},
		{100, 200, false, "twice"},
	} {
		t.Run(c.comparison, func(t *testing.T) {
			d := newTestDatapath(t)
			if err := d.AddVIP(vipLT4, ltConfig, set); err != nil {
				t.Fatal(err)
			}
			setRT(t, d, vipLT4, set[0].Addr, c.rtA)
			setRT(t, d, vipLT4, set[1].Addr, c.rtB)
			got := map[netip.Addr]int{}
			const flows = 200
			for i := range flows {
				to, ch := newLTFlow(t, d, vipLT4, client4, uint16(30000+i), set, false)
				got[to]++
				second := ch.Candidates[1]
				if c.shared && (second.Beat || (second.RT < ch.Candidates[0].RT) != second.WithinMargin) {
					t.Fatalf("flow %d: %+v, want the second never to beat the first, and a lower one within the margin", i, ch.Candidates)
				}
			}
			a, b := got[set[0].Addr], got[set[1].Addr]
			t.Logf("rt %d and %d µs: %d and %d of %d new flows", c.rtA, c.rtB, a, b, flows)
			if c.shared && (a < flows/4 || b < flows/4) {
				t.Errorf("rt %d and %d µs: %d and %d of %d flows, want both at least a quarter (shared by the hash)", c.rtA, c.rtB, a, b, flows)
			}
			if !c.shared && a != flows {
				t.Errorf("rt %d and %d µs: %d and %d of %d flows, want all to the cheaper", c.rtA, c.rtB, a, b, flows)
			}
		})
	}
}

// TestLeastTimeUnmeasured: a backend not measured yet (cost 0) is compared
// on load alone with whichever backend it meets, so it is neither flooded
// (a measured backend with less load beats it, however slow) nor starved
// (one with more load loses to it, however fast); with equal loads it
// shares new flows with the measured by the hash's start.
func TestLeastTimeUnmeasured(t *testing.T) {
	d := newTestDatapath(t)
	if err := d.AddVIP(vipLT4, ltConfig, equal4); err != nil {
		t.Fatal(err)
	}
	fast, unmeasured, slow := equal4[0].Addr, equal4[1].Addr, equal4[2].Addr
	setRT(t, d, vipLT4, fast, 100)
	setRT(t, d, vipLT4, slow, 100000)
	got := map[netip.Addr]int{}
	const flows = 300
	for i := range flows {
		to, _ := newLTFlow(t, d, vipLT4, client4, uint16(30000+i), equal4, false)
		got[to]++
	}
	t.Logf("equal loads, rt 100 µs, unmeasured, 100 ms: %v of %d", got, flows)
	// Scans from fast or from unmeasured keep their start (load ties);
	// one from slow meets unmeasured (a tie) and then fast, which beats
	// it: fast 2/3, unmeasured 1/3, slow none.
	if got[slow] != 0 || got[unmeasured] < flows/5 || got[unmeasured] > flows/2 {
		t.Errorf("equal loads: %v, want the unmeasured backend 1/3 (1/5 to 1/2) and the slow one none", got)
	}
	id := func(a netip.Addr) uint32 { return d.vips[vipLT4].backends[a].id }
	// The unmeasured one loaded: the fast one, less loaded, beats it.
	d.counts.add(id(unmeasured), classes{5, 0, 0})
	for i := range 30 {
		if to, _ := newLTFlow(t, d, vipLT4, client4, uint16(31000+i), equal4, false); to != fast {
			t.Fatalf("unmeasured backend at 5 active: flow %d went to %s, want the fast %s", i, to, fast)
		}
	}
	// The others loaded: it beats them all, the fast one included.
	d.counts.add(id(unmeasured), classes{-5, 0, 0})
	d.counts.add(id(fast), classes{3, 0, 0})
	d.counts.add(id(slow), classes{3, 0, 0})
	for i := range 30 {
		if to, _ := newLTFlow(t, d, vipLT4, client4, uint16(32000+i), equal4, false); to != unmeasured {
			t.Fatalf("others at 3 active: flow %d went to %s, want the unmeasured %s", i, to, unmeasured)
		}
	}
}

// TestLeastTimeTwoChoices: beyond LeastConnExactMax backends, a new flow
// compares the ring's slot and a rehashed one: the second wins only if
// it is cheaper by more than the margin; within it the ring's stays.
func TestLeastTimeTwoChoices(t *testing.T) {
	set := manyBackends(4 * LeastConnExactMax)
	for _, c := range []struct {
		odd    int // µs of the odd-numbered backends; the even take 100
		shared bool
	}{{110, true}, {200, false}} {
		d := newTestDatapath(t)
		if err := d.AddVIP(vipLT4, ltConfig, set); err != nil {
			t.Fatal(err)
		}
		rt := map[netip.Addr]uint32{}
		for i, b := range set {
			rt[b.Addr] = 100
			if i%2 == 1 {
				rt[b.Addr] = uint32(c.odd)
			}
			setRT(t, d, vipLT4, b.Addr, int(rt[b.Addr]))
		}
		before, _ := d.Counters()
		moved, could := 0, 0
		const flows = 400
		for i := range flows {
			sport := uint16(20000 + i)
			pred, err := d.Predict(Flow{Src: addr(client4), Dst: vipLT4.Addr, Sport: sport, Dport: vipLT4.Port, Proto: TCP}, true)
			if err != nil {
				t.Fatal(err)
			}
			to, ch := newLTFlow(t, d, vipLT4, client4, sport, set, false)
			if ch.Exact || len(ch.Candidates) == 0 || len(ch.Candidates) > 2 {
				t.Fatalf("flow %d: compared %+v, want two ring slots", i, ch)
			}
			if len(ch.Candidates) == 2 && rt[ch.Candidates[1].Backend] < rt[ch.Candidates[0].Backend] {
				could++
				if to != pred.RingBackend {
					moved++
				}
				if c.shared == (to != pred.RingBackend) {
					t.Fatalf("odd backends at %d µs: flow %d went to %s from the ring's %s (%+v)", c.odd, i, to, pred.RingBackend, ch.Candidates)
				}
			} else if to != pred.RingBackend {
				t.Fatalf("flow %d left the ring's %s for a second choice no cheaper (%+v)", i, pred.RingBackend, ch.Candidates)
			}
		}
		t.Logf("odd backends at %d µs: %d of %d flows whose second choice was cheaper took it", c.odd, moved, could)
		if could < flows/8 {
			t.Errorf("only %d of %d flows had a cheaper second choice: the test shows little", could, flows)
		}
		after, _ := d.Counters()
		if n := after.Stat(StatSchedLTTwo) - before.Stat(StatSchedLTTwo); n != flows {
			t.Errorf("%d new flows counted %d two-choice least-time decisions", flows, n)
		}
	}
}

// TestLeastTimeEntriesAndDrain: a flow with an entry keeps its backend
// whatever the costs say; a TCP packet without SYN that the table misses
// takes the ring, counted as no decision; a drained backend (weight 0)
// is never chosen however cheap; with every backend drained a new flow
// gets the verdict a Maglev VIP's gets (dropped, no backend).
func TestLeastTimeEntriesAndDrain(t *testing.T) {
	runLeastCases(t, ltConfig, []leastCase{{vipLT4, client4, equal4}, {vipLT6, client6, backends6}}, func(t *testing.T, d *Datapath, c leastCase) {
		for _, b := range c.set {
			setRT(t, d, c.vip, b.Addr, 100)
		}
		// Table hit: the flow stays on its backend, now the slowest.
		p := pkt(c.client, c.vip.Addr.String(), TCP, 30000, c.vip.Port)
		p.SYN = true
		first := sendAmong(t, d, p, c.set)
		setRT(t, d, c.vip, first, 1000000)
		p.SYN, p.ACK = false, true
		for range 3 {
			if to := sendAmong(t, d, p, c.set); to != first {
				t.Fatalf("established flow moved from %s to %s when its backend became slow", first, to)
			}
		}
		// Mid-flow miss: the ring's backend, even the slow one.
		for sport := uint16(40000); ; sport++ {
			ring := expectBackend(t, c.set, 0, addr(c.client), c.vip.Addr, sport, c.vip.Port, TCP, false)
			if ring.Addr != first {
				continue
			}
			before, _ := d.Counters()
			q := pkt(c.client, c.vip.Addr.String(), TCP, sport, c.vip.Port)
			q.ACK = true
			if to := sendAmong(t, d, q, c.set); to != first {
				t.Fatalf("mid-flow miss went to %s, want the ring's %s", to, first)
			}
			after, _ := d.Counters()
			if n := after.Decisions[c.vip] - before.Decisions[c.vip]; n != 0 {
				t.Fatalf("a mid-flow miss counted %d decisions", n)
			}
			break
		}
		// Drained: the cheapest and least loaded, never chosen.
		drained := c.set[1].Addr
		setRT(t, d, c.vip, drained, 1)
		if err := d.SetWeight(c.vip, drained, 0); err != nil {
			t.Fatal(err)
		}
		for i := range 30 {
			if to, _ := newLTFlow(t, d, c.vip, c.client, uint16(31000+i), c.set, true); to == drained {
				t.Fatalf("new flow %d went to the drained backend %s", i, drained)
			}
		}
		// All drained: the Maglev VIP's verdict, dropped.
		for _, b := range c.set {
			if err := d.SetWeight(c.vip, b.Addr, 0); err != nil {
				t.Fatal(err)
			}
		}
		mg := VIP{Addr: c.vip.Addr, Port: c.vip.Port + 1, Proto: TCP}
		zero := make([]Backend, len(c.set))
		for i, b := range c.set {
			zero[i] = b
			zero[i].Weight = 0
		}
		if err := d.AddVIP(mg, VIPConfig{Mode: ModeDSR}, zero); err != nil {
			t.Fatal(err)
		}
		for _, v := range []VIP{c.vip, mg} {
			q := pkt(c.client, v.Addr.String(), TCP, 32000, v.Port)
			q.SYN = true
			if verdict, _ := runProg(t, d.Program(), q.Build()); verdict != xdpDrop {
				t.Fatalf("%s, every backend drained: verdict %s, want XDP_DROP", v, verdictNames[verdict])
			}
		}
	})
}

// TestSchedulerDecisionsRestart: a VIP that changes scheduler starts its
// decision count at 0 under the new one (the counter is per VIP and
// scheduler); one that keeps it keeps counting.
func TestSchedulerDecisionsRestart(t *testing.T) {
	d := newTestDatapath(t)
	if err := d.AddVIP(vipLT4, VIPConfig{Mode: ModeDSR, LeastConn: true}, equal4); err != nil {
		t.Fatal(err)
	}
	decisions := func() (uint64, string) {
		c, err := d.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c.Decisions[vipLT4], c.Scheduler[vipLT4]
	}
	flow := func(sport uint16) {
		p := pkt(client4, vipLT4.Addr.String(), TCP, sport, vipLT4.Port)
		p.SYN = true
		sendAmong(t, d, p, equal4)
	}
	for i := range 5 {
		flow(uint16(30000 + i))
	}
	if n, s := decisions(); n != 5 || s != "least-conn" {
		t.Fatalf("after 5 new flows: %d decisions by %q, want 5 by least-conn", n, s)
	}
	if err := d.SetVIP(vipLT4, ltConfig, equal4); err != nil {
		t.Fatal(err)
	}
	if n, s := decisions(); n != 0 || s != "least-time" {
		t.Fatalf("after the change to least-time: %d decisions by %q, want 0 by least-time", n, s)
	}
	flow(31000)
	flow(31001)
	if err := d.SetVIP(vipLT4, ltConfig, equal4[:2]); err != nil {
		t.Fatal(err)
	}
	if n, _ := decisions(); n != 2 {
		t.Fatalf("after 2 new flows and a change of backends: %d decisions, want 2", n)
	}
}

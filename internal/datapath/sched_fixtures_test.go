package datapath

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

// schedRow is one scheduler of TestSchedulerFixtures.
type schedRow struct {
	name string
	cfg  VIPConfig
	// pool puts every client of the test in pool p, of backends 0 and 1.
	pool bool
	// decided is the counter a new flow's decision moves (none for the
	// ring's).
	decided Stat
	// ring says the ring decides a new flow (Maglev, source hash, a
	// pool's ring): the model gives its backend. Least-conn's is what
	// Predict computes from the counts; round robin's depends on the CPU
	// the packet runs on.
	ring bool
}

var schedRows = []schedRow{
	{name: "maglev", ring: true},
	{name: "source-hash", cfg: VIPConfig{SourceHash: true}, ring: true},
	{name: "round-robin", cfg: VIPConfig{RoundRobin: true}, decided: StatSchedRR},
	{name: "least-conn", cfg: VIPConfig{LeastConn: true}, decided: StatSchedLCExact},
	{name: "pools", pool: true, ring: true},
}

// TestSchedulerFixtures runs the same five cases through BPF_PROG_RUN for
// every scheduler, IPv4 and IPv6, each on a VIP of its own:
//
//   - new flow: SYNs from 16 clients reach the backend the scheduler
//     gives (the model ring's, a pool's ring for a pool's client, or
//     Predict's for least-conn; one with a weight for round robin), each
//     counted as a decision of the scheduler's; their ACKs hit the table;
//   - table hit: after a reweight that moves the ring, every flow's next
//     packet hits its entry and stays, at least one of them against the
//     ring;
//   - table miss mid-flow: a segment without SYN and without entry takes
//     the ring (the pool's, for a pool's client), whatever the scheduler,
//     and no decision is counted;
//   - drained backend (weight 0): its flows stay, no new flow reaches it;
//   - all down: with every backend drained, a new flow is dropped as
//     drop_no_backend and established flows stay; with every backend out
//     of the VIP's list (health down), the established flows are dropped
//     too.
func TestSchedulerFixtures(t *testing.T) {
	d := newTestDatapath(t)
	for i, row := range schedRows {
		for _, fam := range []struct {
			name     string
			vip      VIP
			backends []Backend
			clients  string
		}{
			{"v4", VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(110 + i)}), Port: 8080, Proto: TCP}, backends4, "198.19.1.0/24"},
			{"v6", VIP{Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 15: byte(0x70 + i)}), Port: 8080, Proto: TCP}, backends6, "2001:db8:1::/48"},
		} {
			t.Run(row.name+"/"+fam.name, func(t *testing.T) {
				sf := schedFixture{t: t, d: d, row: row, vip: fam.vip, clients: fam.clients, backends: slices.Clone(fam.backends),
					members: []netip.Addr{fam.backends[0].Addr, fam.backends[1].Addr}}
				sf.run()
			})
		}
	}
}

// schedFixture is one VIP of TestSchedulerFixtures and its flows.
type schedFixture struct {
	t        *testing.T
	d        *Datapath
	row      schedRow
	vip      VIP
	clients  string       // the clients' prefix (pool p's, for pools)
	backends []Backend    // as the VIP has them now
	members  []netip.Addr // pool p's backends, for pools: 0 and 1
	flows    []schedFlow
	sport    uint16
}

// schedFlow is an established flow (its ACK) and its backend.
type schedFlow struct {
	p  testpacket.Packet
	to netip.Addr
}

// set gives the VIP the row's configuration and sf.backends.
func (sf *schedFixture) set() {
	t := sf.t
	t.Helper()
	cfg := sf.row.cfg
	cfg.Mode = ModeDSR
	if sf.row.pool {
		pools, err := NewPools([]Pool{{Name: "p", Prefixes: []netip.Prefix{netip.MustParsePrefix(sf.clients)},
			Backends: sf.members}})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Pools = pools
	}
	if err := sf.d.SetVIP(sf.vip, cfg, sf.backends); err != nil {
		t.Fatalf("SetVIP(%s, %s): %v", sf.vip, sf.row.name, err)
	}
}

// weigh sets backend i's weight, in sf.backends and in the datapath.
func (sf *schedFixture) weigh(i int, w uint32) {
	sf.t.Helper()
	sf.backends[i].Weight = w
	if err := sf.d.SetWeight(sf.vip, sf.backends[i].Addr, w); err != nil {
		sf.t.Fatal(err)
	}
}

// next returns a packet of a flow not seen before, from one of 16
// clients (a source hash needs several to spread).
func (sf *schedFixture) next() testpacket.Packet {
	sf.sport++
	src := client(sf.clients, 1+int(sf.sport)%16)
	return pkt(src.String(), sf.vip.Addr.String(), TCP, 20000+sf.sport, sf.vip.Port)
}

// ringOf is the model ring's backend for p: Maglev over the backends that
// serve p's client (a pool's, for pools) with their present weights, and
// the flow hash (the source hash for source-hash); the zero Addr when
// none of them has a weight.
func (sf *schedFixture) ringOf(p testpacket.Packet) netip.Addr {
	serve := sf.backends
	if sf.row.pool {
		serve = sf.backends[:2]
	}
	if !slices.ContainsFunc(serve, func(b Backend) bool { return b.Weight > 0 }) {
		return netip.Addr{}
	}
	return expectBackend(sf.t, serve, 0, p.Src, p.Dst, p.Sport, p.Dport, TCP, sf.row.cfg.SourceHash).Addr
}

// send runs p and requires verdict and exactly the counters want.
func (sf *schedFixture) send(what string, p testpacket.Packet, verdict uint32, want map[Stat]uint64) netip.Addr {
	t := sf.t
	t.Helper()
	var got uint32
	var to netip.Addr
	moved := counted(t, sf.d, func() {
		var out []byte
		got, out = runProg(t, sf.d.Program(), p.Build())
		for _, b := range sf.backends {
			if got == xdpTX && string(out[0:6]) == string(b.MAC) {
				to = b.Addr
			}
		}
	})
	if got != verdict || (got == xdpTX && !to.IsValid()) {
		t.Fatalf("%s: %v:%d: verdict %s to %v, want %s", what, p.Src, p.Sport, verdictNames[got], to, verdictNames[verdict])
	}
	if formatStats(moved) != formatStats(want) {
		t.Fatalf("%s: %v:%d moved %s, want %s", what, p.Src, p.Sport, formatStats(moved), formatStats(want))
	}
	return to
}

// newFlows sends n SYNs and their ACKs, each SYN to the backend the
// scheduler gives it, none to a backend without weight, and records the
// flows.
func (sf *schedFixture) newFlows(what string, n int) map[netip.Addr]int {
	t := sf.t
	t.Helper()
	syn := map[Stat]uint64{StatCtSYN: 1, StatTxDSR: 1}
	if sf.row.decided != 0 {
		syn[sf.row.decided] = 1
	}
	seen := map[netip.Addr]int{}
	for range n {
		p := sf.next()
		p.SYN = true
		pr, err := sf.d.Predict(Flow{Src: p.Src, Dst: p.Dst, Sport: p.Sport, Dport: p.Dport, Proto: TCP}, true)
		if err != nil {
			t.Fatal(err)
		}
		want := pr.Backend
		if sf.row.ring {
			if want = sf.ringOf(p); pr.Backend != want {
				t.Fatalf("%s: Predict gives %v:%d %s, the model ring %s", what, p.Src, p.Sport, pr.Backend, want)
			}
		}
		to := sf.send(what+": syn", p, xdpTX, syn)
		if want.IsValid() && to != want {
			t.Fatalf("%s: new flow %v:%d reached %s, want %s", what, p.Src, p.Sport, to, want)
		}
		if i := slices.IndexFunc(sf.backends, func(b Backend) bool { return b.Addr == to }); sf.backends[i].Weight == 0 || (sf.row.pool && i > 1) {
			t.Fatalf("%s: new flow %v:%d reached %s, which has weight 0 or is not its pool's", what, p.Src, p.Sport, to)
		}
		p.SYN = false
		if again := sf.send(what+": ack", p, xdpTX, map[Stat]uint64{StatCtHit: 1, StatTxDSR: 1}); again != to {
			t.Fatalf("%s: the ACK of %v:%d reached %s, its SYN %s", what, p.Src, p.Sport, again, to)
		}
		sf.flows = append(sf.flows, schedFlow{p, to})
		seen[to]++
	}
	return seen
}

// established requires every recorded flow's next packet to hit its entry
// and reach its backend, and returns how many of them the ring now sends
// elsewhere.
func (sf *schedFixture) established(what string) (offRing int) {
	sf.t.Helper()
	for _, f := range sf.flows {
		if to := sf.send(what, f.p, xdpTX, map[Stat]uint64{StatCtHit: 1, StatTxDSR: 1}); to != f.to {
			sf.t.Fatalf("%s: flow %v:%d reached %s, its entry names %s", what, f.p.Src, f.p.Sport, to, f.to)
		}
		if sf.ringOf(f.p) != f.to {
			offRing++
		}
	}
	return offRing
}

func (sf *schedFixture) run() {
	t := sf.t
	sf.set()

	// New flow.
	if seen := sf.newFlows("new flow", 30); len(seen) < 2 {
		t.Errorf("30 new flows all reached %v", seen)
	}

	// Table hit, with the ring moved under the flows: backend 0 from its
	// weight to 4 (1 to 4 in a pool of two, 1:2:3 to 4:2:3 or 1:1:1 to
	// 4:1:1 on the VIP).
	sf.weigh(0, 4)
	off := sf.established("table hit")
	if off == 0 {
		t.Errorf("table hit: none of %d flows is off the moved ring: the hits prove nothing", len(sf.flows))
	}

	// Table miss mid-flow: the ring, no decision.
	for range 20 {
		p := sf.next()
		want := sf.ringOf(p)
		pr, err := sf.d.Predict(Flow{Src: p.Src, Dst: p.Dst, Sport: p.Sport, Dport: p.Dport, Proto: TCP}, false)
		if err != nil || pr.Backend != want || pr.LeastConn != nil || pr.RoundRobin {
			t.Fatalf("table miss: Predict of %v:%d = %+v, %v; want the ring's %s", p.Src, p.Sport, pr, err, want)
		}
		if to := sf.send("table miss", p, xdpTX, map[Stat]uint64{StatCtMiss: 1, StatTxDSR: 1}); to != want {
			t.Fatalf("table miss: %v:%d reached %s, want the ring's %s", p.Src, p.Sport, to, want)
		}
	}

	// Drained backend: backend 1 (in the pool, for pools), which must
	// hold flows for the case to mean something.
	drained := sf.backends[1].Addr
	on := 0
	for _, f := range sf.flows {
		if f.to == drained {
			on++
		}
	}
	if on == 0 {
		t.Fatalf("drained backend: no flow on %s before the drain", drained)
	}
	sf.weigh(1, 0)
	sf.established("drained backend, established")
	sf.newFlows("drained backend, new flow", 30)

	// All down, drained: new flows dropped, established flows stay.
	for i := range sf.backends {
		sf.weigh(i, 0)
	}
	down := map[Stat]uint64{StatDropNoBackend: 1}
	if sf.row.pool {
		down[StatPoolFallback] = 1 // the pool has no backend up: the VIP's ring, empty too
	}
	for range 5 {
		p := sf.next()
		p.SYN = true
		sf.send("all drained, new flow", p, xdpDrop, down)
	}
	sf.established("all drained, established")

	// All down, health: no backend in the VIP's list. The entries name
	// backends that are gone: their flows take the empty ring, dropped.
	sf.backends = nil
	sf.set()
	for range 5 {
		p := sf.next()
		p.SYN = true
		sf.send("all down, new flow", p, xdpDrop, down)
	}
	for _, f := range sf.flows {
		verdict, _ := runVerdict(t, sf.d, f.p)
		if verdict != xdpDrop {
			t.Fatalf("all down: established flow %v:%d: verdict %s, want XDP_DROP", f.p.Src, f.p.Sport, verdictNames[verdict])
		}
	}
	t.Logf("%s: table hits of 30 flows, %d off the moved ring; %d flows kept on the drained backend", sf.row.name, off, on)
}

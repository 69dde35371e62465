package datapath

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

func rrEntry(ws ...uint32) *vipEntry {
	e := &vipEntry{backends: map[netip.Addr]*backendEntry{}, byID: map[uint32]*backendEntry{}}
	for i, w := range ws {
		// Ids in the reverse order of the addresses: the sequence must
		// follow the addresses, which every node has in common.
		b := &backendEntry{Backend: Backend{Addr: netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(11 + i%250)}), Weight: w}, id: uint32(1000 - i)}
		e.backends[b.Addr] = b
		e.byID[b.id] = b
	}
	return e
}

func TestRRSequence(t *testing.T) {
	// nginx's smooth weighted round robin over 1:2:3, by hand: the
	// current values after each step are [1 2 -3], [2 -2 0], [-3 0 3],
	// [-2 2 0], [-1 -2 3], [0 0 0].
	if got, want := rrSequence(rrEntry(1, 2, 3)), []uint32{998, 999, 1000, 998, 999, 998}; !slices.Equal(got, want) {
		t.Errorf("sequence of 1:2:3 = %v, want %v", got, want)
	}
	// Weights are divided by their gcd; weight 0 (drained, or down and
	// drained) gets no slot; no weight at all gives no sequence.
	if got, want := rrSequence(rrEntry(200, 400, 0, 600)), []uint32{997, 999, 1000, 997, 999, 997}; !slices.Equal(got, want) {
		t.Errorf("sequence of 200:400:0:600 = %v, want %v", got, want)
	}
	if got := rrSequence(rrEntry(0, 0)); len(got) != 0 {
		t.Errorf("sequence without weights = %v, want empty", got)
	}
	// Smooth: 5:1 puts the light backend's one turn inside the cycle,
	// between the heavy one's, not at an end of a run of five.
	if got, want := rrSequence(rrEntry(5, 1)), []uint32{1000, 1000, 1000, 999, 1000, 1000}; !slices.Equal(got, want) {
		t.Errorf("sequence of 5:1 = %v, want %v", got, want)
	}

	// Past RRMaxLen the weights are scaled down: the length stays within
	// RRMaxLen plus one slot a backend, and each backend's share is its
	// weight's within two slots (the scaling rounds down, and the
	// length falls short of RRMaxLen by up to a slot a backend).
	ws := make([]uint32, 300)
	var sum uint64
	for i := range ws {
		ws[i] = uint32(MaxWeight - i*97)
		sum += uint64(ws[i])
	}
	e := rrEntry(ws...)
	seq := rrSequence(e)
	if len(seq) > RRMaxLen+len(ws) || len(seq) < RRMaxLen/2 {
		t.Fatalf("capped sequence has %d slots, want about %d", len(seq), RRMaxLen)
	}
	count := map[uint32]int{}
	for _, id := range seq {
		count[id]++
	}
	for id, b := range e.byID {
		want := float64(b.Weight) / float64(sum) * float64(len(seq))
		if d := float64(count[id]) - want; d > 2 || d < -2 || count[id] == 0 {
			t.Errorf("backend weight %d: %d slots of %d, want %.1f±2", b.Weight, count[id], len(seq), want)
		}
	}
}

// pinned runs f on a thread pinned to CPU 0, so that every packet it sends
// uses that CPU's round-robin cursor.
func pinned(t *testing.T, f func() error) {
	t.Helper()
	if err := onCPU(0, f); err != nil {
		t.Fatal(err)
	}
}

// sendRR runs one packet (on the calling thread) and returns the backend
// of bs whose MAC it went to.
func sendRR(prog *ebpf.Program, p testpacket.Packet, bs []Backend) (netip.Addr, error) {
	in := p.Build()
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+512)}
	verdict, err := prog.Run(&opts)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("BPF_PROG_RUN: %w", err)
	}
	if verdict != xdpTX {
		return netip.Addr{}, fmt.Errorf("%v:%d -> %v:%d: verdict %s, want XDP_TX", p.Src, p.Sport, p.Dst, p.Dport, verdictNames[verdict])
	}
	for _, b := range bs {
		if bytes.Equal(opts.DataOut[0:6], b.MAC) {
			return b.Addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("frame went to unknown MAC %x", opts.DataOut[0:6])
}

var (
	vipRR4    = VIP{Addr: addr("203.0.113.60"), Port: 80, Proto: TCP}
	vipRR6    = VIP{Addr: addr("2001:db8:ffff::60"), Port: 80, Proto: TCP}
	vipRRUDP4 = VIP{Addr: addr("203.0.113.60"), Port: 53, Proto: UDP}
	vipRRUDP6 = VIP{Addr: addr("2001:db8:ffff::60"), Port: 53, Proto: UDP}
	rrCfg     = VIPConfig{Mode: ModeDSR, RingSize: smallRing, RoundRobin: true}
	// The sequence of backends4 (1:2:3), as TestRRSequence derives it.
	rrOrder4 = []netip.Addr{addr("198.18.0.13"), addr("198.18.0.12"), addr("198.18.0.11"), addr("198.18.0.13"), addr("198.18.0.12"), addr("198.18.0.13")}
)

// TestRoundRobinFixtures runs a round-robin VIP's cases through
// BPF_PROG_RUN on one CPU, whose cursor starts at the sequence's first slot
// (a new VIP's CPU 0): new flows of either family and protocol take the
// sequence in order; the table then pins them; a retransmitted SYN keeps its
// backend; a segment without SYN and without entry takes the Maglev ring;
// a drained backend is never chosen; and without any weight the VIP drops,
// as the ring does.
func TestRoundRobinFixtures(t *testing.T) {
	d := newTestDatapath(t)
	for _, v := range []struct {
		vip VIP
		bs  []Backend
	}{{vipRR4, backends4}, {vipRRUDP4, backends4}, {vipRR6, backends4v6()}, {vipRRUDP6, backends4v6()}} {
		if err := d.AddVIP(v.vip, rrCfg, v.bs); err != nil {
			t.Fatalf("AddVIP(%s): %v", v.vip, err)
		}
	}
	prog := d.Program()
	syn := func(p testpacket.Packet) testpacket.Packet { p.SYN = true; return p }
	counters := func() Counters {
		c, err := d.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	before := counters()

	// New flows: three cycles of each VIP, exactly in sequence order.
	type flow struct {
		p    testpacket.Packet
		vip  VIP
		want netip.Addr // the backend of its first packet
	}
	var flows []flow
	pinned(t, func() error {
		for _, v := range []struct {
			vip    VIP
			client string
			mk     func(p testpacket.Packet) testpacket.Packet
			order  []netip.Addr
		}{
			{vipRR4, client4, syn, rrOrder4},
			{vipRRUDP4, client4, func(p testpacket.Packet) testpacket.Packet { return p }, rrOrder4},
			{vipRR6, client6, syn, v6Order()},
			{vipRRUDP6, client6, func(p testpacket.Packet) testpacket.Packet { return p }, v6Order()},
		} {
			for i := range 3 * len(v.order) {
				p := v.mk(pkt(v.client, v.vip.Addr.String(), v.vip.Proto, uint16(20000+i), v.vip.Port))
				got, err := sendRR(prog, p, append(backends4, backends4v6()...))
				if err != nil {
					return err
				}
				if want := v.order[i%len(v.order)]; got != want {
					return fmt.Errorf("%s new flow %d went to %s, want %s (sequence %v)", v.vip, i, got, want, v.order)
				}
				flows = append(flows, flow{p, v.vip, got})
			}
		}
		return nil
	})
	after := counters()
	delta := statsDelta(before, after)
	if n := uint64(len(flows)); delta[StatSchedRR] != n || delta[StatCtSYN] != n/2 || delta[StatCtMiss] != n/2 {
		t.Errorf("%d new flows moved %s, want sched_rr %d, ct_syn and ct_miss %d", n, formatStats(delta), n, n/2)
	}
	for _, v := range []VIP{vipRR4, vipRRUDP4, vipRR6, vipRRUDP6} {
		if got := after.Decisions[v] - before.Decisions[v]; got != 18 {
			t.Errorf("vip %s counted %d round-robin decisions, want 18", v, got)
		}
	}

	// Table hits: every flow's next packet (an ACK, a second datagram)
	// and a retransmitted SYN stay on its backend, and the sequence does
	// not move. Some of them must be flows the ring sends elsewhere, or
	// the hits prove nothing.
	before = counters()
	elsewhere := 0
	pinned(t, func() error {
		for _, f := range flows {
			next := f.p
			next.SYN = false
			// The SYN again first: its entry is still in state syn.
			for _, p := range []testpacket.Packet{f.p, next} {
				got, err := sendRR(prog, p, append(backends4, backends4v6()...))
				if err != nil {
					return err
				}
				if got != f.want {
					return fmt.Errorf("%s flow from port %d (syn %v) went to %s, want its entry's %s", f.vip, p.Sport, p.SYN, got, f.want)
				}
			}
			bs := backends4
			if f.vip.Addr.Is6() {
				bs = backends4v6()
			}
			if expectBackend(t, bs, smallRing, f.p.Src, f.p.Dst, f.p.Sport, f.p.Dport, f.vip.Proto, false).Addr != f.want {
				elsewhere++
			}
		}
		return nil
	})
	delta = statsDelta(before, counters())
	if delta[StatSchedRR] != 0 || delta[StatCtHit] < uint64(len(flows)) {
		t.Errorf("packets of known flows moved %s, want no sched_rr and at least %d ct_hit", formatStats(delta), len(flows))
	}
	if elsewhere == 0 {
		t.Errorf("every round-robin choice was also the ring's: the table hits prove nothing")
	}

	// A table miss mid-flow (a segment without SYN, no entry) takes the
	// ring, and does not move the sequence.
	before = counters()
	pinned(t, func() error {
		for i := range 20 {
			p := pkt(client4, vipRR4.Addr.String(), TCP, uint16(30000+i), 80)
			got, err := sendRR(prog, p, backends4)
			if err != nil {
				return err
			}
			if want := expectBackend(t, backends4, smallRing, p.Src, p.Dst, p.Sport, p.Dport, TCP, false).Addr; got != want {
				return fmt.Errorf("segment without entry from port %d went to %s, want the ring's %s", p.Sport, got, want)
			}
		}
		// The next new flow takes the next slot: the misses did not
		// move the cursor (18 flows, three whole cycles, went before).
		got, err := sendRR(prog, syn(pkt(client4, vipRR4.Addr.String(), TCP, 30100, 80)), backends4)
		if err == nil && got != rrOrder4[0] {
			err = fmt.Errorf("new flow after the misses went to %s, want %s", got, rrOrder4[0])
		}
		return err
	})
	delta = statsDelta(before, counters())
	if delta[StatCtMiss] != 20 || delta[StatSchedRR] != 1 {
		t.Errorf("20 misses and a syn moved %s, want ct_miss 20 and sched_rr 1", formatStats(delta))
	}

	// Drained: 198.18.0.13 (weight 3) to weight 0. The sequence is now
	// .12 .11 .12 (1:2); the cursor, at slot 1 of the old one, goes on
	// at slot 1 of the new.
	if err := d.SetWeight(vipRR4, addr("198.18.0.13"), 0); err != nil {
		t.Fatal(err)
	}
	drained := []netip.Addr{addr("198.18.0.11"), addr("198.18.0.12"), addr("198.18.0.12"), addr("198.18.0.11"), addr("198.18.0.12"), addr("198.18.0.12")}
	pinned(t, func() error {
		for i := range 300 {
			got, err := sendRR(prog, syn(pkt(client4, vipRR4.Addr.String(), TCP, uint16(31000+i), 80)), backends4)
			if err != nil {
				return err
			}
			if got == addr("198.18.0.13") {
				return fmt.Errorf("new flow %d went to the drained backend", i)
			}
			if i < len(drained) && got != drained[i] {
				return fmt.Errorf("new flow %d after the drain went to %s, want %s", i, got, drained[i])
			}
		}
		return nil
	})

	// No backend with a weight: the sequence is empty and the ring has no
	// backend either: dropped as no_backend, as a Maglev VIP is.
	for _, b := range backends4 {
		if err := d.SetWeight(vipRR4, b.Addr, 0); err != nil {
			t.Fatal(err)
		}
	}
	before = counters()
	verdict, _ := runProg(t, prog, syn(pkt(client4, vipRR4.Addr.String(), TCP, 32000, 80)).Build())
	delta = statsDelta(before, counters())
	if verdict != xdpDrop || delta[StatDropNoBackend] != 1 || delta[StatSchedRR] != 0 {
		t.Errorf("new flow to a vip without weights: verdict %s, counters %s; want XDP_DROP, drop_no_backend 1, no sched_rr", verdictNames[verdict], formatStats(delta))
	}
}

// backends4v6 are backends4's weights at IPv6 addresses (dsr needs the
// VIP's family).
func backends4v6() []Backend {
	out := slices.Clone(backends4)
	for i := range out {
		out[i].Addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 3, 14: 0, 15: byte(0x11 + i)})
		out[i].MAC = mustMAC(fmt.Sprintf("02:00:00:00:0c:%02x", 0x11+i))
	}
	return out
}

// v6Order is rrOrder4 for backends4v6.
func v6Order() []netip.Addr {
	bs := backends4v6()
	out := make([]netip.Addr, len(rrOrder4))
	for i, a := range rrOrder4 {
		out[i] = bs[a.As4()[3]-0x0b].Addr
	}
	return out
}

// TestRoundRobinShares sends many SYNs on one CPU and on every CPU: on
// one, each full cycle of the sequence gives each backend exactly its
// weight; across CPUs, each CPU's count is within one cycle of exact.
func TestRoundRobinShares(t *testing.T) {
	d := newTestDatapath(t)
	bs := []Backend{
		{Addr: addr("198.18.0.11"), MAC: mustMAC("02:00:00:00:0b:11"), Weight: 5},
		{Addr: addr("198.18.0.12"), MAC: mustMAC("02:00:00:00:0b:12"), Weight: 3},
		{Addr: addr("198.18.0.13"), MAC: mustMAC("02:00:00:00:0b:13"), Weight: 2},
		{Addr: addr("198.18.0.14"), MAC: mustMAC("02:00:00:00:0b:14"), Weight: 0},
	}
	if err := d.AddVIP(vipRR4, rrCfg, bs); err != nil {
		t.Fatal(err)
	}
	const cycles, length = 100, 10
	count := map[netip.Addr]int{}
	pinned(t, func() error {
		for i := range cycles * length {
			p := pkt(client4, vipRR4.Addr.String(), TCP, uint16(10000+i), 80)
			p.SYN = true
			got, err := sendRR(d.Program(), p, bs)
			if err != nil {
				return err
			}
			count[got]++
			if (i+1)%length == 0 {
				for _, b := range bs {
					if want := int(b.Weight) * (i + 1) / length; count[b.Addr] != want {
						return fmt.Errorf("after %d cycles %s has %d new flows, want exactly %d", (i+1)/length, b.Addr, count[b.Addr], want)
					}
				}
			}
		}
		return nil
	})
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.Decisions[vipRR4] != cycles*length {
		t.Errorf("vip counted %d round-robin decisions, want %d", c.Decisions[vipRR4], cycles*length)
	}

	// Each CPU's cursor starts elsewhere (CPU c at c/CPUs of the
	// sequence), so that the CPUs do not hand out the same backend at the
	// same moment.
	var cur []balancerRrCursor
	if err := d.objs.RrCursors.Lookup(uint32(d.vips[vipRR4].index), &cur); err != nil {
		t.Fatal(err)
	}
	for cpu, v := range cur[1:] {
		if want := uint32((cpu + 1) * length / len(cur)); v.Pos != want {
			t.Errorf("cpu %d cursor at %d, want %d", cpu+1, v.Pos, want)
		}
	}
}

// TestRoundRobinPredict checks explain's view: a new flow of a round-robin
// VIP is the sequence's (its backend unknown); a flow with an entry is the
// entry's; a segment without SYN and without entry is the ring's.
func TestRoundRobinPredict(t *testing.T) {
	d := newTestDatapath(t)
	if err := d.AddVIP(vipRR4, rrCfg, backends4); err != nil {
		t.Fatal(err)
	}
	f := Flow{Src: addr(client4), Dst: vipRR4.Addr, Sport: 40000, Dport: 80, Proto: TCP}
	p, err := d.Predict(f, true)
	if err != nil {
		t.Fatal(err)
	}
	wantShares := []RRShare{{addr("198.18.0.11"), 1}, {addr("198.18.0.12"), 2}, {addr("198.18.0.13"), 3}}
	if !p.RoundRobin || p.Backend.IsValid() || p.RRLen != 6 || !slices.Equal(p.RRShares, wantShares) || p.Scheduler != "round-robin" {
		t.Errorf("Predict(syn) = %+v, want round robin, no backend, 6 slots %v", p, wantShares)
	}
	p, err = d.Predict(f, false)
	if err != nil {
		t.Fatal(err)
	}
	ring := expectBackend(t, backends4, smallRing, f.Src, f.Dst, f.Sport, f.Dport, TCP, false).Addr
	if p.RoundRobin || p.Backend != ring || p.Conntrack {
		t.Errorf("Predict(ack without entry) = %+v, want the ring's %s", p, ring)
	}
	in := pkt(client4, vipRR4.Addr.String(), TCP, 40000, 80)
	in.SYN = true
	verdict, out := runProg(t, d.Program(), in.Build())
	if verdict != xdpTX {
		t.Fatalf("syn: verdict %s", verdictNames[verdict])
	}
	var got netip.Addr
	for _, b := range backends4 {
		if bytes.Equal(out[0:6], b.MAC) {
			got = b.Addr
		}
	}
	for _, syn := range []bool{false, true} {
		p, err = d.Predict(f, syn)
		if err != nil {
			t.Fatal(err)
		}
		if p.RoundRobin || !p.Conntrack || p.Backend != got {
			t.Errorf("Predict(syn %v) of a flow with an entry in state syn = %+v, want the entry's %s", syn, p, got)
		}
	}
	uf := Flow{Src: addr(client4), Dst: vipRR4.Addr, Sport: 40000, Dport: 80, Proto: UDP}
	if err := d.AddVIP(VIP{Addr: vipRR4.Addr, Port: 80, Proto: UDP}, rrCfg, backends4); err != nil {
		t.Fatal(err)
	}
	if p, err = d.Predict(uf, false); err != nil || !p.RoundRobin {
		t.Errorf("Predict(udp without entry) = %+v, %v; want round robin", p, err)
	}
}

func TestRoundRobinValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  VIPConfig
		want string
	}{
		{VIPConfig{Mode: ModeDSR, RoundRobin: true, NoConntrack: true}, "round robin needs the connection table"},
		{VIPConfig{Mode: ModeDSR, RoundRobin: true, SourceHash: true}, "choose one"},
	} {
		err := Validate(vipRR4, c.cfg, backends4)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("Validate(%+v) = %v, want an error saying %q", c.cfg, err, c.want)
		}
	}
}

// TestRoundRobinAdopt restarts on pinned maps: the adopted VIP is round
// robin with the same sequence extent, re-applying it writes nothing new,
// the next new flow takes the slot after the last one the first datapath
// gave, the decision count carries over, and a change to maglev retires
// the sequence: once reclaimed, only the ring is left in the arena.
func TestRoundRobinAdopt(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	load := func() *Datapath {
		d, err := Load(Options{ConntrackEntries: 8192, PinDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	d1 := load()
	if err := d1.AddVIP(vipRR4, rrCfg, backends4); err != nil {
		t.Fatal(err)
	}
	syn := func(port uint16) testpacket.Packet {
		p := pkt(client4, vipRR4.Addr.String(), TCP, port, 80)
		p.SYN = true
		return p
	}
	pinned(t, func() error {
		for i := range 2 {
			if got, err := sendRR(d1.Program(), syn(uint16(50000+i)), backends4); err != nil || got != rrOrder4[i] {
				return fmt.Errorf("new flow %d went to %s (%v), want %s", i, got, err, rrOrder4[i])
			}
		}
		return nil
	})
	var m1 balancerVipMeta
	if err := lookupMeta(d1, vipRR4, &m1); err != nil {
		t.Fatal(err)
	}
	d1.Close() // as a killed daemon's maps: the pins stay

	d2 := load()
	e := d2.vips[vipRR4]
	if e == nil || !e.cfg.RoundRobin || e.rr != (extent{m1.RrOffset, m1.RrLen}) || m1.RrLen != 6 {
		t.Fatalf("adopted %+v, want a round-robin vip with the sequence at %d+%d", e, m1.RrOffset, m1.RrLen)
	}
	if err := d2.SetVIP(vipRR4, rrCfg, backends4); err != nil {
		t.Fatal(err)
	}
	var m2 balancerVipMeta
	if err := lookupMeta(d2, vipRR4, &m2); err != nil {
		t.Fatal(err)
	}
	if m2 != m1 {
		t.Errorf("re-applying the adopted state changed the meta: %+v -> %+v", m1, m2)
	}
	pinned(t, func() error {
		if got, err := sendRR(d2.Program(), syn(50002), backends4); err != nil || got != rrOrder4[2] {
			return fmt.Errorf("first new flow after the restart went to %s (%v), want %s", got, err, rrOrder4[2])
		}
		return nil
	})
	c, err := d2.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.Decisions[vipRR4] != 3 {
		t.Errorf("decisions after the restart = %d, want 3", c.Decisions[vipRR4])
	}

	// To maglev: the sequence goes (retired), the flag with it.
	if err := d2.SetVIP(vipRR4, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4); err != nil {
		t.Fatal(err)
	}
	if err := lookupMeta(d2, vipRR4, &m2); err != nil {
		t.Fatal(err)
	}
	if m2.RrLen != 0 || m2.Flags&uint16(balancerFulcrumVipFlagsVIP_F_ROUND_ROBIN) != 0 {
		t.Errorf("meta after the change to maglev = %+v, want no sequence", m2)
	}
	if err := d2.arena.reclaim(); err != nil {
		t.Fatal(err)
	}
	free, retired := d2.arena.freeSlots()
	if retired != 0 || free != d2.arena.size-smallRing {
		t.Errorf("arena after the change: %d free, %d retired, want %d free (all but the ring)", free, retired, d2.arena.size-smallRing)
	}

	// Back to round robin: the cursors start again, and so does the
	// count of decisions.
	if err := d2.SetVIP(vipRR4, rrCfg, backends4); err != nil {
		t.Fatal(err)
	}
	if c, err = d2.Counters(); err != nil || c.Decisions[vipRR4] != 0 {
		t.Errorf("decisions after becoming round robin again = %d (%v), want 0", c.Decisions[vipRR4], err)
	}
	pinned(t, func() error {
		if got, err := sendRR(d2.Program(), syn(50003), backends4); err != nil || got != rrOrder4[0] {
			return fmt.Errorf("first new flow after becoming round robin again went to %s (%v), want %s", got, err, rrOrder4[0])
		}
		return nil
	})
}

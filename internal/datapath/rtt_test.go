package datapath

import (
	"net/netip"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
)

var (
	vipRT4   = VIP{Addr: addr("203.0.113.61"), Port: 80, Proto: TCP}
	vipRTOff = VIP{Addr: addr("203.0.113.62"), Port: 80, Proto: TCP}
)

// TestResponseTimeFixtures runs handshakes through BPF_PROG_RUN: a SYN, a
// known wait, then the first ACK gives the flow's backend one sample of at
// least the wait; later packets of the flow, a flow whose first packet is
// no SYN, a handshake ended by an RST, and a VIP that does not measure add
// none; a first ACK whose SYN time is gone counts rt_lost.
func TestResponseTimeFixtures(t *testing.T) {
	d := newTestDatapath(t)
	if err := d.AddVIP(vipRT4, VIPConfig{Mode: ModeDSR, RingSize: smallRing, ResponseTime: true}, backends4); err != nil {
		t.Fatal(err)
	}
	if err := d.AddVIP(vipRTOff, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4); err != nil {
		t.Fatal(err)
	}
	prog := d.Program()
	counters := func() Counters {
		t.Helper()
		c, err := d.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	samples := func(vip VIP) map[netip.Addr]BackendSamples {
		t.Helper()
		s, err := d.ResponseSamples(vip)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	send := func(p testpacket.Packet) netip.Addr {
		t.Helper()
		got, err := sendRR(prog, p, backends4)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	flow := func(vip VIP, sport uint16) (syn, ack testpacket.Packet) {
		ack = pkt(client4, vip.Addr.String(), TCP, sport, vip.Port)
		ack.ACK = true
		syn = ack
		syn.SYN, syn.ACK = true, false
		return syn, ack
	}

	// SYN, wait, ACK: one sample, of at least the wait.
	const wait = 30 * time.Millisecond
	before, s0 := counters(), samples(vipRT4)
	syn, ack := flow(vipRT4, 31000)
	be := send(syn)
	// The handshake took wait: the SYN's recorded time moves back by it
	// (the slot's low 32 bits; bpf/rtt.h), rather than the test sleeping.
	f := Flow{Src: addr(client4), Dst: vipRT4.Addr, Sport: 31000, Dport: vipRT4.Port, Proto: TCP}
	slot := flowhash.Flow(f.Src, f.Dst, f.Sport, f.Dport, uint8(f.Proto)) & (d.objs.RtSyn.MaxEntries() - 1)
	var v uint64
	if err := d.objs.RtSyn.Lookup(slot, &v); err != nil || v == 0 {
		t.Fatalf("the SYN's time in rt_syn[%d]: %#x, %v", slot, v, err)
	}
	v = v&^0xffffffff | uint64(uint32(v)-uint32(wait.Nanoseconds()))
	if err := d.objs.RtSyn.Put(slot, v); err != nil {
		t.Fatal(err)
	}
	if got := send(ack); got != be {
		t.Fatalf("ACK went to %s, its SYN to %s", got, be)
	}
	s1 := samples(vipRT4)
	got := s1[be]
	if n := got.Count - s0[be].Count; n != 1 {
		t.Fatalf("backend %s: %d samples after one handshake, want 1", be, n)
	}
	// The upper bound is loose: the machine is shared, but a second is
	// what the program itself refuses.
	if dt := got.Sum - s0[be].Sum; dt < wait || dt > wait+500*time.Millisecond {
		t.Errorf("backend %s: sample %v for a handshake of %v, want at least %v and less than %v", be, dt, wait, wait, wait+500*time.Millisecond)
	}
	if delta := statsDelta(before, counters()); delta[StatRTSample] != 1 || delta[StatRTLost] != 0 {
		t.Errorf("one handshake moved %s, want rt_sample 1, rt_lost 0", formatStats(delta))
	}
	for a, s := range s1 {
		if a != be && s.Count != s0[a].Count {
			t.Errorf("backend %s got %d samples from a flow of %s", a, s.Count-s0[a].Count, be)
		}
	}

	// The flow's later packets (established), a flow first seen mid-way
	// (no SYN: its entry starts established), an RST ending a handshake,
	// and a full handshake to a VIP that does not measure: no sample.
	before = counters()
	send(ack)
	send(ack)
	_, mid := flow(vipRT4, 31001)
	send(mid)
	rsyn, rst := flow(vipRT4, 31002)
	rst.RST = true
	send(rsyn)
	if _, err := sendRR(prog, rst, backends4); err != nil {
		t.Fatal(err)
	}
	osyn, oack := flow(vipRTOff, 31003)
	send(osyn)
	send(oack)
	s2 := samples(vipRT4)
	for a, s := range s2 {
		if s != s1[a] {
			t.Errorf("backend %s: samples %+v became %+v with no completed handshake", a, s1[a], s)
		}
	}
	if off := samples(vipRTOff); len(off) != 0 {
		t.Errorf("a VIP that does not measure has samples %v", off)
	}
	if delta := statsDelta(before, counters()); delta[StatRTSample] != 0 || delta[StatRTLost] != 0 {
		t.Errorf("packets without a completed handshake moved %s, want no rt_sample, no rt_lost", formatStats(delta))
	}

	// A SYN whose time is gone (another flow's SYN took the slot; the
	// test empties the slots): its ACK counts rt_lost, no sample.
	lsyn, lack := flow(vipRT4, 31004)
	send(lsyn)
	for i := uint32(0); i < d.objs.RtSyn.MaxEntries(); i++ {
		if err := d.objs.RtSyn.Put(i, uint64(0)); err != nil {
			t.Fatal(err)
		}
	}
	before = counters()
	send(lack)
	if delta := statsDelta(before, counters()); delta[StatRTSample] != 0 || delta[StatRTLost] != 1 {
		t.Errorf("an ACK without its SYN's time moved %s, want rt_lost 1 and no rt_sample", formatStats(delta))
	}
	for a, s := range samples(vipRT4) {
		if s != s2[a] {
			t.Errorf("backend %s: a lost sample changed %+v to %+v", a, s2[a], s)
		}
	}
}

// TestBackendCost writes and reads backend_cost, and shows that a backend
// that takes a freed id starts unmeasured.
func TestBackendCost(t *testing.T) {
	require.BPF(t)
	// Room for three backends: the fourth must take a freed id.
	d, err := Load(Options{ConntrackEntries: 8192, MaxBackends: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	cfg := VIPConfig{Mode: ModeDSR, RingSize: smallRing, ResponseTime: true}
	if err := d.AddVIP(vipRT4, cfg, backends4); err != nil {
		t.Fatal(err)
	}
	b := backends4[0].Addr
	for _, c := range []struct {
		rt   time.Duration
		want uint32
	}{{0, 0}, {time.Nanosecond, 1}, {1500 * time.Microsecond, 1500}, {20*time.Millisecond + 1, 20001}, {2 * time.Hour, 1<<32 - 1}} {
		if err := d.SetBackendCost(vipRT4, b, c.rt); err != nil {
			t.Fatal(err)
		}
		if got, err := d.BackendCost(vipRT4, b); err != nil || got != c.want {
			t.Errorf("cost of %v reads %d µs (%v), want %d", c.rt, got, err, c.want)
		}
	}
	if err := d.SetBackendCost(vipRT4, addr("198.18.9.9"), time.Millisecond); err == nil {
		t.Error("SetBackendCost of an unknown backend succeeded")
	}
	if err := d.SetBackendCost(vipRT4, b, 7*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Remove the backend, add another: it takes the freed id, and must
	// not inherit the 7 ms.
	oldID := d.backendOf(vipRT4, b).id
	if err := d.SetVIP(vipRT4, cfg, backends4[1:]); err != nil {
		t.Fatal(err)
	}
	nb := Backend{Addr: addr("198.18.0.19"), MAC: mustMAC("02:00:00:00:0b:19"), Weight: 1}
	if err := d.SetVIP(vipRT4, cfg, append([]Backend{nb}, backends4[1:]...)); err != nil {
		t.Fatal(err)
	}
	if id := d.backendOf(vipRT4, nb.Addr).id; id != oldID {
		t.Fatalf("the new backend got id %d, not the freed %d: the test proves nothing", id, oldID)
	}
	if got, err := d.BackendCost(vipRT4, nb.Addr); err != nil || got != 0 {
		t.Errorf("a new backend's cost reads %d µs (%v), want 0", got, err)
	}
}

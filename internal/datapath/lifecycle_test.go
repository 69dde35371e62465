package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// flowsByBackend opens n TCP flows (one ACK each, so each gets a
// connection entry) and groups their source ports by backend.
func flowsByBackend(t *testing.T, d *Datapath, vip VIP, client string, n int) map[netip.Addr][]uint16 {
	t.Helper()
	out := make(map[netip.Addr][]uint16)
	for i := range n {
		sport := uint16(20000 + i)
		b := sendTo(t, d, pkt(client, vip.Addr.String(), TCP, sport, vip.Port))
		out[b] = append(out[b], sport)
	}
	return out
}

// requireFlowsOn requires each flow of flowsByBackend (its next ACK) to
// reach its backend, and returns how many there are.
func requireFlowsOn(t *testing.T, d *Datapath, flows map[netip.Addr][]uint16, when string) int {
	t.Helper()
	n := 0
	for b, ports := range flows {
		for _, sport := range ports {
			if got := sendTo(t, d, pkt(client4, vipWeb4.Addr.String(), TCP, sport, 80)); got != b {
				t.Fatalf("flow :%d went to %s %s, want %s", sport, got, when, b)
			}
			n++
		}
	}
	return n
}

// reweightWeb4 reweights vipWeb4's backends so that many ring slots change
// owner, and returns them as set.
func reweightWeb4(t *testing.T, d *Datapath) []Backend {
	t.Helper()
	changed := slices.Clone(backends4)
	changed[0].Weight, changed[2].Weight = 10, 1
	if err := d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR}, changed); err != nil {
		t.Fatal(err)
	}
	return changed
}

// TestEstablishedFlowsNeverMove changes the ring under open flows: their
// packets keep their backend (connection entries), while SYNs follow the
// new ring.
func TestEstablishedFlowsNeverMove(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)
	before := flowsByBackend(t, d, vipWeb4, client4, 300)

	changed := reweightWeb4(t, d)
	moved := 0
	for b, ports := range before {
		for _, sport := range ports {
			p := pkt(client4, vipWeb4.Addr.String(), TCP, sport, 80)
			if got := sendTo(t, d, p); got != b {
				t.Fatalf("established flow :%d moved from %s to %s after a reweight", sport, b, got)
			}
			p.SYN = true
			want := expectBackend(t, changed, 0, p.Src, p.Dst, sport, 80, TCP, false).Addr
			if got := sendTo(t, d, p); got != want {
				t.Fatalf("SYN :%d went to %s, want the new ring's %s", sport, got, want)
			}
			if want != b {
				moved++
			}
		}
	}
	if moved == 0 {
		t.Fatal("the reweight moved no ring slot of the 300 flows: the test proves nothing")
	}
	t.Logf("%d of 300 flows would hash elsewhere now; their SYNs did, their ACKs did not", moved)
}

// TestRemovedBackendFlowsRehash removes a backend while flows to every
// backend are open: its flows re-hash (counted stale) to survivors, and the
// other flows keep their backend.
func TestRemovedBackendFlowsRehash(t *testing.T) {
	for _, c := range []struct {
		vip    VIP
		client string
		set    []Backend
	}{{vipWeb4, client4, backends4}, {vipWeb6, client6, backends6}} {
		t.Run(c.vip.String(), func(t *testing.T) {
			d := newTestDatapath(t)
			provision(t, d)
			flows := flowsByBackend(t, d, c.vip, c.client, 300)
			gone := c.set[1].Addr
			if len(flows[gone]) == 0 {
				t.Fatalf("no flow reached %s before removal: %v", gone, flows)
			}
			if err := d.RemoveBackend(c.vip, gone); err != nil {
				t.Fatal(err)
			}
			survivors := slices.DeleteFunc(slices.Clone(c.set), func(b Backend) bool { return b.Addr == gone })
			before, _ := d.Counters()
			for b, ports := range flows {
				for _, sport := range ports {
					p := pkt(c.client, c.vip.Addr.String(), TCP, sport, c.vip.Port)
					got := sendTo(t, d, p)
					if b == gone {
						want := expectBackend(t, survivors, 0, p.Src, p.Dst, sport, c.vip.Port, TCP, false).Addr
						if got != want {
							t.Errorf("flow :%d of the removed backend went to %s, want %s (new ring)", sport, got, want)
						}
					} else if got != b {
						t.Errorf("flow :%d moved from surviving %s to %s", sport, b, got)
					}
				}
			}
			after, _ := d.Counters()
			delta := statsDelta(before, after)
			if delta[StatCtStale] != uint64(len(flows[gone])) {
				t.Errorf("ct_stale moved by %d, want %d (one per flow of the removed backend)", delta[StatCtStale], len(flows[gone]))
			}
			// The re-hashed flows got new entries: now they hit.
			for _, sport := range flows[gone] {
				p := pkt(c.client, c.vip.Addr.String(), TCP, sport, c.vip.Port)
				sendTo(t, d, p)
			}
			final, _ := d.Counters()
			if got := statsDelta(after, final)[StatCtHit]; got != uint64(len(flows[gone])) {
				t.Errorf("after re-hash, ct_hit moved by %d, want %d", got, len(flows[gone]))
			}
		})
	}
}

// TestDrain sets a backend's weight to 0: its established flows stay, new
// flows never reach it.
func TestDrain(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)
	flows := flowsByBackend(t, d, vipWeb4, client4, 200)
	drained := backends4[2].Addr
	if err := d.SetWeight(vipWeb4, drained, 0); err != nil {
		t.Fatal(err)
	}
	for _, sport := range flows[drained] {
		if got := sendTo(t, d, pkt(client4, vipWeb4.Addr.String(), TCP, sport, 80)); got != drained {
			t.Fatalf("established flow :%d left the draining backend for %s", sport, got)
		}
	}
	for i := range 500 {
		p := pkt(client4, vipWeb4.Addr.String(), TCP, uint16(30000+i), 80)
		p.SYN = true
		if got := sendTo(t, d, p); got == drained {
			t.Fatalf("new flow :%d reached the draining backend %s", 30000+i, drained)
		}
	}
	if len(flows[drained]) == 0 {
		t.Fatal("no flow reached the backend before draining: the test proves nothing")
	}
}

// TestRemoveVIP removes a VIP with open flows: its packets go to the host
// untouched, connection entries or not.
func TestRemoveVIP(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)
	flowsByBackend(t, d, vipWeb4, client4, 20)
	if err := d.RemoveVIP(vipWeb4); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		verdict, _ := runProg(t, d.Program(), pkt(client4, vipWeb4.Addr.String(), TCP, uint16(20000+i), 80).Build())
		if verdict != xdpPass {
			t.Fatalf("flow :%d to a removed vip: verdict %s, want XDP_PASS", 20000+i, verdictNames[verdict])
		}
	}
	// Re-adding it at another index must still work and not revive old
	// entries by accident: the ring decides.
	if err := d.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR}, backends4[:1]); err != nil {
		t.Fatal(err)
	}
	if got := sendTo(t, d, pkt(client4, vipWeb4.Addr.String(), TCP, 20005, 80)); got != backends4[0].Addr {
		t.Fatalf("after re-adding with one backend, flow went to %s, want %s", got, backends4[0].Addr)
	}
}

// TestPredictMatchesFastPath compares Predict (the basis of `fulcrum
// explain`) with where packets really go, ring and connection entry.
func TestPredictMatchesFastPath(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)
	for i := range 200 {
		for _, v := range []struct {
			vip    VIP
			client string
		}{{vipWeb4, client4}, {vipWeb6, client6}, {vipAll4, client4}, {vipSrc4, client4}} {
			dport := v.vip.Port
			if dport == 0 {
				dport = uint16(1 + i)
			}
			p := pkt(v.client, v.vip.Addr.String(), TCP, uint16(10000+i), dport)
			f := Flow{Src: p.Src, Dst: p.Dst, Sport: p.Sport, Dport: p.Dport, Proto: TCP}
			pred, err := d.Predict(f, false)
			if err != nil {
				t.Fatal(err)
			}
			if pred.Conntrack {
				t.Fatalf("%v: predicted a connection entry before any packet", f)
			}
			if got := sendTo(t, d, p); got != pred.Backend {
				t.Fatalf("%v: packet went to %s, Predict said %s", f, got, pred.Backend)
			}
			if pred2, _ := d.Predict(f, false); !pred2.Conntrack || pred2.Backend != pred.Backend {
				t.Fatalf("%v: after a packet, Predict = %+v, want the connection entry to %s", f, pred2, pred.Backend)
			}
		}
	}
	if _, err := d.Predict(Flow{Src: addr(client4), Dst: addr("203.0.113.99"), Sport: 1, Dport: 80, Proto: TCP}, false); !errors.Is(err, ErrNoVIP) {
		t.Fatalf("Predict to no vip: err = %v, want ErrNoVIP", err)
	}
}

// TestBadInputChangesNothing feeds VIPs and backends the maps cannot take:
// each gets an error naming the problem, and neither the Go state nor the
// fast path's behaviour changes.
func TestBadInputChangesNothing(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)
	probe := pkt(client4, vipWeb4.Addr.String(), TCP, 12345, 80)
	probe.SYN = true
	wantBackend := sendTo(t, d, probe)
	state := d.VIPs()

	v4 := backends4[0]
	cases := []struct {
		name string
		do   func() error
		want string
	}{
		{"duplicate vip", func() error { return d.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR}, backends4) }, "already exists"},
		{"unknown mode", func() error { return d.SetVIP(vipWeb4, VIPConfig{Mode: Mode(9)}, backends4) }, "unknown mode"},
		{"unknown protocol", func() error {
			return d.AddVIP(VIP{Addr: addr("203.0.113.60"), Port: 80, Proto: Proto(1)}, VIPConfig{Mode: ModeDSR}, nil)
		}, "unknown protocol"},
		{"invalid vip address", func() error { return d.AddVIP(VIP{Port: 80, Proto: TCP}, VIPConfig{Mode: ModeDSR}, nil) }, "vip address"},
		{"wrong backend family", func() error { return d.SetVIP(vipWeb6, VIPConfig{Mode: ModeDSR}, []Backend{v4}) }, "family"},
		{"duplicate backend", func() error { return d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR}, []Backend{v4, v4}) }, "appears twice"},
		{"duplicate backend add", func() error { return d.AddBackend(vipWeb4, v4) }, "already exists"},
		{"weight over the maximum", func() error {
			b := v4
			b.Weight = 70000
			return d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR}, []Backend{b})
		}, "weight 70000 is over the maximum 65535"},
		{"missing MAC in dsr", func() error {
			b := v4
			b.MAC = nil
			return d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR}, []Backend{b})
		}, "MAC"},
		{"ring size not prime", func() error { return d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR, RingSize: 1000}, backends4) }, "ring size 1000"},
		{"ring size too large", func() error { return d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR, RingSize: 131101}, backends4) }, "ring size 131101"},
		{"remove unknown vip", func() error { return d.RemoveVIP(VIP{Addr: addr("203.0.113.61"), Port: 1, Proto: TCP}) }, "no such vip"},
		{"remove unknown backend", func() error { return d.RemoveBackend(vipWeb4, addr("198.18.0.99")) }, "no such backend"},
		{"too many backends", func() error {
			_, maxBackends := d.Capacity()
			many := make([]Backend, maxBackends+1)
			for i := range many {
				a := netip.AddrFrom4([4]byte{198, 18, byte(i >> 16 & 1), 0}).As4()
				a[2], a[3] = byte(i>>8), byte(i)
				many[i] = Backend{Addr: netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), a[2], a[3]}), MAC: v4.MAC, Weight: 1}
			}
			return d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR}, many)
		}, "too many backends"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.do()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
			if got := d.VIPs(); !reflect.DeepEqual(got, state) {
				t.Fatalf("state changed after a refused change:\ngot  %+v\nwant %+v", got, state)
			}
			if got := sendTo(t, d, probe); got != wantBackend {
				t.Fatalf("probe went to %s after a refused change, want %s", got, wantBackend)
			}
		})
	}
}

// TestTooManyVIPs fills the VIP maps to their capacity (shrunk: each ring
// swap waits for an RCU grace period, about 8 ms here) and checks that the
// next VIP is refused by name while the full datapath still forwards.
func TestTooManyVIPs(t *testing.T) {
	require.BPF(t)
	const limit = 300
	d, err := Load(Options{ConntrackEntries: 1024, MaxVIPs: limit})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i := range limit {
		vip := VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 250)}), Port: uint16(1000 + i/250), Proto: UDP}
		if err := d.AddVIP(vip, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4[:1]); err != nil {
			t.Fatalf("vip %d (%s): %v", i, vip, err)
		}
	}
	extra := VIP{Addr: addr("203.0.113.251"), Port: 1, Proto: UDP}
	err = d.AddVIP(extra, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4[:1])
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("too many vips (the maximum is %d)", limit)) {
		t.Fatalf("vip %d: err = %v, want 'too many vips'", limit+1, err)
	}
	if got := sendTo(t, d, pkt(client4, "203.0.113.7", UDP, 9, 1000)); got != backends4[0].Addr {
		t.Fatalf("packet went to %s, want %s", got, backends4[0].Addr)
	}
}

// TestNewFlowGuard sets a per-CPU limit of new connection entries: over it,
// new flows are still forwarded by the ring but make no entry (ct_guard),
// and established flows keep theirs.
func TestNewFlowGuard(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)
	established := flowsByBackend(t, d, vipWeb4, client4, 10)
	if err := d.SetNewFlowLimit(5); err != nil {
		t.Fatal(err)
	}
	before, _ := d.Counters()
	// Pin the thread's CPU is not needed: the window is per CPU, and 20
	// new flows exceed a limit of 5 on whichever CPUs they run.
	for i := range 20 {
		p := pkt(client4, vipWeb4.Addr.String(), TCP, uint16(40000+i), 80)
		p.SYN = true
		want := expectBackend(t, backends4, 0, p.Src, p.Dst, p.Sport, 80, TCP, false).Addr
		if got := sendTo(t, d, p); got != want {
			t.Fatalf("SYN :%d went to %s, want the ring's %s", 40000+i, got, want)
		}
	}
	after, _ := d.Counters()
	delta := statsDelta(before, after)
	if delta[StatCtGuard] < 10 || delta[StatCtGuard]+delta[StatCtSYN] != 20 {
		t.Fatalf("counters moved %s: want at least 10 ct_guard of 20 new flows (limit 5 per CPU)", formatStats(delta))
	}
	for b, ports := range established {
		for _, sport := range ports {
			if got := sendTo(t, d, pkt(client4, vipWeb4.Addr.String(), TCP, sport, 80)); got != b {
				t.Fatalf("established flow :%d moved to %s under the guard", sport, got)
			}
		}
	}
	if err := d.SetNewFlowLimit(0); err != nil {
		t.Fatal(err)
	}
	before, _ = d.Counters()
	p := pkt(client4, vipWeb4.Addr.String(), TCP, 41000, 80)
	p.SYN = true
	sendTo(t, d, p)
	after, _ = d.Counters()
	if statsDelta(before, after)[StatCtGuard] != 0 {
		t.Fatal("ct_guard moved with the limit off")
	}
}

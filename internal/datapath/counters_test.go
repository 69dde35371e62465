package datapath

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// countersByLookup reads the counters the way Counters did before batch
// lookups: one lookup per VIP and per backend, with the lock held. It is
// the reference the batch read must match.
func countersByLookup(d *Datapath) (Counters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := Counters{VIPs: make(map[VIP]Counter), Backends: make(map[VIP]map[netip.Addr]Counter)}
	var stats []balancerStatTable
	if err := d.objs.Stats.Lookup(uint32(0), &stats); err != nil {
		return c, err
	}
	for _, cpu := range stats {
		for i, v := range cpu.Count {
			c.Stats[i] += v
		}
	}
	sum := func(m *ebpf.Map, index uint32) (Counter, error) {
		var perCPU []balancerCounter
		if err := m.Lookup(index, &perCPU); err != nil {
			return Counter{}, err
		}
		var c Counter
		for _, v := range perCPU {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		return c, nil
	}
	for vip, e := range d.vips {
		total, err := sum(d.objs.VipStats, uint32(e.index))
		if err != nil {
			return c, fmt.Errorf("vip %s: %w", vip, err)
		}
		c.VIPs[vip] = total
		bs := make(map[netip.Addr]Counter, len(e.backends))
		for addr, b := range e.backends {
			if bs[addr], err = sum(d.objs.BackendStats, b.id); err != nil {
				return c, fmt.Errorf("backend %s of vip %s: %w", addr, vip, err)
			}
		}
		c.Backends[vip] = bs
	}
	return c, nil
}

// manyVIPs returns n UDP VIPs without conntrack, one port each on one
// IPv4 and one IPv6 address (every fourth is IPv6), each with m backends of
// its family and weights 1 to 3.
func manyVIPs(n, m int) []VIPChange {
	out := make([]VIPChange, n)
	for i := range out {
		v4 := i%4 != 3
		vip := VIP{Addr: addr("203.0.113.1"), Port: uint16(1000 + i), Proto: UDP}
		if !v4 {
			vip.Addr = addr("2001:db8:ffff::1")
		}
		bs := make([]Backend, m)
		for j := range bs {
			h := j + 1
			a := netip.AddrFrom4([4]byte{198, 18, byte(h >> 8), byte(h)})
			if !v4 {
				a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 2, 14: byte(h >> 8), 15: byte(h)})
			}
			bs[j] = Backend{Addr: a, MAC: net.HardwareAddr{2, 0, 0, 0, byte(h >> 8), byte(h)}, Weight: uint32(1 + j%3)}
		}
		out[i] = VIPChange{VIP: vip, Config: VIPConfig{Mode: ModeDSR, NoConntrack: true, RingSize: smallRing}, Backends: bs}
	}
	return out
}

func setVIPs(tb testing.TB, d *Datapath, changes []VIPChange) {
	tb.Helper()
	for i, err := range d.SetVIPs(changes) {
		if err != nil {
			tb.Fatalf("SetVIPs: change %d (%s): %v", i, changes[i].VIP, err)
		}
	}
}

// sent is one frame of test traffic and where it must be counted.
type sent struct {
	frame   []byte
	vip     VIP
	backend Backend
}

// runOnCPU runs frames through the balancer on a thread pinned to cpu, so
// that they are counted in that CPU's slot of the per-CPU counters. Each
// must come out as XDP_TX to its backend's MAC.
func runOnCPU(prog *ebpf.Program, cpu int, frames []sent) error {
	return onCPU(cpu, func() error {
		for _, s := range frames {
			opts := ebpf.RunOptions{Data: bytes.Clone(s.frame), DataOut: make([]byte, len(s.frame)+512)}
			verdict, err := prog.Run(&opts)
			if err != nil {
				return fmt.Errorf("BPF_PROG_RUN: %w", err)
			}
			if verdict != xdpTX || !bytes.Equal(opts.DataOut[0:6], s.backend.MAC) {
				return fmt.Errorf("%s: verdict %s to MAC %x, want XDP_TX to %s (%s)", s.vip, verdictNames[verdict], opts.DataOut[0:6], s.backend.MAC, s.backend.Addr)
			}
		}
		return nil
	})
}

// TestCountersBatch drives known traffic through N VIPs × M backends, on
// every CPU, with holes in the VIP indexes and backend ids and more backend
// ids than one batch lookup reads, and checks that Counters reports exactly
// that traffic, and the same as one lookup per key.
func TestCountersBatch(t *testing.T) {
	d := newTestDatapath(t)
	const n, m = 420, 10 // 4200 backend ids: two batches
	all := manyVIPs(n+20, m)
	setVIPs(t, d, all[:n])
	// Holes: every seventh VIP goes (its index and ids are freed), every
	// fifth loses its first backend; then 20 more VIPs take new indexes.
	live := make(map[VIP]VIPChange)
	var shrink []VIPChange
	for i, c := range all[:n] {
		switch {
		case i%7 == 0:
			if err := d.RemoveVIP(c.VIP); err != nil {
				t.Fatal(err)
			}
			continue
		case i%5 == 0:
			c.Backends = c.Backends[1:]
			shrink = append(shrink, c)
		}
		live[c.VIP] = c
	}
	setVIPs(t, d, shrink)
	setVIPs(t, d, all[n:])
	for _, c := range all[n:] {
		live[c.VIP] = c
	}

	// Traffic: 0 to 3 frames a VIP, from different source ports (so to
	// different backends), spread over the CPUs.
	cpus := min(runtime.NumCPU(), 2)
	want := Counters{VIPs: make(map[VIP]Counter), Backends: make(map[VIP]map[netip.Addr]Counter)}
	perCPU := make([][]sent, cpus)
	frames := 0
	for i, c := range all {
		c, ok := live[c.VIP]
		if !ok {
			continue
		}
		bs := make(map[netip.Addr]Counter)
		for _, b := range c.Backends {
			bs[b.Addr] = Counter{}
		}
		want.Backends[c.VIP] = bs
		want.VIPs[c.VIP] = Counter{}
		client := client4
		if c.VIP.Addr.Is6() {
			client = client6
		}
		for k := range i % 4 {
			p := pkt(client, c.VIP.Addr.String(), UDP, uint16(20000+k), c.VIP.Port)
			frame := p.Build()
			be := expectBackend(t, c.Backends, smallRing, p.Src, p.Dst, p.Sport, p.Dport, UDP, false)
			perCPU[frames%cpus] = append(perCPU[frames%cpus], sent{frame, c.VIP, be})
			frames++
			add := Counter{Packets: 1, Bytes: uint64(len(frame))}
			want.VIPs[c.VIP] = Counter{Packets: want.VIPs[c.VIP].Packets + add.Packets, Bytes: want.VIPs[c.VIP].Bytes + add.Bytes}
			bs[be.Addr] = Counter{Packets: bs[be.Addr].Packets + add.Packets, Bytes: bs[be.Addr].Bytes + add.Bytes}
		}
	}
	for cpu, frames := range perCPU {
		if err := runOnCPU(d.Program(), cpu, frames); err != nil {
			t.Fatalf("cpu %d: %v", cpu, err)
		}
	}

	got, err := d.Counters()
	if err != nil {
		t.Fatalf("Counters: %v", err)
	}
	ref, err := countersByLookup(d)
	if err != nil {
		t.Fatalf("countersByLookup: %v", err)
	}
	if len(got.Backends) != len(live) {
		t.Errorf("backend counters of %d VIPs, want %d", len(got.Backends), len(live))
	}
	if got.Stat(StatTxDSR) != uint64(frames) {
		t.Errorf("tx_dsr = %d, want %d (frames sent)", got.Stat(StatTxDSR), frames)
	}
	if got.Stats != ref.Stats {
		t.Errorf("stats = %s, by lookup %s", formatStats(statsDelta(Counters{}, got)), formatStats(statsDelta(Counters{}, ref)))
	}
	for name, w := range map[string]Counters{"the traffic sent": want, "one lookup per key": ref} {
		if !maps.Equal(got.VIPs, w.VIPs) {
			for vip, c := range w.VIPs {
				if got.VIPs[vip] != c {
					t.Errorf("vip %s: got %+v, want %+v (%s)", vip, got.VIPs[vip], c, name)
				}
			}
			t.Errorf("vip counters of %d VIPs differ from %s (%d VIPs)", len(got.VIPs), name, len(w.VIPs))
		}
		for vip, bs := range w.Backends {
			if !maps.Equal(got.Backends[vip], bs) {
				t.Errorf("vip %s: backend counters %v, want %v (%s)", vip, got.Backends[vip], bs, name)
			}
		}
	}

	// The per-CPU sums were exercised: some counter has counts on every
	// CPU the traffic ran on.
	spread := 0
	for _, c := range live {
		var vals []balancerCounter
		if err := d.objs.VipStats.Lookup(uint32(d.vips[c.VIP].index), &vals); err != nil {
			t.Fatal(err)
		}
		on := 0
		for _, v := range vals {
			if v.Packets > 0 {
				on++
			}
		}
		spread = max(spread, on)
	}
	if spread != cpus {
		t.Errorf("the busiest VIP counted on %d CPUs, want %d: the traffic did not spread", spread, cpus)
	}
}

// TestCountersOwnerChangesDuringRead replaces the only VIP while Counters
// reads without the lock, so that the new VIP reuses the old one's index
// and backend ids (counters zeroed, then one new frame): the read must
// report the new VIP's counts under the new VIP, never under the old. A
// change that keeps every index and id (a weight) must not cost a read
// again.
func TestCountersOwnerChangesDuringRead(t *testing.T) {
	require.BPF(t)
	// One VIP index and three backend ids: a replacement must reuse them.
	d, err := Load(Options{ConntrackEntries: 8192, MaxVIPs: 1, MaxBackends: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cfg := VIPConfig{Mode: ModeDSR, NoConntrack: true, RingSize: smallRing}
	oldVIP := VIP{Addr: addr("203.0.113.10"), Port: 53, Proto: UDP}
	newVIP := VIP{Addr: addr("203.0.113.11"), Port: 53, Proto: UDP}
	if err := d.AddVIP(oldVIP, cfg, backends4); err != nil {
		t.Fatal(err)
	}
	// cur is the VIP, with its backends now and what each counted.
	cur, curBackends := oldVIP, slices.Clone(backends4)
	counted := map[netip.Addr]Counter{}
	for _, b := range backends4 {
		counted[b.Addr] = Counter{}
	}
	send := func(t *testing.T, n int) {
		for range n {
			p := pkt(client4, cur.Addr.String(), UDP, 7000, 53)
			be := expectBackend(t, curBackends, smallRing, p.Src, p.Dst, 7000, 53, UDP, false).Addr
			if got := sendTo(t, d, p); got != be {
				t.Fatalf("%s: frame went to %s, want %s", cur, got, be)
			}
			counted[be] = Counter{Packets: counted[be].Packets + 1, Bytes: counted[be].Bytes + uint64(len(p.Build()))}
		}
	}
	send(t, 4)
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if before.VIPs[oldVIP].Packets != 4 {
		t.Fatalf("before: %s counted %+v, want 4 packets", oldVIP, before.VIPs[oldVIP])
	}
	// replace swaps the VIP for the other one; the index and ids of the
	// one removed are the only free ones, so the other takes them.
	replace := func(t *testing.T) {
		next := newVIP
		if cur == newVIP {
			next = oldVIP
		}
		if err := d.RemoveVIP(cur); err != nil {
			t.Error(err)
		}
		if err := d.AddVIP(next, cfg, backends4); err != nil {
			t.Error(err)
		}
		cur, curBackends = next, slices.Clone(backends4)
		clear(counted)
		for _, b := range backends4 {
			counted[b.Addr] = Counter{}
		}
		send(t, 1)
	}
	// swapBackend replaces the VIP's first backend with another address,
	// which takes the freed id (the only free one): the VIP stays, one
	// backend id changes owner.
	swapBackend := func(t *testing.T) {
		old := curBackends[0]
		nb := Backend{Addr: addr("198.18.0.99"), MAC: mustMAC("02:00:00:00:0b:99"), Weight: old.Weight}
		if err := d.RemoveBackend(cur, old.Addr); err != nil {
			t.Error(err)
		}
		if err := d.AddBackend(cur, nb); err != nil {
			t.Error(err)
		}
		curBackends[0] = nb
		delete(counted, old.Addr)
		counted[nb.Addr] = Counter{}
		send(t, 1)
	}
	// reweigh changes the VIP but none of its index and ids.
	reweigh := func(t *testing.T) {
		curBackends[1].Weight++
		if err := d.SetWeight(cur, curBackends[1].Addr, curBackends[1].Weight); err != nil {
			t.Error(err)
		}
	}

	// remove removes the VIP: nothing is left to count.
	remove := func(t *testing.T) {
		if err := d.RemoveVIP(cur); err != nil {
			t.Error(err)
		}
		cur = VIP{}
		clear(counted)
	}

	for _, tc := range []struct {
		name    string
		change  func(*testing.T)
		changes int // how many reads see a change
		hooks   int // how many unlocked reads start
	}{
		{"a change that keeps the owners: no read again", reweigh, 1, 1},
		{"a backend replaced: read again", swapBackend, 1, 2},
		{"one change: read again", replace, 1, 2},
		{"a change every read: read under the lock", replace, unlockedCounterReads, unlockedCounterReads},
		{"the VIP removed: read again", remove, 1, 2}, // last: no VIP is left
	} {
		t.Run(tc.name, func(t *testing.T) {
			hooks := 0
			countersReadHook = func() {
				hooks++
				if hooks <= tc.changes {
					tc.change(t)
				}
			}
			defer func() { countersReadHook = nil }()
			c, err := d.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if hooks != tc.hooks {
				t.Errorf("%d unlocked reads, want %d", hooks, tc.hooks)
			}
			if cur == (VIP{}) {
				if len(c.VIPs) != 0 || len(c.Backends) != 0 {
					t.Errorf("counters %v and %v of a removed VIP", c.VIPs, c.Backends)
				}
				return
			}
			var total Counter
			for _, b := range counted {
				total.Packets += b.Packets
				total.Bytes += b.Bytes
			}
			if total.Packets == 0 {
				t.Fatal("no traffic counted: the test checks nothing")
			}
			if len(c.VIPs) != 1 || c.VIPs[cur].Packets < total.Packets {
				t.Errorf("vip counters %v, want only %s, at least %+v", c.VIPs, cur, total)
			}
			if len(c.Backends) != 1 || !maps.Equal(c.Backends[cur], counted) {
				t.Errorf("backend counters %v, want only %s's: %v", c.Backends, cur, counted)
			}
		})
	}
}

// BenchmarkCounters reads the counters of 1000 VIPs × 10 and × 100
// backends with batch lookups (Counters) and, for comparison, with one
// lookup per key (how Counters read them before, with the lock held
// throughout); both are checked to agree first. batch-locked and
// batch-locked-changed time the part of Counters that holds the datapath's
// lock.
func BenchmarkCounters(b *testing.B) {
	for _, m := range []int{10, 100} {
		b.Run(fmt.Sprintf("1000x%d", m), func(b *testing.B) { benchmarkCounters(b, 1000, m) })
	}
}

func benchmarkCounters(b *testing.B, n, m int) {
	d := newTestDatapath(b)
	setVIPs(b, d, manyVIPs(n, m))
	got, err := d.Counters()
	if err != nil {
		b.Fatal(err)
	}
	ref, err := countersByLookup(d)
	if err != nil {
		b.Fatal(err)
	}
	if len(got.VIPs) != n || !maps.Equal(got.VIPs, ref.VIPs) || !maps.EqualFunc(got.Backends, ref.Backends, maps.Equal) {
		b.Fatalf("batch and per-key reads differ: %d and %d VIPs", len(got.VIPs), len(ref.VIPs))
	}
	for _, r := range []struct {
		name string
		read func(*Datapath) (Counters, error)
	}{
		{"batch", (*Datapath).Counters},
		{"per-key", countersByLookup}, // holds the lock throughout
		// What of "batch" holds the lock: the owners and their check after
		// the read, with the VIPs unchanged (the copy of the last call and
		// one comparison) ...
		{"batch-locked", func(d *Datapath) (Counters, error) { return Counters{}, lockedPart(d, false) }},
		// ... and after a change that moved no owner (a weight, say) before
		// and during the read: a new copy and the comparison of each owner.
		{"batch-locked-changed", func(d *Datapath) (Counters, error) { return Counters{}, lockedPart(d, true) }},
	} {
		b.Run(r.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := r.read(d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// lockedPart does what Counters does under the lock, without the read;
// changed makes it look as if the VIPs changed before and during the read.
func lockedPart(d *Datapath, changed bool) error {
	d.mu.Lock()
	if changed {
		d.ownerChanges++
	}
	o := d.counterOwners()
	d.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if changed {
		d.ownerChanges++
	}
	if !d.ownersUnchanged(o) {
		return fmt.Errorf("owners changed with nothing changing them")
	}
	return nil
}

package datapath

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// poolCase is one family the pool tests run for: a VIP of three backends,
// pool a (clients in aNet, backends 0 and 1), pool b (clients in bNet,
// backend 2), and clients in no pool (noNet).
type poolCase struct {
	name             string
	vip              VIP
	backends         []Backend
	aNet, bNet, none string // client prefixes; none holds no pool's client
}

func poolCases() []poolCase {
	return []poolCase{
		{"v4", vipWeb4, backends4, "198.19.1.0/24", "198.19.7.0/24", "198.19.9.0/24"},
		{"v6", vipWeb6, backends6, "2001:db8:1::/48", "2001:db8:7::/48", "2001:db8:9::/48"},
	}
}

// client returns the n-th address of prefix p (n > 0).
func client(p string, n int) netip.Addr {
	a := netip.MustParsePrefix(p).Addr()
	b := a.AsSlice()
	b[len(b)-1] += byte(n)
	b[len(b)-2] += byte(n >> 8)
	out, _ := netip.AddrFromSlice(b)
	return out
}

func (c poolCase) pools(t testing.TB, aBackends []int, aFallback PoolFallback) Pools {
	t.Helper()
	var addrs []netip.Addr
	for _, i := range aBackends {
		addrs = append(addrs, c.backends[i].Addr)
	}
	p, err := NewPools([]Pool{
		{Name: "a", Prefixes: []netip.Prefix{netip.MustParsePrefix(c.aNet)}, Backends: addrs, Fallback: aFallback},
		{Name: "b", Prefixes: []netip.Prefix{netip.MustParsePrefix(c.bNet)}, Backends: []netip.Addr{c.backends[2].Addr}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pick(bs []Backend, idx ...int) []Backend {
	var out []Backend
	for _, i := range idx {
		out = append(out, bs[i])
	}
	return out
}

// synFrom sends a SYN from src to the case's VIP and returns where it went
// and the events it moved.
func synFrom(t *testing.T, d *Datapath, c poolCase, src netip.Addr, sport uint16, syn bool) (netip.Addr, map[Stat]uint64) {
	t.Helper()
	p := pkt(src.String(), c.vip.Addr.String(), TCP, sport, c.vip.Port)
	p.SYN = syn
	var to netip.Addr
	moved := counted(t, d, func() { to = sendTo(t, d, p) })
	return to, moved
}

// TestPoolsFastPath: clients of pool a reach only a's backends, those of b
// only b's, others the VIP's ring, each flow the backend the Go Maglev over
// that ring predicts, for SYNs and for table misses mid-flow alike.
func TestPoolsFastPath(t *testing.T) {
	d := newCTDatapath(t)
	for _, c := range poolCases() {
		t.Run(c.name, func(t *testing.T) {
			if err := d.SetVIP(c.vip, VIPConfig{Mode: ModeDSR, Pools: c.pools(t, []int{0, 1}, FallbackVIP)}, c.backends); err != nil {
				t.Fatal(err)
			}
			groups := []struct {
				net, pool string
				ring      []Backend
			}{
				{c.aNet, "a", pick(c.backends, 0, 1)},
				{c.bNet, "b", pick(c.backends, 2)},
				{c.none, "", c.backends},
			}
			for _, g := range groups {
				seen := map[netip.Addr]int{}
				for i := range 120 {
					src := client(g.net, 1+i%50)
					sport := uint16(20000 + i)
					syn := i%2 == 0 // odd flows start with an ACK: a table miss
					want := expectBackend(t, g.ring, 0, src, c.vip.Addr, sport, c.vip.Port, TCP, false).Addr
					to, moved := synFrom(t, d, c, src, sport, syn)
					if to != want {
						t.Fatalf("client %s:%d (pool %q, syn %v) reached %s, want %s", src, sport, g.pool, syn, to, want)
					}
					if moved[StatPoolFallback] != 0 {
						t.Fatalf("client %s counted a pool fallback with its pool up", src)
					}
					seen[to]++
					pr, err := d.Predict(Flow{Src: src, Dst: c.vip.Addr, Sport: sport, Dport: c.vip.Port, Proto: TCP}, true)
					if err != nil || pr.Backend != want || pr.Pool != g.pool || pr.PoolDown {
						t.Fatalf("Predict(%s) = %+v, %v; want %s by pool %q", src, pr, err, want, g.pool)
					}
				}
				if len(seen) != len(g.ring) {
					t.Errorf("pool %q: 120 flows reached %v, want each of its %d backends", g.pool, seen, len(g.ring))
				}
			}
			states := d.VIPs()
			i := slices.IndexFunc(states, func(s VIPState) bool { return s.VIP == c.vip })
			if got := fmt.Sprint(states[i].Pools); !strings.Contains(got, "{a 1 ") || !strings.Contains(got, "{b 1 ") {
				t.Errorf("VIPs() pools = %s, want a and b with one prefix each", got)
			}
		})
	}
}

// TestPoolsFallback: a pool whose backends are all down (out of the VIP's
// list, as health takes them, or drained) sends its clients to the VIP's
// ring with fallback vip, and drops their new flows with fallback drop;
// an established flow's entry keeps it where it was; when a backend
// comes back, the pool's ring decides again.
func TestPoolsFallback(t *testing.T) {
	d := newCTDatapath(t)
	for _, c := range poolCases() {
		t.Run(c.name, func(t *testing.T) {
			set := func(fb PoolFallback, backends []Backend) {
				t.Helper()
				if err := d.SetVIP(c.vip, VIPConfig{Mode: ModeDSR, Pools: c.pools(t, []int{0}, fb)}, backends); err != nil {
					t.Fatal(err)
				}
			}
			set(FallbackVIP, c.backends)
			src := client(c.aNet, 3)
			// An established flow of pool a, on backend 0.
			if to, _ := synFrom(t, d, c, src, 30000, true); to != c.backends[0].Addr {
				t.Fatalf("pool a's flow reached %s, want its one backend %s", to, c.backends[0].Addr)
			}
			drained := slices.Clone(c.backends)
			drained[0].Weight = 0
			for n, step := range []struct {
				what     string
				fallback PoolFallback
				backends []Backend
			}{
				{"a's backend drained, fallback vip", FallbackVIP, drained},
				{"a's backend drained, fallback drop", FallbackDrop, drained},
				{"health took a's backend out, fallback vip", FallbackVIP, pick(c.backends, 1, 2)},
				{"health took a's backend out, fallback drop", FallbackDrop, pick(c.backends, 1, 2)},
			} {
				set(step.fallback, step.backends)
				// The established flow keeps its entry while its
				// backend exists (drained); with it gone, it
				// re-hashes like a new one.
				for i := range 40 {
					sport := uint16(30100 + 100*n + i)
					p := pkt(src.String(), c.vip.Addr.String(), TCP, sport, c.vip.Port)
					p.SYN = true
					f := Flow{Src: src, Dst: c.vip.Addr, Sport: sport, Dport: c.vip.Port, Proto: TCP}
					pr, err := d.Predict(f, true)
					if err != nil || pr.Pool != "a" || !pr.PoolDown || pr.PoolDrop != (step.fallback == FallbackDrop) {
						t.Fatalf("%s: Predict = %+v, %v", step.what, pr, err)
					}
					if step.fallback == FallbackDrop {
						verdict, moved := runVerdict(t, d, p)
						if verdict != xdpDrop || moved[StatDropPoolDown] != 1 {
							t.Fatalf("%s: verdict %s, counters %s; want a drop_pool_down drop", step.what, verdictNames[verdict], formatStats(moved))
						}
						if _, ok := entry(t, d, f); ok {
							t.Fatalf("%s: the dropped flow got a connection entry", step.what)
						}
						continue
					}
					want := expectBackend(t, step.backends, 0, src, c.vip.Addr, sport, c.vip.Port, TCP, false).Addr
					to, moved := synFrom(t, d, c, src, sport, true)
					if to != want || moved[StatPoolFallback] != 1 || pr.Backend != want {
						t.Fatalf("%s: reached %s (counters %s, predicted %s), want %s by the vip's ring, one pool_fallback", step.what, to, formatStats(moved), pr.Backend, want)
					}
				}
				if step.backends[0].Addr == c.backends[0].Addr { // drained: the entry holds
					if to, moved := synFrom(t, d, c, src, 30000, false); to != c.backends[0].Addr || moved[StatCtHit] != 1 {
						t.Errorf("%s: the established flow reached %s (%s), want %s by its entry", step.what, to, formatStats(moved), c.backends[0].Addr)
					}
				}
			}
			set(FallbackDrop, c.backends)
			if to, _ := synFrom(t, d, c, src, 30900, true); to != c.backends[0].Addr {
				t.Errorf("pool a back up: reached %s, want %s", to, c.backends[0].Addr)
			}
		})
	}
}

// TestPoolsChange moves prefixes between pools, renames and removes pools
// and the VIP: the trie and pool_rings hold exactly the current pools'
// entries after each change, and a flow's entry keeps its backend.
func TestPoolsChange(t *testing.T) {
	d := newCTDatapath(t)
	c := poolCases()[0]
	set := func(ps []Pool) {
		t.Helper()
		pools, err := NewPools(ps)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.SetVIP(c.vip, VIPConfig{Mode: ModeDSR, Pools: pools}, c.backends); err != nil {
			t.Fatal(err)
		}
	}
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	b := func(i ...int) []netip.Addr {
		var out []netip.Addr
		for _, j := range i {
			out = append(out, c.backends[j].Addr)
		}
		return out
	}
	src := client(c.aNet, 9)
	set([]Pool{{Name: "a", Prefixes: pfx(c.aNet), Backends: b(0)}})
	established, _ := synFrom(t, d, c, src, 31000, true)
	idx := d.vips[c.vip].index
	for _, step := range []struct {
		pools []Pool
		want  int // backend index a new flow of src reaches
	}{
		{[]Pool{{Name: "a", Prefixes: pfx(c.aNet), Backends: b(1)}}, 1},
		{[]Pool{{Name: "a", Prefixes: pfx("198.19.0.0/16"), Backends: b(1)}, {Name: "b", Prefixes: pfx(c.aNet), Backends: b(2)}}, 2},
		{[]Pool{{Name: "c", Prefixes: pfx(c.aNet, "10.0.0.0/8"), Backends: b(0)}}, 0},
	} {
		set(step.pools)
		prefixes := 0
		for _, p := range step.pools {
			prefixes += len(p.Prefixes)
		}
		if got := trieEntries(t, d, idx); got != prefixes {
			t.Errorf("pools %v: %d trie entries, want %d", step.pools, got, prefixes)
		}
		if got := int(poolRingCount(t, d)); got != len(step.pools) {
			t.Errorf("pools %v: %d pool_rings entries, want %d", step.pools, got, len(step.pools))
		}
		if to, _ := synFrom(t, d, c, src, 31001, true); to != c.backends[step.want].Addr {
			t.Errorf("pools %v: a new flow reached %s, want %s", step.pools, to, c.backends[step.want].Addr)
		}
		if to, _ := synFrom(t, d, c, src, 31000, false); to != established {
			t.Errorf("pools %v: the established flow moved to %s from %s", step.pools, to, established)
		}
	}
	set(nil)
	if n, r := trieEntries(t, d, idx), poolRingCount(t, d); n != 0 || r != 0 {
		t.Errorf("pools gone: %d trie entries, %d pool rings left", n, r)
	}
	set([]Pool{{Name: "a", Prefixes: pfx(c.aNet), Backends: b(0)}})
	if err := d.RemoveVIP(c.vip); err != nil {
		t.Fatal(err)
	}
	if n, r := trieEntries(t, d, idx), poolRingCount(t, d); n != 0 || r != 0 {
		t.Errorf("vip removed: %d trie entries, %d pool rings left", n, r)
	}
}

// poolRingCount counts the pools in pool_rings (words with
// POOL_F_PRESENT), read through a mapping of its own.
func poolRingCount(t *testing.T, d *Datapath) int {
	t.Helper()
	mem, words, err := mapArray[uint64](d.objs.PoolRings, false)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	n := 0
	for _, w := range words {
		if _, _, present := unpackPool(w); present {
			n++
		} else if w != 0 {
			t.Errorf("pool_rings word %#x has no POOL_F_PRESENT but is not 0", w)
		}
	}
	return n
}

func TestPoolsRefused(t *testing.T) {
	p4 := netip.MustParsePrefix("198.19.0.0/16")
	for _, c := range []struct {
		pools []Pool
		want  string
	}{
		{[]Pool{{Name: "a", Prefixes: []netip.Prefix{p4}}, {Name: "a"}}, "pool a appears twice"},
		{[]Pool{{Name: "a b"}}, `pool name "a b" has ' '`},
		{[]Pool{{Name: "a", Prefixes: []netip.Prefix{p4}}, {Name: "b", Prefixes: []netip.Prefix{p4}}}, "prefix 198.19.0.0/16 is already pool a's"},
		{[]Pool{{Name: "a", Prefixes: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}}}, "not a plain"},
	} {
		if _, err := NewPools(c.pools); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewPools(%v): err = %v, want %q", c.pools, err, c.want)
		}
	}
	d := newTestDatapath(t)
	v6, err := NewPools([]Pool{{Name: "a", Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}}})
	if err != nil {
		t.Fatal(err)
	}
	err = d.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR, Pools: v6}, backends4)
	if err == nil || !strings.Contains(err.Error(), "pool a: prefix 2001:db8::/32 is IPv6 but the vip is IPv4") {
		t.Fatalf("v6 pool on a v4 vip: err = %v", err)
	}
	if len(d.VIPs()) != 0 || poolRingCount(t, d) != 0 {
		t.Error("the refused vip was written")
	}
}

// TestPoolsAdopted: a restarted daemon keeps a VIP's pools as the maps hold
// them (by id) and serves them; the first change with names rewrites them
// in place.
func TestPoolsAdopted(t *testing.T) {
	c := poolCases()[0]
	dir := PinDir(newPinRoot(t), "test")
	d1 := loadAt(t, dir)
	pools := c.pools(t, []int{0, 1}, FallbackDrop)
	if err := d1.AddVIP(c.vip, VIPConfig{Mode: ModeDSR, Pools: pools}, pick(c.backends, 0, 2)); err != nil {
		t.Fatal(err)
	}
	d1.Close()
	d2 := loadAt(t, dir)
	defer RemovePins(dir)
	defer d2.Close()
	states := d2.VIPs()
	if len(states) != 1 || len(states[0].Pools) != 2 {
		t.Fatalf("adopted %+v, want one vip with two pools", states)
	}
	for i := range 20 {
		src := client(c.aNet, 1+i)
		want := expectBackend(t, pick(c.backends, 0), 0, src, c.vip.Addr, uint16(32000+i), c.vip.Port, TCP, false).Addr
		if to, _ := synFrom(t, d2, c, src, uint16(32000+i), true); to != want {
			t.Fatalf("after adoption: pool a's client reached %s, want %s", to, want)
		}
		pr, err := d2.Predict(Flow{Src: src, Dst: c.vip.Addr, Sport: uint16(32000 + i), Dport: c.vip.Port, Proto: TCP}, true)
		if err != nil || pr.Backend != want || pr.Pool == "" {
			t.Fatalf("after adoption: Predict = %+v, %v; want %s by a pool", pr, err, want)
		}
	}
	if err := d2.SetVIP(c.vip, VIPConfig{Mode: ModeDSR, Pools: pools}, c.backends); err != nil {
		t.Fatal(err)
	}
	if got := d2.VIPs()[0].Pools; len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Errorf("after the change: pools %+v, want a and b", got)
	}
	if n, r := trieEntries(t, d2, d2.vips[c.vip].index), poolRingCount(t, d2); n != 2 || r != 2 {
		t.Errorf("after the change: %d trie entries, %d pool rings; want 2 and 2", n, r)
	}
}

// BenchmarkPoolsWrite sets a VIP with two pools of 100 000 prefixes in all
// (their rings and trie entries), then removes it.
func BenchmarkPoolsWrite(b *testing.B) {
	d := newTestDatapath(b)
	var eu, us []netip.Prefix
	for i := range 100000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(10 + i>>16), byte(i >> 8), byte(i), 0}), 24)
		if i%3 == 0 {
			us = append(us, p)
		} else {
			eu = append(eu, p)
		}
	}
	pools, err := NewPools([]Pool{
		{Name: "eu", Prefixes: eu, Backends: []netip.Addr{backends4[0].Addr, backends4[1].Addr}},
		{Name: "us", Prefixes: us, Backends: []netip.Addr{backends4[2].Addr}},
	})
	if err != nil {
		b.Fatal(err)
	}
	var set float64
	for b.Loop() {
		start := time.Now()
		if err := d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR, Pools: pools}, backends4); err != nil {
			b.Fatal(err)
		}
		set += float64(time.Since(start).Microseconds()) / 1000
		if n := trieEntries(b, d, d.vips[vipWeb4].index); n != 100000 {
			b.Fatalf("%d trie entries, want 100000", n)
		}
		if err := d.RemoveVIP(vipWeb4); err != nil {
			b.Fatal(err)
		}
	}
	fmt.Printf("control pools-100k-write ms=%.1f\n", set/float64(b.N))
}

// loadAt loads a datapath pinned in dir, as a daemon's start does.
func loadAt(t *testing.T, dir string) *Datapath {
	t.Helper()
	d, err := Load(Options{ConntrackEntries: 8192, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPoolsMigrated: a migration (here to another VIP capacity, which
// sizes pool_rings too) does not copy pool_rings: the new array starts
// without pools and the fill writes them from the configuration, after
// which pool a's clients reach its ring.
func TestPoolsMigrated(t *testing.T) {
	c := poolCases()[0]
	dir := PinDir(newPinRoot(t), "test")
	d1, err := Load(Options{ConntrackEntries: 8192, MaxVIPs: 64, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cfg := VIPConfig{Mode: ModeDSR, Pools: c.pools(t, []int{0, 1}, FallbackVIP)}
	if err := d1.AddVIP(c.vip, cfg, c.backends); err != nil {
		d1.Close()
		t.Fatal(err)
	}
	d1.Close()
	d2, err := Load(Options{ConntrackEntries: 8192, MaxVIPs: 128, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer RemovePins(dir)
	defer d2.Close()
	if _, _, reason, ok := d2.Migrating(); !ok || !strings.Contains(reason, "pool_rings") {
		t.Fatalf("Migrating() = %q, %v; want a migration naming pool_rings", reason, ok)
	}
	if got, want := d2.objs.PoolRings.MaxEntries(), uint32(128*PoolsPerVIP); got != want {
		t.Fatalf("pool_rings: %d elements, want %d (128 VIPs × %d)", got, want, PoolsPerVIP)
	}
	if r := poolRingCount(t, d2); r != 0 {
		t.Fatalf("before the fill: %d pools in the new pool_rings, want 0 (never copied)", r)
	}
	if err := d2.AddVIP(c.vip, cfg, c.backends); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.CompleteMigration(); err != nil {
		t.Fatal(err)
	}
	if r := poolRingCount(t, d2); r != 2 {
		t.Fatalf("after the migration: %d pools in pool_rings, want 2", r)
	}
	for i := range 20 {
		src := client(c.aNet, 1+i)
		want := expectBackend(t, pick(c.backends, 0, 1), 0, src, c.vip.Addr, uint16(33000+i), c.vip.Port, TCP, false).Addr
		if to, _ := synFrom(t, d2, c, src, uint16(33000+i), true); to != want {
			t.Fatalf("after the migration: pool a's client %s reached %s, want %s", src, to, want)
		}
	}
}

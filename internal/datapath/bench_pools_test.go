package datapath

import (
	"net/netip"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/datapath/testprogs"
)

// vipPoolsBench is the VIP of newflow-pools, whose pools hold every client.
var vipPoolsBench = VIP{Addr: addr("203.0.113.97"), Port: 80, Proto: TCP}

// benchPoolPrefixes are a pool's prefixes in the benchmark: half of the
// IPv4 space (bench_newflow's fresh sources run through every first
// octet, so between them the two halves hold every client) and 512 /16s
// inside it, so that the trie the lookup walks is a GeoIP file's size
// rather than two nodes. half is 0 or 1.
func benchPoolPrefixes(half int) []netip.Prefix {
	ps := []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(128 * half)}), 1)}
	for i := range 512 {
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(128*half + i%128), byte(i / 128)}), 16))
	}
	return ps
}

// poolPaths adds to the full datapath (newFullDatapath) the VIPs of the
// pools benchmark and returns their paths, each a SYN from a fresh source
// every repeat: newflow-pools, a client in a pool (pool a, backend 1, for
// the lower half of the addresses; pool b, backend 2, for the upper),
// Maglev on the pool's ring; and newflow-pools-fallback, a client in a
// pool that is down, which takes the VIP's ring (proof: pool_fallback).
// newflow-pools has no counter of its own: checkPoolPaths proves it took
// the pools' rings afterwards.
func poolPaths(b *testing.B, full *Datapath, tp *testprogs.TestprogsObjects) []benchPath {
	b.Helper()
	pools, err := NewPools([]Pool{
		{Name: "a", Prefixes: benchPoolPrefixes(0), Backends: []netip.Addr{backends4[0].Addr}},
		{Name: "b", Prefixes: benchPoolPrefixes(1), Backends: []netip.Addr{backends4[1].Addr}},
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := full.AddVIP(vipPoolsBench, VIPConfig{Mode: ModeDSR, Pools: pools}, backends4); err != nil {
		b.Fatal(err)
	}
	// newflow-pools-fallback's VIP: its one pool is down (its backend out
	// of the VIP's list), fallback vip.
	vipPoolsFallback := VIP{Addr: addr("203.0.113.98"), Port: 80, Proto: TCP}
	down, err := NewPools([]Pool{{Name: "a", Prefixes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")},
		Backends: []netip.Addr{backends4[0].Addr}, Fallback: FallbackVIP}})
	if err != nil {
		b.Fatal(err)
	}
	if err := full.AddVIP(vipPoolsFallback, VIPConfig{Mode: ModeDSR, Pools: down}, backends4[1:]); err != nil {
		b.Fatal(err)
	}
	syn := func(v VIP) []byte {
		p := pkt(client4, v.Addr.String(), TCP, 40001, v.Port)
		p.SYN = true
		return p.Build()
	}
	return []benchPath{
		{name: "newflow-pools", prog: tp.BenchNewflow, frame: syn(vipPoolsBench), proof: StatCtSYN, proven: true, d: full, target: full.Program()},
		{name: "newflow-pools-fallback", prog: tp.BenchNewflow, frame: syn(vipPoolsFallback), proof: StatPoolFallback, proven: true, d: full, target: full.Program()},
	}
}

// checkPoolPaths proves that newflow-pools took the pools' rings: its
// VIP's packets (every repeat of every round, at least want) reached
// backends 1 and 2 only, never backend 3, which the VIP's ring would give
// a third of them.
func checkPoolPaths(b *testing.B, full *Datapath, want uint64) {
	b.Helper()
	c, err := full.Counters()
	if err != nil {
		b.Fatal(err)
	}
	per := c.Backends[vipPoolsBench]
	in, out := per[backends4[0].Addr].Packets+per[backends4[1].Addr].Packets, per[backends4[2].Addr].Packets
	if in < want || out != 0 || per[backends4[0].Addr].Packets == 0 || per[backends4[1].Addr].Packets == 0 {
		b.Fatalf("newflow-pools: %d packets to the pools' backends (%d and %d), %d to backend3 in no pool; want at least %d, each pool's some, none to backend3",
			in, per[backends4[0].Addr].Packets, per[backends4[1].Addr].Packets, out, want)
	}
}

package datapath

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

// ranges returns the source ranges of the given prefixes, or fails.
func ranges(tb testing.TB, ps ...string) SourceRanges {
	tb.Helper()
	var in []netip.Prefix
	for _, p := range ps {
		in = append(in, netip.MustParsePrefix(p))
	}
	r, err := NewSourceRanges(in)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func TestSourceRangesCanonical(t *testing.T) {
	r := ranges(t, "2001:db8::1/32", "10.1.2.3/8", "10.0.0.0/8", "192.0.2.0/24")
	if got, want := r.String(), "10.0.0.0/8,192.0.2.0/24,2001:db8::/32"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if r != ranges(t, "192.0.2.0/24", "2001:db8::/32", "10.0.0.0/8") {
		t.Error("the same set in another order compares unequal")
	}
	for a, want := range map[string]bool{"10.9.9.9": true, "192.0.2.200": true, "192.0.3.1": false, "2001:db8:5::1": true, "2001:db9::1": false} {
		if got := r.Allows(addr(a)); got != want {
			t.Errorf("Allows(%s) = %v, want %v", a, got, want)
		}
	}
	if !(SourceRanges{}).Allows(addr("198.51.100.1")) || !(SourceRanges{}).IsZero() {
		t.Error("the zero ranges refuse a client")
	}
	if _, err := NewSourceRanges([]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}); err == nil || !strings.Contains(err.Error(), "v4-mapped") {
		t.Errorf("v4-mapped prefix: err = %v, want it refused as v4-mapped", err)
	}
	if _, err := NewSourceRanges([]netip.Prefix{{}}); err == nil {
		t.Error("an invalid prefix was taken")
	}
	// Every trie key reads back as its prefix.
	for _, p := range r.Prefixes() {
		if got, ok := prefixOf(srcPrefixKey(7, balancerFulcrumSrcKindSRC_KIND_ALLOW, p)); !ok || got != p {
			t.Errorf("prefixOf(key of %s) = %s, %v", p, got, ok)
		}
	}
}

// srcCase is one family the fast-path tests run for: a VIP given ranges
// that hold in but not out, and a VIP without ranges.
type srcCase struct {
	name     string
	vip      VIP
	backends []Backend
	ranges   SourceRanges
	in, out  string // clients
	open     VIP    // a VIP of the family without ranges
}

func srcCases(t *testing.T) []srcCase {
	return []srcCase{
		{"v4", vipWeb4, backends4, ranges(t, "198.19.1.0/24", "198.18.200.7/32"), client4, "198.19.2.2", vipAll4},
		{"v6", vipWeb6, backends6, ranges(t, "2001:db8:1::/48"), client6, "2001:db8:5::2", vipDNS6},
	}
}

// runVerdict runs one packet and returns its verdict and the counters it
// moved.
func runVerdict(t *testing.T, d *Datapath, p testpacket.Packet) (uint32, map[Stat]uint64) {
	t.Helper()
	var verdict uint32
	moved := counted(t, d, func() { verdict, _ = runProg(t, d.Program(), p.Build()) })
	return verdict, moved
}

// counted runs f and returns the counters it moved.
func counted(t *testing.T, d *Datapath, f func()) map[Stat]uint64 {
	t.Helper()
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	f()
	after, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return statsDelta(before, after)
}

// TestSourceRangesFastPath: a client inside the ranges is forwarded as
// without them; one outside is dropped and counted, SYN or not, and leaves
// no connection entry; a VIP without ranges serves the outside client.
func TestSourceRangesFastPath(t *testing.T) {
	d := newCTDatapath(t)
	for _, c := range srcCases(t) {
		t.Run(c.name, func(t *testing.T) {
			if err := d.SetVIP(c.vip, VIPConfig{Mode: ModeDSR, SourceRanges: c.ranges}, c.backends); err != nil {
				t.Fatal(err)
			}
			inFlow := Flow{Src: addr(c.in), Dst: c.vip.Addr, Sport: 42001, Dport: c.vip.Port, Proto: TCP}
			want := expectBackend(t, c.backends, 0, inFlow.Src, inFlow.Dst, inFlow.Sport, inFlow.Dport, TCP, false).Addr
			syn := pkt(c.in, c.vip.Addr.String(), TCP, 42001, c.vip.Port)
			syn.SYN = true
			if to, ev := send(t, d, syn); to != want || ev != StatCtSYN {
				t.Fatalf("inside client's SYN reached %s (%s), want %s (ct_syn)", to, ev, want)
			}
			if to, ev := send(t, d, pkt(c.in, c.vip.Addr.String(), TCP, 42001, c.vip.Port)); to != want || ev != StatCtHit {
				t.Fatalf("inside client's ACK reached %s (%s), want %s (ct_hit)", to, ev, want)
			}

			for _, flags := range []string{"S", "A"} {
				outFlow := Flow{Src: addr(c.out), Dst: c.vip.Addr, Sport: 42002, Dport: c.vip.Port, Proto: TCP}
				p := pkt(c.out, c.vip.Addr.String(), TCP, 42002, c.vip.Port)
				p.SYN = flags == "S"
				verdict, moved := runVerdict(t, d, p)
				if verdict != xdpDrop {
					t.Errorf("outside client (%s): verdict %s, want XDP_DROP", flags, verdictNames[verdict])
				}
				if want := map[Stat]uint64{StatDropSourceRange: 1}; formatStats(moved) != formatStats(want) {
					t.Errorf("outside client (%s): counters moved %s, want %s", flags, formatStats(moved), formatStats(want))
				}
				if _, ok := entry(t, d, outFlow); ok {
					t.Errorf("outside client (%s): a connection entry was made", flags)
				}
				pr, err := d.Predict(outFlow, p.SYN)
				if err != nil || !pr.Refused || pr.Backend.IsValid() {
					t.Errorf("Predict(outside client, %s) = %+v, %v; want refused, no backend", flags, pr, err)
				}
			}
			if pr, err := d.Predict(inFlow, false); err != nil || pr.Refused || pr.Backend != want {
				t.Errorf("Predict(inside client) = %+v, %v; want %s", pr, err, want)
			}

			// The VIP without ranges serves the outside client.
			open := lookupProvisioned(c.open)
			p := pkt(c.out, c.open.Addr.String(), c.open.Proto, 42003, 8080)
			if c.open.Port != 0 {
				p.Dport = c.open.Port
			}
			wantOpen := expectBackend(t, open.backends, open.cfg.RingSize, p.Src, p.Dst, p.Sport, p.Dport, c.open.Proto, false).Addr
			if to, ev := send(t, d, p); to != wantOpen || ev != StatCtMiss {
				t.Errorf("vip without ranges: reached %s (%s), want %s (ct_miss)", to, ev, wantOpen)
			}
		})
	}
}

// TestSourceRangesChange changes a running VIP's ranges: an established
// flow keeps its backend while its client stays allowed, is dropped (its
// entry kept) while it is not, and comes back when the ranges are gone.
func TestSourceRangesChange(t *testing.T) {
	d := newCTDatapath(t)
	for _, c := range srcCases(t) {
		t.Run(c.name, func(t *testing.T) {
			set := func(r SourceRanges) {
				t.Helper()
				if err := d.SetVIP(c.vip, VIPConfig{Mode: ModeDSR, SourceRanges: r}, c.backends); err != nil {
					t.Fatal(err)
				}
			}
			set(SourceRanges{})
			f := Flow{Src: addr(c.in), Dst: c.vip.Addr, Sport: 43001, Dport: c.vip.Port, Proto: TCP}
			ack := pkt(c.in, c.vip.Addr.String(), TCP, f.Sport, f.Dport)
			want, _ := send(t, d, ack) // makes the entry
			bits := 64
			if c.vip.Addr.Is4() {
				bits = 24
			}
			outside := ranges(t, netip.PrefixFrom(addr(c.out), bits).Masked().String())
			if outside.Allows(f.Src) {
				t.Fatalf("test bug: %s allows %s", outside, f.Src)
			}
			for _, step := range []struct {
				r     SourceRanges
				allow bool
			}{
				{c.ranges, true},
				{outside, false},
				{c.ranges, true},
				{SourceRanges{}, true},
			} {
				set(step.r)
				if got := trieEntries(t, d, d.vips[c.vip].index); got != len(step.r.Prefixes()) {
					t.Errorf("ranges %q: the trie holds %d entries of the vip, want %d", step.r, got, len(step.r.Prefixes()))
				}
				verdict, moved := runVerdict(t, d, ack)
				if !step.allow {
					if verdict != xdpDrop || moved[StatDropSourceRange] != 1 {
						t.Errorf("ranges %q: verdict %s, counters %s; want a drop_source_range drop", step.r, verdictNames[verdict], formatStats(moved))
					}
					if _, ok := entry(t, d, f); !ok {
						t.Errorf("ranges %q: the refused flow's entry is gone", step.r)
					}
					continue
				}
				if to, ev := send(t, d, ack); to != want || ev != StatCtHit {
					t.Errorf("ranges %q: reached %s (%s), want %s (ct_hit)", step.r, to, ev, want)
				}
			}
		})
	}
	// Removing a VIP deletes its ranges: its index, reused, starts clean.
	if err := d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR, SourceRanges: ranges(t, "198.19.0.0/16")}, backends4); err != nil {
		t.Fatal(err)
	}
	idx := d.vips[vipWeb4].index
	if err := d.RemoveVIP(vipWeb4); err != nil {
		t.Fatal(err)
	}
	if n := trieEntries(t, d, idx); n != 0 {
		t.Errorf("removed vip: the trie holds %d entries under its index", n)
	}
}

// TestSourceRangesChangeUnderTraffic sends an allowed client's packets
// without pause while the VIP's ranges change between sets that all allow
// it, with different prefixes each time, and from none to some and back:
// not one packet may be refused (new prefixes go in before the vip_meta,
// old ones out after).
func TestSourceRangesChangeUnderTraffic(t *testing.T) {
	d := newCTDatapath(t)
	sets := []SourceRanges{
		ranges(t, "198.19.1.0/24"),
		ranges(t, "198.19.0.0/16", "10.0.0.0/8"),
		ranges(t, "198.19.1.2/32"),
		{},
		ranges(t, "198.16.0.0/12"),
	}
	syn := tcp4(vipWeb4.Addr.String(), 44001, 80)
	syn.SYN = true
	frame := syn.Build()
	var stop atomic.Bool
	var sent, refused atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		out := make([]byte, len(frame)+256)
		for !stop.Load() {
			ret, err := d.Program().Run(&ebpf.RunOptions{Data: frame, DataOut: out})
			if err != nil {
				refused.Add(1 << 32) // an error, told apart below
				return
			}
			sent.Add(1)
			if ret != xdpTX {
				refused.Add(1)
			}
		}
	}()
	for i := range 300 {
		if err := d.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR, SourceRanges: sets[i%len(sets)]}, backends4); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	switch n := refused.Load(); {
	case n >= 1<<32:
		t.Fatal("BPF_PROG_RUN failed")
	case n != 0:
		t.Errorf("%d of %d packets of an allowed client were not forwarded during range changes", n, sent.Load())
	}
	if sent.Load() < 300 {
		t.Errorf("only %d packets ran during 300 changes: the test did not overlap them", sent.Load())
	}
}

// trieEntries counts the src_prefixes entries under a VIP index.
func trieEntries(t testing.TB, d *Datapath, index uint16) int {
	t.Helper()
	var k balancerSrcPrefixKey
	var v balancerSrcPrefixValue
	n := 0
	it := d.objs.SrcPrefixes.Iterate()
	for it.Next(&k, &v) {
		if k.VipIndex == index {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSourceRangesRefusedFamily(t *testing.T) {
	d := newTestDatapath(t)
	err := d.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR, SourceRanges: ranges(t, "198.19.0.0/16", "2001:db8::/32")}, backends4)
	if err == nil || !strings.Contains(err.Error(), "source range 2001:db8::/32 is IPv6 but the vip is IPv4") {
		t.Fatalf("v6 range on a v4 vip: err = %v", err)
	}
	if len(d.VIPs()) != 0 {
		t.Error("the refused vip was added")
	}
	if n := trieEntries(t, d, 0); n != 0 {
		t.Errorf("the refused vip left %d trie entries", n)
	}
}

// TestSourceRangesAdopted: a restarted daemon reads a VIP's ranges back
// from the pinned trie, so the same desired state writes nothing, and a
// change from there adds and removes the right entries.
func TestSourceRangesAdopted(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	d1 := loadAt(t, dir)
	r := ranges(t, "198.19.1.0/24", "198.18.0.0/15")
	if err := d1.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR, SourceRanges: r}, backends4); err != nil {
		t.Fatal(err)
	}
	if err := d1.AddVIP(vipWeb6, VIPConfig{Mode: ModeDSR}, backends6); err != nil {
		t.Fatal(err)
	}
	idx := d1.vips[vipWeb4].index
	// An entry under an index no VIP with ranges has, as a crash could
	// leave: adoption deletes it.
	stray := srcPrefixKey(d1.vips[vipWeb6].index, balancerFulcrumSrcKindSRC_KIND_ALLOW, netip.MustParsePrefix("2001:db8::/32"))
	if err := d1.objs.SrcPrefixes.Put(stray, balancerSrcPrefixValue{}); err != nil {
		t.Fatal(err)
	}
	d1.Close()

	d2 := loadAt(t, dir)
	defer RemovePins(dir)
	defer d2.Close()
	if !d2.Adopted() {
		t.Fatal("the second load adopted nothing")
	}
	var got SourceRanges
	for _, s := range d2.VIPs() {
		if s.VIP == vipWeb4 {
			got = s.Config.SourceRanges
		}
	}
	if got != r {
		t.Fatalf("adopted ranges %q, want %q", got, r)
	}
	var v balancerSrcPrefixValue
	if err := d2.objs.SrcPrefixes.Lookup(stray, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("the stray entry is still there (lookup: %v)", err)
	}
	verdict, moved := runVerdict(t, d2, tcp4(vipWeb4.Addr.String(), 45001, 80))
	if verdict != xdpTX {
		t.Errorf("allowed client after adoption: verdict %s, counters %s", verdictNames[verdict], formatStats(moved))
	}
	r2 := ranges(t, "198.19.1.0/24", "203.0.113.0/24")
	if err := d2.SetVIP(vipWeb4, VIPConfig{Mode: ModeDSR, SourceRanges: r2}, backends4); err != nil {
		t.Fatal(err)
	}
	if n := trieEntries(t, d2, idx); n != 2 {
		t.Errorf("after a change: %d trie entries, want 2", n)
	}
}

// rangesForBench are 256 source ranges for BenchmarkFastpath's
// established-ranges path: 255 /24s of 10.0.0.0/16 and client4's /24.
func rangesForBench(b *testing.B) SourceRanges {
	ps := []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}
	for i := range 255 {
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24))
	}
	r, err := NewSourceRanges(ps)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

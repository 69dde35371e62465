package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// poolFamily is one family of the pools test: a client address in pool a
// (inline prefix; backends 1 and 2), one in pool b (from a prefix file;
// backend 3), and the client's own address, in no pool.
type poolFamily struct {
	vip, inA, inB netip.Addr
	aNet, bNet    string
}

var poolFamilies = []poolFamily{
	{vip4, netip.MustParseAddr("198.19.1.70"), netip.MustParseAddr("198.19.1.100"), "198.19.1.64/27", "198.19.1.96/27"},
	{vip6, netip.MustParseAddr("2001:db8:1::a01"), netip.MustParseAddr("2001:db8:1::b01"), "2001:db8:1::a00/120", "2001:db8:1::b00/120"},
}

// withPools gives the echo VIP (port 9000) of each family pools a and b;
// b's prefixes come from file, and its fallback is bFallback.
func (h *harness) withPools(cfg, file, bFallback string) string {
	for _, f := range poolFamilies {
		be := func(i int) string {
			if f.vip.Is4() {
				return h.topo.Backends[i].IPv4.String()
			}
			return `"` + h.topo.Backends[i].IPv6.String() + `"`
		}
		head := fmt.Sprintf("  - address: %s\n    port: 9000\n    protocol: tcp\n", f.vip)
		pools := fmt.Sprintf("    pools:\n      - {name: a, prefixes: [%q], backends: [%s, %s]}\n      - {name: b, prefix_file: %s, backends: [%s], fallback: %s}\n",
			f.aNet, be(0), be(1), file, be(2), bFallback)
		cfg = strings.Replace(cfg, head, head+pools, 1)
	}
	return cfg
}

// TestPoolsE2E runs real TCP through the daemon's fast path to VIPs with
// source-prefix pools, both families: clients of pool a land only on a's
// backends, those of pool b only on b's, and a client in no pool on any,
// each where explain says (and explain names the pool). With a's backends
// drained, a's new connections fall back to the VIP's ring (its one
// backend left) while its established ones stay; with b's one backend
// drained and fallback drop, b's clients get no answer, counted as
// drop_pool_down, and explain says why.
func TestPoolsE2E(t *testing.T) {
	h := newHarness(t)
	for _, f := range poolFamilies {
		for _, a := range []netip.Addr{f.inA, f.inB} {
			bits := testenv.ClientNet4.Bits()
			if a.Is6() {
				bits = testenv.ClientNet6.Bits()
			}
			if err := h.topo.Client.AddAddr(testenv.MainIface, netip.PrefixFrom(a, bits)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A GeoIP-style file: a header, both families, a pool the VIPs lack.
	file := filepath.Join(t.TempDir(), "geo.csv")
	geo := "prefix,pool\n" + poolFamilies[0].bNet + ",b\n" + poolFamilies[1].bNet + ",b\n203.0.113.0/24,elsewhere\n"
	if err := os.WriteFile(file, []byte(geo), 0o600); err != nil {
		t.Fatal(err)
	}
	h.writeConfig(h.withPools(h.config(), file, "drop"))
	h.startDaemon()

	out, err := h.cli("vip", "list")
	if err != nil || strings.Count(out, "a:1,b:1") != 2 {
		t.Fatalf("vip list does not show the pools of both echo vips (%v):\n%s", err, out)
	}
	ctx := context.Background()
	explainPool := func(src, vip netip.Addr) api.Explanation {
		t.Helper()
		ex, err := h.client.Explain(ctx, api.ExplainRequest{Src: src, Dst: vip, Protocol: "tcp", Sport: 40000, Dport: 9000, SYN: true})
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	land := func(conns []*conn) map[string]int {
		got := map[string]int{}
		for _, c := range conns {
			got[c.backend]++
		}
		return got
	}
	only := func(got map[string]int, names ...string) error {
		n := 0
		for _, name := range names {
			n += got[name]
		}
		for name := range got {
			if !strings.Contains(strings.Join(names, " "), name) {
				return fmt.Errorf("landed on %v, want only %v", got, names)
			}
		}
		if n == 0 {
			return fmt.Errorf("landed nowhere")
		}
		return nil
	}
	var established []*conn
	for _, f := range poolFamilies {
		a := h.openConnsFrom(12, f.inA, f.vip) // each where explain says
		if err := only(land(a), "backend1", "backend2"); err != nil {
			t.Errorf("pool a's client %s: %v", f.inA, err)
		}
		if got := land(a); got["backend1"] == 0 || got["backend2"] == 0 {
			t.Errorf("pool a's client %s: 12 connections reached %v, want both of a's backends", f.inA, got)
		}
		b := h.openConnsFrom(6, f.inB, f.vip)
		if err := only(land(b), "backend3"); err != nil {
			t.Errorf("pool b's client %s: %v", f.inB, err)
		}
		if ex := explainPool(f.inA, f.vip); ex.Pool != "a" || ex.PoolFallback != "" {
			t.Errorf("explain of pool a's client: %+v, want pool a", ex)
		}
		if ex := explainPool(f.inB, f.vip); ex.Pool != "b" {
			t.Errorf("explain of pool b's client: %+v, want pool b", ex)
		}
		client := testenv.ClientIPv4
		if f.vip.Is6() {
			client = testenv.ClientIPv6
		}
		none := h.openConnsFrom(12, client, f.vip)
		if got := land(none); len(got) < 2 {
			t.Errorf("client %s in no pool: 12 connections reached %v, want the vip's ring over all three", client, got)
		}
		if ex := explainPool(client, f.vip); ex.Pool != "" {
			t.Errorf("explain of a client in no pool names pool %q", ex.Pool)
		}
		established = append(established, a...)
	}

	// Pool a's backends drained (fallback vip): its new connections take
	// the vip's ring, whose one backend with weight is backend3; the
	// established ones stay.
	h.writeConfig(h.withPools(h.config(0, 0, 1), file, "drop"))
	if out, err := h.cli("apply", "-f", h.cfgPath); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	h.checkConns(established, "", "after pool a's backends were drained")
	for _, f := range poolFamilies {
		if err := only(land(h.openConnsFrom(6, f.inA, f.vip)), "backend3"); err != nil {
			t.Errorf("pool a down, fallback vip: client %s: %v", f.inA, err)
		}
		if ex := explainPool(f.inA, f.vip); ex.Pool != "a" || ex.PoolFallback != "vip" {
			t.Errorf("explain with pool a down: %+v, want pool a, fallback vip", ex)
		}
		text, err := h.cli("explain", f.inA.String(), f.vip.String(), "tcp", "40000", "9000", "--syn")
		if err != nil || !strings.Contains(text, "as pool a has no backend up") {
			t.Errorf("fulcrum explain (%v): %s", err, text)
		}
	}

	// Pool b's one backend drained and fallback drop: b's clients get no
	// answer, counted. (Health down reaches a pool as a backend left out
	// of the vip's list, which the datapath tests cover.)
	h.writeConfig(h.withPools(h.config(1, 1, 0), file, "drop"))
	if out, err := h.cli("apply", "-f", h.cfgPath); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	for _, f := range poolFamilies {
		before := h.droppedPoolDown()
		_, err := h.dialFrom(f.inB, f.vip, 9000)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("pool b down, fallback drop: client %s: dial err = %v, want a timeout (no answer)", f.inB, err)
		}
		if moved := h.droppedPoolDown() - before; moved < 2 {
			t.Errorf("pool b down: drop_pool_down moved by %d, want at least 2 (SYN and a retransmission)", moved)
		}
		if ex := explainPool(f.inB, f.vip); ex.Reason != "pool down" || ex.Pool != "b" || ex.Backend.IsValid() {
			t.Errorf("explain with pool b down, fallback drop: %+v", ex)
		}
		// Pool a is up again: its clients are its own.
		if err := only(land(h.openConnsFrom(6, f.inA, f.vip)), "backend1", "backend2"); err != nil {
			t.Errorf("pool a back up: client %s: %v", f.inA, err)
		}
	}
	// Fallback vip for b: its clients reach the vip's other backends.
	h.writeConfig(h.withPools(h.config(1, 1, 0), file, "vip"))
	if out, err := h.cli("apply", "-f", h.cfgPath); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	for _, f := range poolFamilies {
		if err := only(land(h.openConnsFrom(6, f.inB, f.vip)), "backend1", "backend2"); err != nil {
			t.Errorf("pool b down, fallback vip: client %s: %v", f.inB, err)
		}
	}
}

// droppedPoolDown reads the drop_pool_down verdict counter from the
// metrics.
func (h *harness) droppedPoolDown() uint64 {
	h.t.Helper()
	return uint64(metricValue(h.t, h.scrape(), `fulcrum_verdict_packets_total{action="drop",reason="pool_down"}`))
}

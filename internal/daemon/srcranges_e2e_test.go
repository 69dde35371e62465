package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// Client addresses outside the echo VIPs' source ranges (the client's own
// addresses, testenv.ClientIPv4 and ClientIPv6, are inside).
var (
	outsideIPv4 = netip.MustParseAddr("198.19.1.77")
	outsideIPv6 = netip.MustParseAddr("2001:db8:1::77")
)

// withSourceRanges gives the echo VIP (port 9000) of each family in a
// harness config the source ranges listed for its address.
func withSourceRanges(cfg string, ranges map[netip.Addr][]string) string {
	for vip, rs := range ranges {
		head := fmt.Sprintf("  - address: %s\n    port: 9000\n    protocol: tcp\n", vip)
		cfg = strings.Replace(cfg, head, head+"    source_ranges: ["+strings.Join(rs, ", ")+"]\n", 1)
	}
	return cfg
}

// TestSourceRangesE2E runs real TCP through the daemon's fast path to VIPs
// with source ranges, both families: a client inside the ranges connects
// and lands where explain says; a client outside gets no answer at all
// (its SYNs are dropped: a timeout, not a reset), which the verdict
// counter, the metric and explain show. Then a reload that adds the
// outside client's address lets it in while the inside client's
// connections go on.
func TestSourceRangesE2E(t *testing.T) {
	h := newHarness(t)
	for _, a := range []netip.Prefix{netip.PrefixFrom(outsideIPv4, testenv.ClientNet4.Bits()), netip.PrefixFrom(outsideIPv6, testenv.ClientNet6.Bits())} {
		if err := h.topo.Client.AddAddr(testenv.MainIface, a); err != nil {
			t.Fatal(err)
		}
	}
	inside := map[netip.Addr][]string{vip4: {testenv.ClientIPv4.String() + "/32"}, vip6: {`"` + testenv.ClientIPv6.String() + `/128"`}}
	h.writeConfig(withSourceRanges(h.config(), inside))
	h.startDaemon()

	out, err := h.cli("vip", "list")
	if err != nil || !strings.Contains(out, testenv.ClientIPv4.String()+"/32") || !strings.Contains(out, testenv.ClientIPv6.String()+"/128") {
		t.Fatalf("vip list does not show the ranges (%v):\n%s", err, out)
	}

	ctx := context.Background()
	var conns []*conn
	for _, c := range []struct{ vip, in, out netip.Addr }{{vip4, testenv.ClientIPv4, outsideIPv4}, {vip6, testenv.ClientIPv6, outsideIPv6}} {
		// Inside: connects, and lands where explain says (openConnsFrom).
		conns = append(conns, h.openConnsFrom(5, c.in, c.vip)...)

		// Outside: no answer, and counted.
		before := h.droppedBySource(ctx)
		_, err := h.dialFrom(c.out, c.vip, 9000)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("client %s outside the ranges of %s: dial err = %v, want a timeout (no answer)", c.out, c.vip, err)
		}
		after := h.droppedBySource(ctx)
		// A 3 s connect sends the SYN and at least one retransmission
		// (1 s later); each is dropped and counted.
		if after-before < 2 {
			t.Errorf("client %s outside the ranges of %s: drop_source_range moved by %d, want at least 2 (SYN and a retransmission)", c.out, c.vip, after-before)
		}
		ex, err := h.client.Explain(ctx, api.ExplainRequest{Src: c.out, Dst: c.vip, Protocol: "tcp", Sport: 40000, Dport: 9000, SYN: true})
		if err != nil || ex.Reason != "source range" || ex.Backend.IsValid() {
			t.Errorf("explain of the outside client to %s: %+v, %v; want reason \"source range\", no backend", c.vip, ex, err)
		}
		text, err := h.cli("explain", c.out.String(), c.vip.String(), "tcp", "40000", "9000", "--syn")
		if err != nil || !strings.Contains(text, "is dropped: the client is outside the source ranges") {
			t.Errorf("fulcrum explain (%v): %s", err, text)
		}
	}
	dropped := h.droppedBySource(ctx)
	if dropped < 4 {
		t.Errorf("drop_source_range = %d, want at least 4 (two refused connects of two SYNs or more)", dropped)
	}
	// The API's stats (sampled every 2 s) catch up with it.
	require.Eventually(t, 10*time.Second, func() error {
		s, err := h.client.Stats(ctx)
		if err != nil {
			return err
		}
		if n := s.Verdicts["drop_source_range"]; n < dropped {
			return fmt.Errorf("the API's drop_source_range is %d, the metric's %d", n, dropped)
		}
		return nil
	})

	// A reload that also allows the outside addresses: they connect, and
	// the inside connections keep their backends throughout.
	both := map[netip.Addr][]string{
		vip4: {testenv.ClientIPv4.String() + "/32", outsideIPv4.String() + "/32"},
		vip6: {`"` + testenv.ClientIPv6.String() + `/128"`, `"` + outsideIPv6.String() + `/128"`},
	}
	h.writeConfig(withSourceRanges(h.config(), both))
	if out, err := h.cli("apply", "-f", h.cfgPath); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	h.checkConns(conns, "", "after the ranges grew")
	for _, c := range []struct{ vip, out netip.Addr }{{vip4, outsideIPv4}, {vip6, outsideIPv6}} {
		before := h.droppedBySource(ctx)
		h.openConnsFrom(2, c.out, c.vip)
		if after := h.droppedBySource(ctx); after != before {
			t.Errorf("allowed client %s: drop_source_range moved by %d", c.out, after-before)
		}
	}
	h.checkConns(conns, "", "at the end")
}

// droppedBySource reads the drop_source_range verdict counter from the
// metrics, which read the counters at the scrape (the API's stats are
// sampled every 2 s).
func (h *harness) droppedBySource(context.Context) uint64 {
	h.t.Helper()
	return uint64(metricValue(h.t, h.scrape(), `fulcrum_verdict_packets_total{action="drop",reason="source_range"}`))
}

package daemon_test

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// TestRoundRobin3000Connections opens 3000 TCP connections, one after
// another, through the daemon's fast path to a round-robin VIP whose
// backends weigh 1, 2 and 3: each backend's share of them must be within 2
// percentage points of 1/6, 2/6 and 3/6 (each CPU hands out an exact
// cycle of six, so only the unfinished cycles stray). A connection stays
// on its backend (its connection entry decides, as explain says); explain
// says a new flow is round robin's, and cannot name its backend; the
// scheduler's decisions are counted per VIP; `fulcrum vip list` shows the
// scheduler.
func TestRoundRobin3000Connections(t *testing.T) {
	h := newHarness(t)
	// Only the v4 echo VIP is round robin.
	h.writeConfig(withScheduler("round-robin")(h, h.config(1, 2, 3)))
	h.startDaemon()
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}

	out, err := h.cli("vip", "list")
	if err != nil {
		t.Fatalf("vip list: %v\n%s", err, out)
	}
	var row string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, web.String()+" ") {
			row = l
		}
	}
	if !strings.Contains(row, " round-robin ") {
		t.Errorf("vip list shows %s as %q, want its scheduler round-robin:\n%s", web, row, out)
	}

	ex, err := h.client.Explain(context.Background(), api.ExplainRequest{Src: netip.MustParseAddr("198.19.1.2"), Dst: vip4, Protocol: "tcp", Sport: 1, Dport: 9000, SYN: true})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Reason != "round-robin" || ex.Backend.IsValid() || ex.RoundRobin == nil || ex.RoundRobin.Length != 6 || ex.Scheduler != "round-robin" {
		t.Errorf("explain of a new flow = %+v, want reason round-robin, no backend, a sequence of 6", ex)
	}

	const n = 3000
	count := map[string]int{}
	for i := range n {
		c, err := h.dial(vip4, 9000)
		if err != nil {
			t.Fatalf("connection %d: %v\ndaemon log:\n%s", i, err, h.log())
		}
		count[c.backend]++
		if i%500 == 0 {
			// The entry decides the rest of the connection: explain
			// names its backend, and the connection stays there.
			local := netip.MustParseAddrPort(c.c.LocalAddr().String())
			ex, err := h.client.Explain(context.Background(), api.ExplainRequest{Src: local.Addr().Unmap(), Dst: vip4, Protocol: "tcp", Sport: local.Port(), Dport: 9000})
			if err != nil {
				t.Fatal(err)
			}
			if ex.Reason != "connection entry" || h.names[ex.Backend] != c.backend {
				t.Errorf("connection %d on %s: explain says %s by %s", i, c.backend, h.names[ex.Backend], ex.Reason)
			}
			for j := range 5 {
				if got, err := c.exchange(fmt.Sprintf("ping-%d", j)); err != nil || got != c.backend {
					t.Fatalf("connection %d on %s: ping %d answered by %q, %v", i, c.backend, j, got, err)
				}
			}
		}
		c.c.Close()
	}
	var report []string
	for i := range h.topo.Backends {
		name := fmt.Sprintf("backend%d", i+1)
		share, want := float64(count[name])/n, float64(i+1)/6
		report = append(report, fmt.Sprintf("%s %d (%.2f%%, want %.2f%%)", name, count[name], 100*share, 100*want))
		if math.Abs(share-want) > 0.02 {
			t.Errorf("%s got %.2f%% of %d new connections, want %.2f%% ± 2 points", name, 100*share, n, 100*want)
		}
	}
	t.Logf("round-robin shares of %d connections: %s", n, strings.Join(report, ", "))

	body := h.scrape()
	if got := metricValue(t, body, fmt.Sprintf(`fulcrum_scheduler_decisions_total{scheduler="round-robin",vip="%s"}`, web)); got < n {
		t.Errorf("scheduler decisions of %s = %v, want at least %d", web, got, n)
	}
	if got := metricValue(t, body, `fulcrum_datapath_events_total{event="sched_rr"}`); got < n {
		t.Errorf("sched_rr = %v, want at least %d", got, n)
	}
}

// The failover of round-robin connections with sync is a row of
// TestSyncFailoverSchedulers (sync_sched_e2e_test.go).

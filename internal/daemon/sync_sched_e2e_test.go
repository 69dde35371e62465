package daemon_test

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// syncSched is one scheduler of TestSyncFailoverSchedulers, set on the v4
// echo VIP (port 9000) of both nodes.
type syncSched struct {
	name string
	// sched is the scheduler the API must show for the VIP.
	sched string
	// edit turns a node's vrrpConfig into the row's.
	edit func(h *harness, cfg string) string
	// sources are the client addresses the connections come from, in
	// turn; those the pair lacks are added to the client.
	sources []netip.Addr
	// serve returns the backends (indexes) a connection from src may land
	// on, over which lb2's ring for it is built; nil: all of the VIP's.
	serve func(h *harness, src netip.Addr) []int
	// reweight, if set, changes one backend's weight on both nodes after
	// the connections opened and before the failover: for a scheduler
	// whose choice the standby's ring repeats (Maglev on a pool's ring),
	// what makes the ring disagree with lb1's entries.
	reweight *backendWeight
}

// backendWeight is a weight for backend index i (of the topology's).
type backendWeight struct {
	i      int
	weight uint32
}

// withScheduler returns an edit that sets the v4 echo VIP's scheduler.
func withScheduler(sched string) func(*harness, string) string {
	return func(_ *harness, cfg string) string {
		return strings.Replace(cfg, echoVIP4Head, echoVIP4Head+"    scheduler: "+sched+"\n", 1)
	}
}

// echoVIP4Head starts the v4 echo VIP in a vrrpConfig or a harness config.
var echoVIP4Head = fmt.Sprintf("  - address: %s\n    port: 9000\n    protocol: tcp\n", vip4)

// syncPools are the pools of the pools row: a (backends 1 and 2) and b
// (backends 2 and 3), two client addresses in each.
var syncPools = []struct {
	name    string
	prefix  netip.Prefix
	clients []netip.Addr
	members []int
}{
	{"a", netip.MustParsePrefix("198.19.1.64/27"), []netip.Addr{netip.MustParseAddr("198.19.1.70"), netip.MustParseAddr("198.19.1.71")}, []int{0, 1}},
	{"b", netip.MustParsePrefix("198.19.1.96/27"), []netip.Addr{netip.MustParseAddr("198.19.1.100"), netip.MustParseAddr("198.19.1.101")}, []int{1, 2}},
}

// syncScheds are the rows of TestSyncFailoverSchedulers. Maglev's is
// TestSyncFailover (sync_e2e_test.go), with and without sync.
var syncScheds = []syncSched{
	{name: "round-robin", sched: "round-robin", edit: withScheduler("round-robin"), sources: reweightSources},
	{name: "least-conn", sched: "least-conn", edit: withScheduler("least-conn"), sources: reweightSources},
	// least-time measures passively by default (a TCP VIP without
	// response_time), so lb1's choices follow the loads and times it saw.
	{name: "least-time", sched: "least-time", edit: withScheduler("least-time"), sources: reweightSources},
	{
		name: "pools", sched: "maglev",
		edit: func(h *harness, cfg string) string {
			var sb strings.Builder
			sb.WriteString("    pools:\n")
			for _, p := range syncPools {
				var bs []string
				for _, i := range p.members {
					bs = append(bs, h.topo.Backends[i].IPv4.String())
				}
				fmt.Fprintf(&sb, "      - {name: %s, prefixes: [%q], backends: [%s]}\n", p.name, p.prefix, strings.Join(bs, ", "))
			}
			return strings.Replace(cfg, echoVIP4Head, echoVIP4Head+sb.String(), 1)
		},
		sources: []netip.Addr{syncPools[0].clients[0], syncPools[1].clients[0], syncPools[0].clients[1], syncPools[1].clients[1]},
		serve: func(h *harness, src netip.Addr) []int {
			for _, p := range syncPools {
				if p.prefix.Contains(src) {
					return p.members
				}
			}
			h.t.Fatalf("client %s is in no pool of the test", src)
			return nil
		},
		// backend2, in both pools, from 1 to 19: each pool's other
		// backend keeps a twentieth of its ring instead of half, so
		// nearly all of its connections (about half of the 200) have a
		// slot that now names backend2 (at 1 to 9 a run had 67).
		reweight: &backendWeight{1, 19},
	},
}

// TestSyncFailoverSchedulers: for each scheduler, 200 long-lived TCP
// connections to the v4 echo VIP run through lb1 (VRRP master) with
// connection sync on; lb1 dies and lb2 takes over. A packet that is not a
// flow's first and misses the table takes the VIP's Maglev ring (a pool's
// client, its pool's ring), whatever the scheduler (docs/schedulers.md),
// so lb2 would send each connection to its ring's backend for it (an
// independent model, pkg/maglev and pkg/flowhash, which lb2's explain must
// agree with). At least 50 of the 200 must be on another backend than
// that: round robin, least-conn and least-time put them there; for pools, whose ring
// lb2 shares, a reweight on both nodes moves the rings under lb1's
// entries. Those connections survive only by the entries lb2 installed
// from lb1's sync; all 200 must answer from their backends through lb2.
func TestSyncFailoverSchedulers(t *testing.T) {
	for _, s := range syncScheds {
		t.Run(s.name, func(t *testing.T) { testSyncFailoverSched(t, s) })
	}
}

func testSyncFailoverSched(t *testing.T, s syncSched) {
	const n = 200
	p := newSyncPair(t, true)
	h, lb1, lb2 := p.h, p.lb1, p.lb2
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	p.addSources(s.sources)
	for _, node := range []*harness{lb1, lb2} {
		node.applyEdit(web, s)
	}

	// lb2's ring for a connection from src, as the model builds it:
	// over the backends that serve src, with the weights lb2 holds at
	// the failover.
	all := h.topo.Backends
	serve := func(src netip.Addr) []int {
		if s.serve != nil {
			return s.serve(h, src)
		}
		every := make([]int, len(all))
		for i := range every {
			every[i] = i
		}
		return every
	}
	standby := func(c *conn) netip.Addr {
		src := netip.MustParseAddrPort(c.c.LocalAddr().String()).Addr().Unmap()
		backends, weights := all[:0:0], []uint32(nil)
		for _, i := range serve(src) {
			backends, weights = append(backends, all[i]), append(weights, 1)
			if s.reweight != nil && i == s.reweight.i {
				weights[len(weights)-1] = s.reweight.weight
			}
		}
		return modelBackend(h.modelRing(backends, weights...), backends, c)
	}

	var conns []*conn
	for i := range n {
		src := s.sources[i%len(s.sources)]
		c, err := h.dialFrom(src, vip4, 9000)
		if err != nil {
			t.Fatalf("connection %d from %s: %v\nlb1 log:\n%s", i, src, err, lb1.log())
		}
		t.Cleanup(func() { c.c.Close() })
		conns = append(conns, c)
		var names []string
		for _, b := range serve(src) {
			names = append(names, h.names[all[b].IPv4])
		}
		if !slices.Contains(names, c.backend) {
			t.Fatalf("connection %d from %s landed on %s, want one of %v", i, src, c.backend, names)
		}
	}
	if r := s.reweight; r != nil {
		for _, node := range []*harness{lb1, lb2} {
			if err := node.client.SetWeight(bg(), web, all[r.i].IPv4, r.weight); err != nil {
				t.Fatalf("%s: reweight backend%d to %d: %v", node.lb.Role(), r.i+1, r.weight, err)
			}
		}
		h.checkConns(conns, "", "through lb1 after the reweight")
	}
	lb2.entriesOn(conns, 10*time.Second)

	// What lb2 would do without the entries: the model's ring, which
	// lb2's explain must name too (polled: a reweight reaches the rings
	// after the API's answer).
	elsewhere := 0
	require.Eventually(t, 5*time.Second, func() error {
		elsewhere = 0
		for i, c := range conns {
			ring := standby(c)
			if got := lb2.explainConn(c).RingBackend; got != ring {
				return fmt.Errorf("connection %d (from %s, on %s): lb2's explain gives its ring backend %s, the model %s", i, c.c.LocalAddr(), c.backend, got, ring)
			}
			if h.names[ring] != c.backend {
				elsewhere++
			}
		}
		return nil
	})
	t.Logf("%d %s connections through lb1: %v; lb2's ring would send %d of them elsewhere", n, s.name, perBackend(conns), elsewhere)
	if elsewhere < 50 {
		t.Fatalf("only %d of %d connections are off lb2's ring: the failover would not show what sync does for %s", elsewhere, n, s.name)
	}
	if st := lb2.syncStatus(); st.Installed < n {
		t.Errorf("lb2 installed %d entries from lb1, want at least one per connection (%d)", st.Installed, n)
	}

	down := time.Now()
	setLink(t, h.topo.LB1, false)
	lb2.waitVRRP("master", 3*time.Second)
	t.Logf("lb2 master %s after lb1's link went down", time.Since(down).Round(time.Millisecond))
	lost := 0
	for i, r := range exchangeAll(conns, "after-failover") {
		if r.err != nil || r.backend != conns[i].backend {
			lost++
			t.Errorf("connection %d (from %s, on %s, lb2's ring %s) lost in the failover: %q, %v", i, conns[i].c.LocalAddr(), conns[i].backend, h.names[standby(conns[i])], r.backend, r.err)
		}
	}
	t.Logf("%d of %d %s connections lost in the failover", lost, n, s.name)
	h.checkConns(conns, "", "through lb2 after the failover")
}

// applyEdit gives the node's running daemon its configuration as s
// edits it, and requires the API to show the VIP's scheduler (and, for a
// row with pools, its pools) afterwards.
func (h *harness) applyEdit(web api.VIPRef, s syncSched) {
	t := h.t
	t.Helper()
	cfg, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	edited := s.edit(h, string(cfg))
	if edited == string(cfg) {
		t.Fatalf("%s: the %s edit changed nothing: no tcp vip on port 9000 in the config", h.lb.Role(), s.name)
	}
	h.writeConfig(edited)
	if _, err := h.client.Apply(bg(), []byte(edited)); err != nil {
		t.Fatalf("%s: apply %s: %v", h.lb.Role(), s.name, err)
	}
	vs, err := h.client.ListVIPs(bg())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(vs, func(v api.VIP) bool { return v.VIPRef == web })
	if i < 0 {
		t.Fatalf("%s: no vip %s after the apply", h.lb.Role(), web)
	}
	if got := vs[i].Scheduler; got != s.sched && (got != "" || s.sched != "maglev") {
		t.Fatalf("%s: %s has scheduler %q after the apply, want %s", h.lb.Role(), web, got, s.sched)
	}
	if want := strings.Count(edited, "      - {name: "); len(vs[i].Pools) != want {
		t.Fatalf("%s: %s has %d pools after the apply, want %d", h.lb.Role(), web, len(vs[i].Pools), want)
	}
}

package daemon_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// syncPair is two VRRP nodes (lb1 master, lb2 backup) with connection
// sync on or off, and the client's extra source addresses.
type syncPair struct {
	h, lb1, lb2 *harness
	// sources are the addresses addSources gave the client.
	sources []netip.Addr
}

// withSync adds a sync section naming peer to a vrrpConfig.
func withSync(cfg string, peer netip.Addr, keyFile string) string {
	return strings.Replace(cfg, "vips:\n", fmt.Sprintf("sync:\n  peers: [%s]\n  key_file: %s\n  interval: 10ms\nvips:\n", peer, keyFile), 1)
}

// newSyncPair starts lb1 (master) and lb2 (backup), with sync or not;
// edit, if given, changes both nodes' configurations first.
func newSyncPair(tb testing.TB, sync bool, edit ...func(string) string) *syncPair {
	h := newHarness(tb, func(o *testenv.Options) { o.SecondLB = true; o.VIPNextHop = virtualAddr })
	lb1, lb2 := h, h.node(h.topo.LB2)
	lb1.instance, lb2.instance = "lb1", "lb2"
	c1, c2 := lb1.vrrpConfig("lb1", 200), lb2.vrrpConfig("lb2", 100)
	if sync {
		key := filepath.Join(tb.TempDir(), "sync.key")
		if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		c1, c2 = withSync(c1, testenv.LB2IPv4, key), withSync(c2, testenv.LB1IPv4, key)
	}
	for _, e := range edit {
		c1, c2 = e(c1), e(c2)
	}
	lb1.writeConfig(c1)
	lb2.writeConfig(c2)
	noUnknownUnicastFlood(tb, h.topo)
	lb1.startDaemon()
	lb1.waitVRRP("master", 5*time.Second)
	lb2.startDaemon()
	lb2.waitVRRP("backup", 5*time.Second)
	p := &syncPair{h: h, lb1: lb1, lb2: lb2}
	p.addSources(reweightSources)
	return p
}

// addSources gives the client the addresses of srcs (in its IPv4 net) it
// does not have yet.
func (p *syncPair) addSources(srcs []netip.Addr) {
	client := p.h.topo.Client
	for _, src := range srcs {
		if src == testenv.ClientIPv4 || slices.Contains(p.sources, src) {
			continue
		}
		if err := client.AddAddr(testenv.MainIface, netip.PrefixFrom(src, testenv.ClientNet4.Bits())); err != nil {
			p.h.t.Fatal(err)
		}
		p.sources = append(p.sources, src)
	}
}

// entriesOn polls node's explain of every connection until each is
// decided by an established connection entry naming the connection's
// backend, or limit passes.
func (n *harness) entriesOn(conns []*conn, limit time.Duration) {
	n.t.Helper()
	require.Eventually(n.t, limit, func() error { return n.missingEntries(conns) })
}

// missingEntries says how many of conns node's explain does not decide by
// an established connection entry naming the connection's backend; nil if
// none.
func (n *harness) missingEntries(conns []*conn) error {
	missing := 0
	var first string
	for _, c := range conns {
		local := c.c.LocalAddr().(*net.TCPAddr).AddrPort()
		exp, err := n.client.Explain(bg(), api.ExplainRequest{Src: local.Addr().Unmap(), Dst: vip4, Protocol: "tcp", Sport: local.Port(), Dport: 9000})
		if err != nil {
			return err
		}
		if exp.Reason != "connection entry" || n.names[exp.Backend] != c.backend || exp.Entry == nil || exp.Entry.State != "established" {
			if missing == 0 {
				first = fmt.Sprintf("%s on %s: %s via %s", local, c.backend, exp.Reason, exp.Backend)
			}
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("%s: %d of %d connections have no established entry naming their backend (first: %s)", n.lb.Role(), missing, len(conns), first)
	}
	return nil
}

// syncStatus is the node's sync status, which must be there.
func (n *harness) syncStatus() *api.SyncStatus {
	n.t.Helper()
	st, err := n.client.Status(bg())
	if err != nil {
		n.t.Fatal(err)
	}
	if st.Sync == nil {
		n.t.Fatalf("%s: status has no sync", n.lb.Role())
	}
	return st.Sync
}

// TestSyncFailover is the failover that fails without sync: 300
// long-lived TCP connections run through lb1 (VRRP master); a reweight on
// both nodes moves about a third of the ring, and lb1's table keeps those
// flows on their old backends; then lb1 dies (link down) and lb2 takes
// over. With sync on, lb2 holds lb1's entries, and all 300 connections
// answer (data sent and echoed) after the failover. With sync off, lb2
// has only its ring: exactly the connections whose slot moved are lost,
// and the test reports how many.
func TestSyncFailover(t *testing.T) {
	for _, sync := range []bool{true, false} {
		name := map[bool]string{true: "sync", false: "nosync"}[sync]
		t.Run(name, func(t *testing.T) { testSyncFailover(t, sync) })
	}
}

func testSyncFailover(t *testing.T, sync bool) {
	p := newSyncPair(t, sync)
	h, lb1, lb2 := p.h, p.lb1, p.lb2
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	all := h.topo.Backends
	before, after := h.modelRing(all, weightsBefore...), h.modelRing(all, weightsAfter...)
	lb1.waitRing(web.String(), ringAddrs(before, all))
	lb2.waitRing(web.String(), ringAddrs(before, all))

	var conns []*conn
	for _, src := range reweightSources {
		conns = append(conns, h.openConnsFrom(300/len(reweightSources), src, vip4)...)
	}
	h.checkModel(conns, all, weightsBefore...)
	moved := map[*conn]bool{}
	for _, c := range conns {
		if modelBackend(after, all, c) != modelBackend(before, all, c) {
			moved[c] = true
		}
	}
	t.Logf("300 connections through lb1: %v; the reweight moves the slots of %d of them", perBackend(conns), len(moved))
	if len(moved) < 50 {
		t.Fatalf("the reweight moves the slots of %d of 300 connections, want at least 50 for the test to mean something", len(moved))
	}

	for _, n := range []*harness{lb1, lb2} {
		if err := n.client.SetWeight(bg(), web, all[2].IPv4, weightsAfter[2]); err != nil {
			t.Fatalf("%s: reweight backend3 to %d: %v", n.lb.Role(), weightsAfter[2], err)
		}
		n.waitRing(web.String(), ringAddrs(after, all))
	}
	h.checkConns(conns, "", "through lb1 after the reweight")
	if sync {
		// lb2 learned every flow from lb1's events, and files it on the
		// backend lb1 chose, whatever its own ring now says.
		lb2.entriesOn(conns, 10*time.Second)
		s1, s2 := lb1.syncStatus(), lb2.syncStatus()
		t.Logf("before the failover: lb1 sent %d entries in %d datagrams (overflow %v); lb2 received %d, installed %d (skipped %v, dropped %v), send lag mean %s max %s",
			s1.SentEntries, s1.SentDatagrams, s1.Overflow, s2.ReceivedEntries, s2.Installed, s2.Skipped, nonZeroDrops(s2.Dropped), s1.SendLag.Mean(), s1.SendLag.Max)
		if s2.Installed < 300 {
			t.Errorf("lb2 installed %d entries, want at least one per connection (300)", s2.Installed)
		}
	}

	// lb1 dies.
	down := time.Now()
	setLink(t, h.topo.LB1, false)
	lb2.waitVRRP("master", 3*time.Second)
	t.Logf("lb2 master %s after lb1's link went down", time.Since(down).Round(time.Millisecond))

	lost, lostMoved := 0, 0
	for i, r := range exchangeAll(conns, "after-failover") {
		c := conns[i]
		ok := r.err == nil && r.backend == c.backend
		if !ok {
			lost++
			if moved[c] {
				lostMoved++
			}
		}
		switch {
		case sync && !ok:
			t.Errorf("connection %d (from %s, on %s, slot moved %v) lost in the failover: %q, %v", i, c.c.LocalAddr(), c.backend, moved[c], r.backend, r.err)
		case !sync && moved[c] && ok:
			t.Errorf("connection %d (from %s, on %s) survived without sync although lb2's ring sends it to %s", i, c.c.LocalAddr(), c.backend, h.names[modelBackend(after, all, c)])
		case !sync && !moved[c] && !ok:
			t.Errorf("connection %d (from %s, on %s) lost without sync although its slot did not move: %q, %v", i, c.c.LocalAddr(), c.backend, r.backend, r.err)
		case !sync && !ok && !resetOrTimeout(r.err):
			t.Errorf("connection %d (from %s, on %s) lost without sync with %q, %v; want a reset or a timeout", i, c.c.LocalAddr(), c.backend, r.backend, r.err)
		}
	}
	t.Logf("sync %v: %d of 300 connections lost in the failover (%d of the %d whose slot the reweight moved)", sync, lost, lostMoved, len(moved))
	if !sync && lost == 0 {
		t.Errorf("without sync no connection was lost: the test does not show what sync is for")
	}
	if sync {
		// The data went through lb2's fast path, by the entries it
		// installed.
		h.checkConns(conns, "", "through lb2 after the failover")
	}
}

// reweight sets backend3's weight from weightsBefore's to weightsAfter's
// on both nodes, waits for their rings, and returns how many of conns
// (300) have a slot the reweight gives another backend: at least 50, or
// the test means nothing and stops.
func (p *syncPair) reweight(conns []*conn) int {
	h := p.h
	t := h.t
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	all := h.topo.Backends
	after := h.modelRing(all, weightsAfter...)
	for _, n := range []*harness{p.lb1, p.lb2} {
		if err := n.client.SetWeight(bg(), web, all[2].IPv4, weightsAfter[2]); err != nil {
			t.Fatalf("%s: reweight backend3 to %d: %v", n.lb.Role(), weightsAfter[2], err)
		}
		n.waitRing(web.String(), ringAddrs(after, all))
	}
	moved := 0
	before := h.modelRing(all, weightsBefore...)
	for _, c := range conns {
		if modelBackend(after, all, c) != modelBackend(before, all, c) {
			moved++
		}
	}
	if moved < 50 {
		t.Fatalf("the reweight moves the slots of %d of %d connections, want at least 50 for the test to mean something", moved, len(conns))
	}
	return moved
}

// nonZeroDrops keeps the reasons that dropped something.
func nonZeroDrops(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// TestSyncRestartedStandby: a standby restarted from nothing (its daemon
// killed and its pins removed, as a reboot leaves it) while 300
// connections run through lb1 learns them by the full resync lb1 sends
// when it hears lb2's new epoch, before the next failover: after a
// reweight on both nodes and lb1's death, all 300 answer through lb2.
func TestSyncRestartedStandby(t *testing.T) {
	p := newSyncPair(t, true)
	h, lb1, lb2 := p.h, p.lb1, p.lb2
	var conns []*conn
	for _, src := range reweightSources {
		conns = append(conns, h.openConnsFrom(300/len(reweightSources), src, vip4)...)
	}
	lb2.entriesOn(conns, 10*time.Second)

	// lb2 goes away with its table, and comes back empty.
	syscall.Kill(-lb2.daemon.Process.Pid, syscall.SIGKILL)
	lb2.daemon.Wait()
	if err := os.RemoveAll(datapath.PinDir(lb2.dir, "lb2")); err != nil {
		t.Fatal(err)
	}
	resyncs := lb1.syncStatus().Resyncs
	restart := time.Now()
	lb2.startDaemon()
	if st, err := lb2.client.Status(bg()); err != nil || st.Adopted {
		t.Fatalf("lb2 after the restart: %+v, %v; want a fresh start, no pins adopted", st, err)
	}
	lb2.waitVRRP("backup", 5*time.Second)
	lb2.entriesOn(conns, 10*time.Second)
	s1 := lb1.syncStatus()
	t.Logf("lb2 restarted empty and held all 300 connections' entries %s later; lb1 sent %d resyncs since (%d entries in all its resyncs)",
		time.Since(restart).Round(time.Millisecond), s1.Resyncs-resyncs, s1.ResyncEntries)
	if s1.Resyncs <= resyncs {
		t.Errorf("lb1 sent no resync after lb2 restarted (%d before, %d after)", resyncs, s1.Resyncs)
	}

	moved := p.reweight(conns)
	setLink(t, h.topo.LB1, false)
	lb2.waitVRRP("master", 3*time.Second)
	h.checkConns(conns, "", "through lb2, restarted and resynced, after lb1 died")
	t.Logf("all 300 connections answered through lb2 after the failover, %d of them against lb2's ring", moved)
}

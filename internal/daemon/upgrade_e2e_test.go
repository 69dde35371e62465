package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
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

// previousRelease is the commit of the release this one must upgrade from
// under traffic (the support window, docs/upgrade.md): the last one of
// layout 4, before layout 5 (VIP metas in slots of vip_metas). Each
// release that changes the layout sets it to the release before it.
const previousRelease = "caf40f15ad03fa367de9b3262280d2ab1e4ec8db"

// previousLayout is the layout version previousRelease pins.
const previousLayout = 4

// buildRelease builds the fulcrum binary of an earlier commit from this
// repository's history. Its BPF objects are committed, so only Go is
// needed.
func buildRelease(t *testing.T, commit string) string {
	t.Helper()
	require.Tool(t, "git")
	require.Tool(t, "tar")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		shallow, _ := exec.Command("git", "-C", root, "rev-parse", "--is-shallow-repository").Output()
		t.Fatalf("the previous release (commit %s) is not in this clone (git cat-file: %v %s; shallow clone: %s): the upgrade test builds it from the repository's history, so fetch it (git fetch --unshallow; in CI, check out with fetch-depth: 0)",
			commit, err, strings.TrimSpace(string(out)), strings.TrimSpace(string(shallow)))
	}
	src := t.TempDir()
	// git archive rather than git worktree: nothing is registered in the
	// repository, so nothing is left there if the test dies.
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract commit %s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), "fulcrum-"+commit[:12])
	build := exec.Command("go", "build", "-buildvcs=false", "-o", bin, "./cmd/fulcrum")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the previous release (commit %s): %v\n%s", commit, err, out)
	}
	return bin
}

// upgradeTraffic is what must survive an upgrade: 100 TCP connections,
// some of them kept off the ring by their connection entries after a
// reweight, and a UDP stream.
type upgradeTraffic struct {
	conns   []*conn
	offRing []int // indexes into conns
	stream  *probe
}

// startUpgradeTraffic starts the daemon (h.bin) on equal weights, opens
// the connections, reweights
// backend1 to 4 (SIGHUP), so that many flows' ring slots now name it while
// their entries keep them where they are, and starts the stream.
func (h *harness) startUpgradeTraffic() *upgradeTraffic {
	t := h.t
	h.writeConfig(h.config())
	h.startDaemon()
	tr := &upgradeTraffic{conns: append(h.openConns(70, vip4), h.openConns(30, vip6)...)}
	h.writeConfig(h.config(4, 1, 1))
	h.daemon.Process.Signal(syscall.SIGHUP)
	require.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(h.log(), "configuration applied") {
			return errors.New("the reweight (SIGHUP) is not applied")
		}
		return nil
	})
	for i := range tr.conns {
		if exp := h.explainConn(tr.conns[i]); exp.RingBackend != exp.Backend {
			tr.offRing = append(tr.offRing, i)
		}
	}
	if len(tr.offRing) < 10 {
		t.Fatalf("the reweight took %d of 100 connections off the ring, want at least 10 for the test to mean something", len(tr.offRing))
	}
	t.Logf("%d of 100 connections are off the ring after the reweight", len(tr.offRing))
	tr.stream = h.startProbe(vip4, 2*time.Millisecond)
	return tr
}

// explainConn asks the daemon where a connection's next packet goes.
func (h *harness) explainConn(c *conn) api.Explanation {
	h.t.Helper()
	local := c.c.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := c.c.RemoteAddr().(*net.TCPAddr).AddrPort()
	exp, err := h.client.Explain(context.Background(), api.ExplainRequest{
		Src: local.Addr().Unmap(), Dst: remote.Addr().Unmap(), Protocol: "tcp", Sport: local.Port(), Dport: remote.Port()})
	if err != nil {
		h.t.Fatalf("explain %s -> %s: %v", local, remote, err)
	}
	return exp
}

// check requires every connection to answer from its backend (the echo
// names it), and the stream to flow. With a daemon running, it also asks
// it for each off-ring connection: still off the ring, held by its entry.
func (tr *upgradeTraffic) check(h *harness, when string, daemon bool) {
	h.t.Helper()
	h.checkConns(tr.conns, "", when)
	tr.stream.waitEchoes(time.Now(), 50)
	if !daemon {
		return
	}
	for _, i := range tr.offRing {
		c := tr.conns[i]
		exp := h.explainConn(c)
		if h.names[exp.Backend] != c.backend || exp.RingBackend == exp.Backend || exp.Reason != "connection entry" {
			h.t.Fatalf("%s: off-ring connection %d (on %s): explain says %+v, want its connection entry to %s", when, i, c.backend, exp, c.backend)
		}
		// checkConns has just sent data on it: the entry is established
		// and fresh, whatever the migration carried over.
		if e := exp.Entry; e == nil || e.State != "established" || e.Expired || e.Backend != exp.Backend || e.Idle >= e.Timeout {
			h.t.Fatalf("%s: off-ring connection %d (on %s): explain's entry is %+v, want an established, unexpired one to %s", when, i, c.backend, exp.Entry, exp.Backend)
		}
	}
}

// finish stops the stream and requires that not a datagram was lost.
func (tr *upgradeTraffic) finish(h *harness, when string) {
	h.t.Helper()
	sent, lost := tr.stream.stopCounts()
	h.t.Logf("UDP stream %s: %d datagrams sent, %d lost", when, sent, lost)
	if sent < 100 || lost != 0 {
		h.t.Fatalf("UDP stream %s: %d sent, %d lost; want no loss", when, sent, lost)
	}
}

// kill kills the daemon with SIGKILL.
func (h *harness) kill() {
	h.daemon.Process.Signal(syscall.SIGKILL)
	h.daemon.Wait()
}

// runDaemonToEnd starts the daemon with extra environment and waits for it
// to end by itself (refused, or killed by a test hook), returning how it
// ended and what it logged.
func (h *harness) runDaemonToEnd(env ...string) (string, error) {
	h.t.Helper()
	before := len(h.log())
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		h.t.Fatal(err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	argv := append(append([]string{"env"}, env...), h.bin, "daemon", "--config", h.cfgPath)
	cmd := h.lb.Command(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Run()
	if ctx.Err() != nil {
		h.t.Fatalf("daemon with %v did not end within 20s\n%s", env, h.log()[before:])
	}
	return h.log()[before:], err
}

// restartMigrating kills the daemon with -9 and starts it again (h.bin,
// h.wrap and the config file say how): it must migrate the pins, for the
// reason why, to layout, and the traffic must pass the check.
func (h *harness) restartMigrating(tr *upgradeTraffic, why string, layout uint32) {
	h.t.Helper()
	// The TCP connections are idle here: their VIP's counter is still
	// after the restart unless it starts again from zero.
	const series = `fulcrum_vip_packets_total{vip="tcp/203.0.113.10:9000"}`
	before := metricValue(h.t, h.scrape(), series)
	h.kill()
	mark := len(h.log())
	h.startDaemon()
	if log := h.log()[mark:]; !strings.Contains(log, "migrated the pinned fast path") || !strings.Contains(log, why) {
		h.t.Fatalf("the start did not migrate the pins (%s):\n%s", why, log)
	}
	if after := metricValue(h.t, h.scrape(), series); after < before || before == 0 {
		h.t.Fatalf("%s went from %v to %v through the migration: the counters were not carried over", series, before, after)
	}
	h.requireLayout(layout)
	tr.check(h, "after a migration ("+why+")", true)
}

// requireLayout requires the instance's pins to be of layout version v,
// with no directory of a migration left.
func (h *harness) requireLayout(v uint32) {
	h.t.Helper()
	dir := datapath.PinDir(h.dir, "e2e")
	l, ok, err := datapath.ReadLayout(dir)
	if err != nil || !ok || l.Version != v {
		h.t.Fatalf("pins in %s: layout %v (found %v, err %v), want layout %d", dir, l, ok, err, v)
	}
	for _, leftover := range []string{dir + "_next", dir + "_old"} {
		if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
			h.t.Fatalf("%s is left after the migration: %v", leftover, err)
		}
	}
}

// TestUpgradeFromPreviousRelease runs the previous release (built from
// this repository's history) under traffic, kills it with -9 and starts
// this build on its pins: the pins are migrated from previousLayout with not a
// datagram lost, every connection alive on its backend, and the ones a
// reweight took off the ring still on theirs. Then the previous release is
// started again: it cannot read this layout, so it refuses, says what to do
// and changes nothing, while this build's program goes on forwarding.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	h := newHarness(t)
	current, previous := h.bin, buildRelease(t, previousRelease)
	h.bin = previous
	tr := h.startUpgradeTraffic()

	if _, ok, _ := datapath.ReadLayout(datapath.PinDir(h.dir, "e2e")); !ok {
		t.Fatal("the previous release left no pins")
	}
	h.bin = current
	h.restartMigrating(tr, fmt.Sprintf("layout %d to %d", previousLayout, datapath.LayoutVersion), datapath.LayoutVersion)

	// Back to the previous release: a downgrade across a layout change,
	// which needs 'fulcrum detach' first (docs/upgrade.md).
	h.kill()
	h.bin = previous
	log, err := h.runDaemonToEnd()
	if err == nil {
		t.Fatalf("the previous release started on layout-%d pins:\n%s", datapath.LayoutVersion, log)
	}
	for _, want := range []string{fmt.Sprintf("have layout %d", datapath.LayoutVersion), "downgrade", "Nothing was changed", "fulcrum detach"} {
		if !strings.Contains(log, want) {
			t.Fatalf("the previous release's refusal does not say %q:\n%s", want, log)
		}
	}
	h.requireLayout(datapath.LayoutVersion)
	tr.check(h, "after the previous release refused the upgraded pins", false)
	tr.finish(h, "through kill -9 of the previous release, the upgrade and a refused downgrade")
}

// TestUpgradePoolsFromPreviousRelease runs the previous release with a
// source-prefix pool on the v4 echo VIP (the client's address, backends 1
// and 2), opens connections through it, kills it with -9 and starts this
// build on its pins. Layout 5 made pool_rings an array of packed words
// that a migration writes afresh from the configuration rather than
// copying: the pool's connections must still answer from their backends,
// and new ones must land in the pool (never on backend3, which 30 of them
// would miss by chance once in some 190 000 runs) with explain naming it.
func TestUpgradePoolsFromPreviousRelease(t *testing.T) {
	const n = 30
	h := newHarness(t)
	current, previous := h.bin, buildRelease(t, previousRelease)
	pool := fmt.Sprintf("    pools:\n      - {name: a, prefixes: [\"%s/32\"], backends: [%s, %s]}\n",
		testenv.ClientIPv4, h.topo.Backends[0].IPv4, h.topo.Backends[1].IPv4)
	h.writeConfig(strings.Replace(h.config(), echoVIP4Head, echoVIP4Head+pool, 1))
	members := []string{h.names[h.topo.Backends[0].IPv4], h.names[h.topo.Backends[1].IPv4]}
	inPool := func(conns []*conn, when string) {
		t.Helper()
		for i, c := range conns {
			if !slices.Contains(members, c.backend) {
				t.Fatalf("%s: connection %d landed on %s, outside pool a (%v)", when, i, c.backend, members)
			}
		}
	}

	h.bin = previous
	h.startDaemon()
	before := h.openConnsFrom(n, testenv.ClientIPv4, vip4)
	inPool(before, "through the previous release")

	h.bin = current
	h.kill()
	mark := len(h.log())
	h.startDaemon()
	why := fmt.Sprintf("layout %d to %d", previousLayout, datapath.LayoutVersion)
	if log := h.log()[mark:]; !strings.Contains(log, "migrated the pinned fast path") || !strings.Contains(log, why) {
		t.Fatalf("the start did not migrate the pins (%s):\n%s", why, log)
	}
	h.requireLayout(datapath.LayoutVersion)
	h.checkConns(before, "", "after the upgrade")
	after := h.openConnsFrom(n, testenv.ClientIPv4, vip4)
	inPool(after, "through this build after the upgrade")
	// A flow with no entry (source port 1), so that a ring decides.
	exp, err := h.client.Explain(context.Background(), api.ExplainRequest{Src: testenv.ClientIPv4, Dst: vip4, Protocol: "tcp", Sport: 1, Dport: 9000})
	if err != nil || exp.Pool != "a" || !slices.Contains(members, h.names[exp.Backend]) {
		t.Fatalf("explain of a new flow from the client after the upgrade: %+v, %v; want pool a's ring to decide", exp, err)
	}
	t.Logf("%d connections of pool a through the upgrade from %.12s, %d new ones after it: all on %v", n, previousRelease, n, members)
}

// TestUpgradeLayoutChange changes the layout in the test itself, twice,
// under traffic: a connection table of another size (conntrack.entries),
// then a layout version one above this build's (the test hook
// FULCRUM_TEST_LAYOUT); both migrate like an upgrade. Then this build
// meets the newer layout: a downgrade, refused with a message that says
// what to do, while the pinned program goes on forwarding.
func TestUpgradeLayoutChange(t *testing.T) {
	h := newHarness(t)
	tr := h.startUpgradeTraffic()

	// A map of another size.
	h.writeConfig(strings.Replace(h.config(4, 1, 1), "entries: 65536", "entries: 131072", 1))
	h.restartMigrating(tr, "ct_v4: MaxEntries: 16384 changed to 32768", datapath.LayoutVersion)

	// A newer layout version.
	newer := uint32(datapath.LayoutVersion + 1)
	h.wrap = []string{"env", fmt.Sprintf("%s=%d", datapath.TestLayoutEnv, newer)}
	h.restartMigrating(tr, fmt.Sprintf("layout %d to %d", datapath.LayoutVersion, newer), newer)

	// This build on the newer layout: a downgrade.
	h.kill()
	h.wrap = nil
	log, err := h.runDaemonToEnd()
	if err == nil {
		t.Fatalf("the daemon started on pins of a newer layout:\n%s", log)
	}
	for _, want := range []string{fmt.Sprintf("have layout %d", newer), "downgrade", "Nothing was changed: the pinned program goes on forwarding", "start the release that wrote the pins", "fulcrum detach", "docs/upgrade.md"} {
		if !strings.Contains(log, want) {
			t.Fatalf("the refusal does not say %q:\n%s", want, log)
		}
	}
	h.requireLayout(newer)
	tr.check(h, "after a refused downgrade", false)
	tr.finish(h, "through two migrations and a refused downgrade")
}

// TestUpgradeInterrupted kills a migration with -9 after each of its steps
// (the test hook FULCRUM_TEST_MIGRATE_KILL_AFTER), each time under
// traffic. Every next start rolls the interrupted one back (before the
// swap) or completes it (from the swap on), as docs/upgrade.md says, then
// migrates again; forwarding never stops and no connection moves.
func TestUpgradeInterrupted(t *testing.T) {
	h := newHarness(t)
	tr := h.startUpgradeTraffic()
	h.kill()

	// What the start after a kill at each step says it did.
	recovery := map[string]string{
		"load":         "rolled back a migration interrupted before its swap",
		"fill":         "rolled back a migration interrupted before its swap",
		"copy":         "rolled back a migration interrupted before its swap",
		"swap":         "completed a migration interrupted after its swap",
		"retire-links": "completed a migration interrupted after its swap",
		"retire-old":   "completed a migration interrupted while retiring the old pins: renamed",
		"retire-new":   "completed a migration interrupted while retiring the old pins: removed",
	}
	layout := uint32(datapath.LayoutVersion)
	var expect string
	for _, step := range datapath.MigrationSteps {
		layout++ // each start migrates to a layout of its own
		log, err := h.runDaemonToEnd(fmt.Sprintf("%s=%d", datapath.TestLayoutEnv, layout), datapath.TestKillEnv+"="+step)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("killed after step %s: the daemon ended with %v, want SIGKILL\n%s", step, err, log)
		}
		if expect != "" && !strings.Contains(log, expect) {
			t.Fatalf("the start after a kill: does not say %q\n%s", expect, log)
		}
		expect = recovery[step]
		if expect == "" {
			t.Fatalf("no expected recovery for step %s", step)
		}
		if !h.xdpAttached() {
			t.Fatalf("XDP detached after a kill at step %s", step)
		}
		tr.check(h, "after a kill at step "+step, false)
	}
	layout++
	h.wrap = []string{"env", fmt.Sprintf("%s=%d", datapath.TestLayoutEnv, layout)}
	mark := len(h.log())
	h.startDaemon()
	if log := h.log()[mark:]; !strings.Contains(log, expect) || !strings.Contains(log, "migrated the pinned fast path") {
		t.Fatalf("the last start does not say %q and then migrate:\n%s", expect, log)
	}
	h.requireLayout(layout)
	tr.check(h, "after the interrupted migrations", true)
	tr.finish(h, fmt.Sprintf("through %d interrupted migrations", len(datapath.MigrationSteps)))
}

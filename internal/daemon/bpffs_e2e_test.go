package daemon_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// Where the daemon's bpffs is, and whether what it says at start and stop
// about the fast path outliving it comes true (datapath.MountBPFFS).

// ownBPFFS points the harness at a bpffs path that nothing has mounted, so
// that the daemon must mount it itself, and removes whatever ends up there.
func ownBPFFS(t *testing.T, h *harness) {
	h.dir = filepath.Join("/run", "fulcrum-test-"+h.topo.Prefix+"-own")
	if datapath.IsBPFFS(h.dir) {
		t.Fatalf("%s is mounted before the test", h.dir)
	}
	t.Cleanup(func() {
		for i := 0; i < 8 && datapath.IsBPFFS(h.dir); i++ {
			unix.Unmount(h.dir, unix.MNT_DETACH)
		}
		os.Remove(h.dir)
	})
}

// waitLog waits until the daemon's log, from offset from, holds want.
func (h *harness) waitLog(from int, want string) {
	h.t.Helper()
	require.Eventually(h.t, 5*time.Second, func() error {
		if !strings.Contains(h.log()[from:], want) {
			return fmt.Errorf("the daemon did not log %q; its log:\n%s", want, h.log()[from:])
		}
		return nil
	})
}

// waitDetached waits until lb1's eth0 has no XDP program.
func (h *harness) waitDetached(when string) {
	h.t.Helper()
	require.Eventually(h.t, 5*time.Second, func() error {
		if h.xdpAttached() {
			return fmt.Errorf("%s: XDP still attached 5s after the daemon ended, though it said the fast path detaches with it\n%s", when, h.log())
		}
		return nil
	})
}

// restartHitless starts the daemon (its start-up log must hold start),
// runs a UDP stream through kill -9 and a restart (which must adopt the
// pins and log adopted), then stops it with SIGTERM: the log must say the
// fast path stays attached, and it must.
func (h *harness) restartHitless(start, adopted string) {
	t := h.t
	h.writeConfig(h.config())
	from := len(h.log())
	h.startDaemon()
	h.waitLog(from, start)

	stream := h.startProbe(vip4, 2*time.Millisecond)
	h.daemon.Process.Signal(syscall.SIGKILL)
	h.daemon.Wait()
	if !h.xdpAttached() {
		t.Fatalf("XDP detached when the daemon was killed, though it said at start: %s", start)
	}
	from = len(h.log())
	h.startDaemon()
	h.waitLog(from, adopted)
	st, err := h.client.Status(context.Background())
	if err != nil || !st.Adopted {
		t.Fatalf("restarted daemon did not adopt the pins: %+v, %v\n%s", st, err, h.log()[from:])
	}
	stream.waitEchoes(time.Now(), 100) // traffic through the new program too
	sent, lost := stream.stopCounts()
	t.Logf("UDP stream through kill -9 and restart: %d datagrams sent, %d lost", sent, lost)
	if sent < 100 || lost != 0 {
		t.Fatalf("UDP stream through kill -9 and restart: %d sent, %d lost; want at least 100 sent and none lost", sent, lost)
	}

	h.daemon.Process.Signal(syscall.SIGTERM)
	h.daemon.Wait()
	h.waitLog(from, "stopping; the fast path stays attached")
	if !h.xdpAttached() {
		t.Fatal("XDP detached on SIGTERM, though the daemon said the fast path stays attached")
	}
}

// TestRestartDaemonMountsBPFFS: the daemon, started through `ip netns
// exec` (a private mount namespace) with a bpffs path that nothing has
// mounted, mounts it in the test's (the outer) mount namespace, says so,
// and a UDP stream loses nothing across kill -9 and a restart. `fulcrum
// detach` run in lb1's namespace finds the pins.
func TestRestartDaemonMountsBPFFS(t *testing.T) {
	h := newHarness(t)
	ownBPFFS(t, h)
	h.restartHitless(
		fmt.Sprintf("pins outlive this process: mounted bpffs at %s in the mount namespace of pid %d (", h.dir, os.Getpid()),
		fmt.Sprintf("pins outlive this process: the bpffs at %s is mounted in the mount namespace of pid %d (", h.dir, os.Getpid()))
	if !datapath.IsBPFFS(h.dir) {
		t.Fatalf("no bpffs at %s in the test's mount namespace", h.dir)
	}

	out, err := h.lb.Run(context.Background(), h.bin, "detach", "--config", h.cfgPath)
	if want := "detached: removed " + datapath.PinDir(h.dir, "e2e"); err != nil || !strings.HasPrefix(out, want) {
		t.Fatalf("fulcrum detach in lb1: %v, %q; want %q...", err, out, want)
	}
	h.waitDetached("after fulcrum detach")
}

// TestRestartPremountedSharedBPFFS: with a shared bpffs mounted before the
// daemon starts, it says the pins outlive it, and they do.
func TestRestartPremountedSharedBPFFS(t *testing.T) {
	h := newHarness(t)
	if err := unix.Mount("", h.dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("make %s shared: %v", h.dir, err)
	}
	say := fmt.Sprintf("pins outlive this process: the bpffs at %s is mounted in the mount namespace of pid %d (", h.dir, os.Getpid())
	h.restartHitless(say, say)

	out, err := exec.Command(h.bin, "detach", "--config", h.cfgPath).CombinedOutput()
	if want := "detached: removed " + datapath.PinDir(h.dir, "e2e"); err != nil || !strings.HasPrefix(string(out), want) {
		t.Fatalf("fulcrum detach: %v, %q; want %q...", err, out, want)
	}
	h.waitDetached("after fulcrum detach")
}

// TestRestartPrivateBPFFSDetaches: the daemon as pid 1 of a pid namespace
// of its own (a container's entrypoint), under `ip netns exec`, must mount
// its bpffs privately. It warns at start that the fast path ends with it,
// says so at stop, and that is what happens on SIGTERM and on kill -9;
// `fulcrum detach` then finds nothing and says why.
func TestRestartPrivateBPFFSDetaches(t *testing.T) {
	require.Tool(t, "unshare")
	h := newHarness(t)
	ownBPFFS(t, h)
	// --kill-child: kill -9 of unshare kills the daemon too.
	h.wrap = []string{"unshare", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"}
	h.writeConfig(h.config())
	warn := fmt.Sprintf("the fast path detaches when this process ends: this process is pid 1 of its pid namespace (a container's entrypoint?), and the bpffs it mounted at %s ends with its mount namespace; for hitless restarts, mount bpffs at %s where it outlives the daemon", h.dir, h.dir)
	stop := fmt.Sprintf("stopping; the fast path detaches with this process: its bpffs at %s ends with this process's mount namespace", h.dir)

	// SIGTERM. unshare ignores it while it waits for its child, the
	// daemon: signal that.
	from := len(h.log())
	h.startDaemon()
	h.waitLog(from, warn)
	if datapath.IsBPFFS(h.dir) {
		t.Fatalf("a bpffs at %s in the test's mount namespace, though the daemon said it mounted its own", h.dir)
	}
	if err := syscall.Kill(h.child(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	h.daemon.Wait()
	h.waitLog(from, stop)
	h.waitDetached("SIGTERM")

	// kill -9: nothing logged at stop, and the fast path goes all the same.
	from = len(h.log())
	h.startDaemon()
	h.waitLog(from, warn)
	if st, err := h.client.Status(context.Background()); err != nil || st.Adopted {
		t.Fatalf("restart after the fast path ended: status %+v, %v; want a fresh start", st, err)
	}
	if !h.xdpAttached() {
		t.Fatal("XDP not attached by the restarted daemon")
	}
	h.daemon.Process.Signal(syscall.SIGKILL)
	h.daemon.Wait()
	h.waitDetached("kill -9")
	if strings.Contains(h.log()[from:], "stopping;") {
		t.Fatalf("a killed daemon logged a stop:\n%s", h.log()[from:])
	}

	out, err := exec.Command(h.bin, "detach", "--config", h.cfgPath).CombinedOutput()
	want := fmt.Sprintf("nothing to detach: no bpffs at %s in this mount namespace, and no pins of instance e2e at that path in any other", h.dir)
	if err != nil || !strings.HasPrefix(string(out), want) {
		t.Fatalf("fulcrum detach: %v, %q; want %q...", err, out, want)
	}
}

// child returns the pid of the daemon that h.daemon (unshare --fork) runs.
func (h *harness) child() int {
	pid := h.daemon.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	fields := strings.Fields(string(b))
	if err != nil || len(fields) != 1 {
		h.t.Fatalf("children of %d: %q, %v; want one, the daemon", pid, b, err)
	}
	child, err := strconv.Atoi(fields[0])
	if err != nil {
		h.t.Fatal(err)
	}
	return child
}

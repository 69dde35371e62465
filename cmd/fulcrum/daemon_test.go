package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

func TestDaemonUsage(t *testing.T) {
	runCLI(t, "daemon").fails(t, exitUsage, "fulcrum: daemon: missing --config FILE: want the configuration file, e.g. --config /etc/fulcrum/fulcrum.yaml")
	runCLI(t, "daemon", "--config").fails(t, exitUsage, "fulcrum: daemon: flag --config needs a value (see 'fulcrum daemon --help')")
	runCLI(t, "daemon", "x.yaml").fails(t, exitUsage, `fulcrum: daemon: unexpected argument "x.yaml" (usage: fulcrum daemon)`)
}

// The daemon starts `fulcrum vrrp-agent` with its control socket on fd 3;
// run by hand it says so. It is not in the help (help.golden).
func TestVRRPAgentByHand(t *testing.T) {
	runBinary(t, "vrrp-agent").fails(t, exitError, "fulcrum vrrp-agent: no control socket on fd 3 (the daemon starts this command)")
}

// TestDetachRefusedWhileInstanceRuns runs a daemon of instance X, with no
// api.socket in its config, and asks `detach --instance X` to remove its
// fast path: detach must find the daemon on X's socket, refuse, and leave
// the pins and the attached program alone. Once the daemon is stopped the
// same command removes them.
func TestDetachRefusedWhileInstanceRuns(t *testing.T) {
	require.BPF(t)
	require.Netns(t)
	bin := fulcrumBinary(t)
	env := testenv.NewEnv(t)
	lb, err := env.NewNamespace("lb")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := env.NewNamespace("peer")
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.VethPair(lb, peer, "eth0", "eth0"); err != nil {
		t.Fatal(err)
	}
	instance := env.Prefix // "fc" and six hex digits: a valid, unused name
	// A bpffs outside /sys: `ip netns exec` remounts /sys.
	bpffs := filepath.Join("/run", "fulcrum-test-"+env.Prefix)
	if err := datapath.EnsureBPFFS(bpffs); err != nil {
		t.Fatal(err)
	}
	if err := env.OwnMount(bpffs); err != nil {
		t.Fatal(err)
	}
	socket := api.SocketPath(instance)
	t.Cleanup(func() { os.Remove(socket) }) // left behind if the daemon is killed
	cfg := filepath.Join(t.TempDir(), "fulcrum.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "instance: %s\nbpffs: %s\ninterfaces:\n  - name: eth0\nmetrics:\n  address: \"off\"\n", instance, bpffs), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	daemonLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	cmd := lb.Command(context.Background(), bin, "daemon", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		logf.Close()
	})

	// The daemon answers on X's socket.
	require.Eventually(t, 15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := api.NewClient(socket).Status(ctx)
		cancel()
		if err != nil || st.Instance != instance {
			return fmt.Errorf("daemon of instance %s not answering on %s after 15s (last: %+v, %v)\ndaemon log:\n%s", instance, socket, st, err, daemonLog())
		}
		return nil
	})
	pins := datapath.PinDir(bpffs, instance)
	before := dirNames(t, pins)
	if len(before) == 0 {
		t.Fatalf("the running daemon pinned nothing in %s", pins)
	}
	if !xdpAttached(t, lb) {
		t.Fatal("the running daemon attached no XDP program to eth0")
	}

	runCLI(t, "detach", "--instance", instance, "--bpffs", bpffs).fails(t, exitError,
		"fulcrum detach: a daemon is running on "+socket+"; stop it first (it would keep the program attached)")
	if after := dirNames(t, pins); !slices.Equal(after, before) {
		t.Errorf("refused detach changed the pins: %v, were %v", after, before)
	}
	if !xdpAttached(t, lb) {
		t.Error("refused detach left eth0 without its XDP program")
	}

	// Stopped, the daemon leaves its fast path behind, and detach removes it.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("daemon ended with %v\n%s", err, daemonLog())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon still running 10s after SIGTERM\n%s", daemonLog())
	}
	if !xdpAttached(t, lb) {
		t.Fatal("the stopped daemon took its XDP program with it")
	}
	runCLI(t, "detach", "--instance", instance, "--bpffs", bpffs).check(t, 0, "detached: removed "+pins+"\n", "")
	if _, err := os.Stat(pins); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pins still in %s after detach: %v", pins, err)
	}
	// The kernel detaches the program when the last pin of its link goes.
	require.Eventually(t, 5*time.Second, func() error {
		if xdpAttached(t, lb) {
			return errors.New("XDP program still attached to eth0 5s after detach")
		}
		return nil
	})
}

// TestDetachChecksTheSocketsItIsGiven: --config names the socket, and
// --socket adds one where only a daemon of the same instance is in the
// way. No daemon here but the fake, so no root is needed.
func TestDetachChecksTheSocketsItIsGiven(t *testing.T) {
	d := startDaemon(t)
	instance := fmt.Sprintf("fctest%d", os.Getpid())
	d.fake.update(func(f *fakeController) { f.status.Instance = instance })
	notBPFFS := t.TempDir()
	refused := "fulcrum detach: a daemon is running on " + d.socket + "; stop it first (it would keep the program attached)"

	cfg := filepath.Join(t.TempDir(), "fulcrum.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "instance: other\nbpffs: %s\ninterfaces:\n  - name: eth0\napi:\n  socket: %s\n", notBPFFS, d.socket), 0o600); err != nil {
		t.Fatal(err)
	}
	// The config's socket is the daemon's own: refused, whatever the
	// daemon calls itself.
	runCLI(t, "detach", "--config", cfg).fails(t, exitError, refused)
	// On --socket, a daemon of this instance is in the way...
	runCLI(t, "--socket", d.socket, "detach", "--instance", instance, "--bpffs", notBPFFS).fails(t, exitError, refused)
	t.Setenv("FULCRUM_SOCKET", d.socket)
	runCLI(t, "detach", "--instance", instance, "--bpffs", notBPFFS).fails(t, exitError, refused)
	// ... one of another instance is not.
	runCLI(t, "detach", "--instance", instance+"x", "--bpffs", notBPFFS).check(t, 0, noBPFFS(notBPFFS, instance+"x"), "")
}

// TestDetachNothing: without a daemon, detach says what it found.
func TestDetachNothing(t *testing.T) {
	instance := fmt.Sprintf("fctest%d", os.Getpid())
	dir := t.TempDir()
	runCLI(t, "detach", "--instance", instance, "--bpffs", dir).check(t, 0, noBPFFS(dir, instance), "")
	if os.Geteuid() != 0 {
		return
	}
	if err := datapath.EnsureBPFFS(dir); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	runCLI(t, "detach", "--instance", instance, "--bpffs", dir).check(t, 0, "nothing to detach: no pins in "+datapath.PinDir(dir, instance)+", nor at that path in any other mount namespace\n", "")
}

func TestDetachArguments(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--instance", "../.."}, exitUsage, `fulcrum: detach: --instance "../..": want an instance name, e.g. default`},
		{[]string{"--instance", "a/b"}, exitUsage, `fulcrum: detach: --instance "a/b": want an instance name, e.g. default`},
		{[]string{"--instance", ""}, exitUsage, `fulcrum: detach: --instance "": want an instance name, e.g. default`},
		{[]string{"edge1"}, exitUsage, `fulcrum: detach: unexpected argument "edge1" (usage: fulcrum detach)`},
		{[]string{"--config", missing}, exitUsage, "fulcrum detach: config: open " + missing + ": no such file or directory"},
	} {
		runCLI(t, append([]string{"detach"}, tt.args...)...).fails(t, tt.code, tt.want)
	}
}

// dirNames lists the entries of dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// xdpAttached reports whether an XDP program is attached to h's eth0.
func xdpAttached(t *testing.T, h *testenv.Host) bool {
	t.Helper()
	l, err := h.Link("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
}

// noBPFFS is what detach says when dir is no bpffs here and no other mount
// namespace holds the instance's pins at that path.
func noBPFFS(dir, instance string) string {
	return "nothing to detach: no bpffs at " + dir + " in this mount namespace, and no pins of instance " + instance +
		" at that path in any other; a daemon that mounted its own bpffs in a private mount namespace" +
		" (ip netns exec, a container) took its pins, and the fast path, with it when it ended\n"
}

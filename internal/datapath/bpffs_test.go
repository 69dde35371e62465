package datapath

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// The tests here run the test binary again as a helper process, in a mount
// namespace of its own (unshare, as `ip netns exec` and containers give the
// daemon), and look from this process at what it left behind. TestMain
// turns the binary into the helper when helperEnv names an action.
const (
	helperEnv    = "FULCRUM_BPFFS_HELPER"
	helperDirEnv = "FULCRUM_BPFFS_DIR"
	helperPin    = "m" // the map the helper pins under PinDir(dir, "t")
)

func TestMain(m *testing.M) {
	if action := os.Getenv(helperEnv); action != "" {
		if err := bpffsHelper(action, os.Getenv(helperDirEnv)); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// bpffsHelper does one action in the helper process and prints its result
// on one line.
func bpffsHelper(action, dir string) error {
	switch action {
	case "mount", "premount", "hide":
		if action == "premount" {
			// A bpffs of this namespace only, there before the daemon.
			if err := EnsureBPFFS(dir); err != nil {
				return err
			}
		}
		if action == "hide" {
			// Whatever the outer namespace has at dir is out of sight here.
			if err := unix.Mount("tmpfs", filepath.Dir(dir), "tmpfs", 0, ""); err != nil {
				return err
			}
		}
		b, err := MountBPFFS(dir)
		if err != nil {
			return err
		}
		if err := pinTestMap(dir); err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(b)
	case "hide-detach":
		if err := unix.Mount("tmpfs", filepath.Dir(dir), "tmpfs", 0, ""); err != nil {
			return err
		}
		msg, err := Detach(dir, "t")
		if err != nil {
			return err
		}
		fmt.Println(msg)
		return nil
	case "hold":
		// Pins in a private bpffs, kept until stdin closes.
		if err := EnsureBPFFS(dir); err != nil {
			return err
		}
		if err := pinTestMap(dir); err != nil {
			return err
		}
		fmt.Println("ready")
		_, err := io.Copy(io.Discard, os.Stdin)
		return err
	}
	return fmt.Errorf("unknown helper action %q", action)
}

func pinTestMap(dir string) error {
	pins := PinDir(dir, "t")
	if err := os.MkdirAll(pins, 0o700); err != nil {
		return err
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return err
	}
	defer m.Close()
	path := filepath.Join(pins, helperPin)
	os.Remove(path) // one from an earlier step
	return m.Pin(path)
}

// helper returns the command that runs the helper action on dir, wrapped
// in wrap (say, unshare --mount).
func helper(action, dir string, wrap ...string) *exec.Cmd {
	argv := append(wrap, os.Args[0], "-test.run=^$")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), helperEnv+"="+action, helperDirEnv+"="+dir)
	return cmd
}

// runHelper runs a helper to its end and returns what MountBPFFS said in it.
func runHelper(t *testing.T, action, dir string, wrap ...string) BPFFS {
	t.Helper()
	out, err := helper(action, dir, wrap...).CombinedOutput()
	if err != nil {
		t.Fatalf("helper %s %v: %v\n%s", action, wrap, err, out)
	}
	var b BPFFS
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatalf("helper %s: %v in %q", action, err, out)
	}
	return b
}

// bpffsDir returns a path for a bpffs that is not mounted yet, under a
// parent that a helper can hide, and unmounts whatever the test leaves
// there.
func bpffsDir(t *testing.T) string {
	t.Helper()
	require.Root(t) // mounting bpffs and entering mount namespaces
	require.Tool(t, "unshare")
	require.Tool(t, "nsenter")
	dir := filepath.Join(t.TempDir(), "parent", "bpffs")
	t.Cleanup(func() {
		for i := 0; i < 8 && IsBPFFS(dir); i++ {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

func testPinExists(dir string) bool {
	return exists(filepath.Join(PinDir(dir, "t"), helperPin))
}

// TestMountBPFFS runs MountBPFFS in the situations the daemon meets and
// checks both what it says and what happens: whether the pins made in the
// helper are still there once it has ended.
func TestMountBPFFS(t *testing.T) {
	dir := bpffsDir(t)
	private := []string{"unshare", "--mount", "--propagation", "private"}
	testPID := os.Getpid()

	// A private mount namespace and no bpffs anywhere: mounted in this
	// (the outer) namespace and there.
	b := runHelper(t, "mount", dir, private...)
	want := fmt.Sprintf("pins outlive this process: mounted bpffs at %s in the mount namespace of pid %d (", dir, testPID)
	if !b.Outlives || !strings.HasPrefix(b.Note, want) || b.Stop != stopStays {
		t.Fatalf("private namespace, no bpffs: got %+v, want it to outlive the helper with a note starting %q", b, want)
	}
	if !IsBPFFS(dir) || !testPinExists(dir) {
		t.Fatalf("the helper ended and its pins with it: bpffs at %s here %v, pin there %v", dir, IsBPFFS(dir), testPinExists(dir))
	}

	// Again: the namespace copies the outer bpffs, which outlives it.
	b = runHelper(t, "mount", dir, private...)
	want = fmt.Sprintf("pins outlive this process: the bpffs at %s is mounted in the mount namespace of pid %d (", dir, testPID)
	if !b.Outlives || !strings.HasPrefix(b.Note, want) {
		t.Fatalf("private namespace, outer bpffs copied: got %+v, want a note starting %q", b, want)
	}

	// The outer bpffs out of sight (as /sys/fs/bpf is under ip netns
	// exec, which remounts /sys): the outer one is mounted here.
	os.RemoveAll(PinDir(dir, "t"))
	b = runHelper(t, "hide", dir, private...)
	want = fmt.Sprintf("pins outlive this process: mounted the bpffs at %s of the mount namespace of pid %d (", dir, testPID)
	if !b.Outlives || !strings.HasPrefix(b.Note, want) {
		t.Fatalf("private namespace, outer bpffs hidden: got %+v, want a note starting %q", b, want)
	}
	if !testPinExists(dir) {
		t.Fatalf("the pins made in the helper are not in the outer bpffs at %s", dir)
	}

	// A bpffs mounted in the private namespace before: it ends with it.
	dir2 := bpffsDir(t)
	b = runHelper(t, "premount", dir2, private...)
	want = fmt.Sprintf("the fast path detaches when this process ends: the bpffs at %s is mounted only in this private mount namespace, not in that of pid %d (", dir2, testPID)
	if b.Outlives || !strings.HasPrefix(b.Note, want) || !strings.Contains(b.Note, "mount -t bpf bpf "+dir2) || b.Stop != fmt.Sprintf(stopDetachF, dir2) {
		t.Fatalf("private bpffs: got %+v, want it not to outlive the helper, a note starting %q naming the fix", b, want)
	}
	if IsBPFFS(dir2) {
		t.Fatalf("a bpffs at %s appeared here from the helper's private namespace", dir2)
	}

	// pid 1 of a pid namespace (a container's entrypoint): no outer
	// namespace in sight, the bpffs ends with the process.
	dir3 := bpffsDir(t)
	b = runHelper(t, "mount", dir3, "unshare", "--mount", "--pid", "--fork", "--mount-proc")
	want = "the fast path detaches when this process ends: this process is pid 1 of its pid namespace"
	if b.Outlives || !strings.HasPrefix(b.Note, want) || b.Stop != fmt.Sprintf(stopDetachF, dir3) {
		t.Fatalf("pid 1: got %+v, want it not to outlive the helper, a note starting %q", b, want)
	}
	if IsBPFFS(dir3) {
		t.Fatalf("a bpffs at %s appeared here from pid 1's private namespace", dir3)
	}

	// The namespace of the process that started it: mounted there.
	dir4 := bpffsDir(t)
	b = runHelper(t, "mount", dir4)
	want = fmt.Sprintf("pins outlive this process: mounted bpffs at %s in the mount namespace that this process shares with pid %d (", dir4, testPID)
	if !b.Outlives || !strings.HasPrefix(b.Note, want) {
		t.Fatalf("shared namespace: got %+v, want a note starting %q", b, want)
	}
	if !IsBPFFS(dir4) || !testPinExists(dir4) {
		t.Fatalf("shared namespace: bpffs at %s %v, pin %v; want both", dir4, IsBPFFS(dir4), testPinExists(dir4))
	}
}

// TestDetachFindsPins: Detach removes pins here or in the outer namespace,
// names the process whose namespace holds them otherwise, and says so when
// there are none.
func TestDetachFindsPins(t *testing.T) {
	dir := bpffsDir(t)
	private := []string{"unshare", "--mount", "--propagation", "private"}
	if b := runHelper(t, "mount", dir, private...); !b.Outlives {
		t.Fatalf("setup: %+v", b)
	}

	// From a namespace where the outer bpffs is out of sight.
	out, err := helper("hide-detach", dir, private...).CombinedOutput()
	want := fmt.Sprintf("detached: removed %s in the mount namespace of pid %d (", PinDir(dir, "t"), os.Getpid())
	if err != nil || !strings.HasPrefix(string(out), want) {
		t.Fatalf("detach from a private namespace: %v, %q; want %q...", err, out, want)
	}
	if exists(PinDir(dir, "t")) {
		t.Fatalf("%s still there after the detach said it removed it", PinDir(dir, "t"))
	}

	// Here.
	if err := pinTestMap(dir); err != nil {
		t.Fatal(err)
	}
	msg, err := Detach(dir, "t")
	if want := "detached: removed " + PinDir(dir, "t"); err != nil || msg != want || exists(PinDir(dir, "t")) {
		t.Fatalf("detach here: %q, %v, pins left %v; want %q", msg, err, exists(PinDir(dir, "t")), want)
	}

	// Nowhere.
	msg, err = Detach(dir, "t")
	if want := "nothing to detach: no pins in " + PinDir(dir, "t"); err != nil || !strings.HasPrefix(msg, want) {
		t.Fatalf("detach of nothing: %q, %v; want %q...", msg, err, want)
	}
	gone := filepath.Join(t.TempDir(), "none")
	msg, err = Detach(gone, "t")
	if want := fmt.Sprintf("nothing to detach: no bpffs at %s in this mount namespace, and no pins of instance t at that path in any other", gone); err != nil || !strings.HasPrefix(msg, want) {
		t.Fatalf("detach without bpffs: %q, %v; want %q...", msg, err, want)
	}

	// In another process's private namespace: named, not removed.
	dir2 := bpffsDir(t)
	hold := helper("hold", dir2, private...)
	// It holds its pins until its stdin closes; it says "ready" on stdout.
	inR, stdin, err1 := os.Pipe()
	stdout, outW, err2 := os.Pipe()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	hold.Stdin, hold.Stdout = inR, outW
	err = hold.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	defer func() {
		stdin.Close()
		hold.Process.Kill()
		hold.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("hold helper: %q, %v", line, err)
	}
	_, err = Detach(dir2, "t")
	want = fmt.Sprintf("the mount namespace of pid %d (", hold.Process.Pid)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("nsenter --mount --target %d fulcrum detach --instance t --bpffs %s", hold.Process.Pid, dir2)) {
		t.Fatalf("detach of pins held elsewhere: %v; want an error naming %q and the nsenter command", err, want)
	}
	stdin.Close()
	if err := hold.Wait(); err != nil {
		t.Fatalf("hold helper: %v", err)
	}
}

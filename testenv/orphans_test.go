package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// TestReapOrphans: the namespaces and mounts of an Env whose process died
// before Close are removed by the next Env opened; a live owner's are not.
func TestReapOrphans(t *testing.T) {
	require.Netns(t)
	orphan := NewEnv(t) // closed by its cleanup, which then finds nothing
	if _, err := orphan.NewNamespace("lb1"); err != nil {
		t.Fatal(err)
	}
	mount := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mount, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mount, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := orphan.OwnMount(mount); err != nil {
		t.Fatal(err)
	}
	ns := filepath.Join(netnsDir, orphan.Prefix+"-lb1")

	// While its owner lives, another Env leaves it alone.
	NewEnv(t)
	if _, err := os.Stat(ns); err != nil {
		t.Fatalf("a live owner's namespace was removed: %v", err)
	}

	// Its owner file now names a process that has exited, as after a
	// killed test run.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	start, err := processStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	owner := filepath.Join(ownerDir, orphan.Prefix)
	if err := os.WriteFile(owner, []byte(strconv.Itoa(dead.Process.Pid)+" "+start+"\n"+mount+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	NewEnv(t)
	if _, err := os.Stat(ns); !os.IsNotExist(err) {
		t.Errorf("namespace %s of a dead owner still there (%v)", ns, err)
	}
	if _, err := os.Stat(mount); !os.IsNotExist(err) {
		t.Errorf("mount %s of a dead owner still there (%v)", mount, err)
	}
	if _, err := os.Stat(owner); !os.IsNotExist(err) {
		t.Errorf("owner file %s still there (%v)", owner, err)
	}
}

// Package scripts holds only tests: of deps.sh, the one list of what the
// build and the tests need from the system.
package scripts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// The tools the fresh machine of the issue lacked.
var absent = []string{"nft", "keepalived", "haproxy"}

// strippedPath makes a directory of symlinks to every program on PATH and
// in the sbin directories, except apt-get and the names in leave, as a
// fresh machine would have them; extra names programs to write there.
func strippedPath(t *testing.T, leave []string, extra map[string]string) string {
	t.Helper()
	// Not t.TempDir: its parent is 0700, and one test runs the script as
	// another user.
	dir, err := os.MkdirTemp("", "fulcrum-deps-path")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	skip := map[string]bool{"apt-get": true}
	for _, n := range leave {
		skip[n] = true
	}
	dirs := append(filepath.SplitList(os.Getenv("PATH")), "/usr/sbin", "/sbin", "/usr/local/sbin")
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if skip[e.Name()] {
				continue
			}
			// The first of a name on PATH wins, as for the shell.
			os.Symlink(filepath.Join(d, e.Name()), filepath.Join(dir, e.Name()))
		}
	}
	for name, script := range extra {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range leave {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			t.Fatalf("%s is still in the stripped PATH", n)
		}
	}
	return dir
}

// runDeps runs `sh deps.sh check` with PATH set to path alone (no sbin
// added) and argv prefixed by wrap (e.g. setpriv), and checks it ends
// within 5 s: a prerequisite check must not keep anyone waiting.
func runDeps(t *testing.T, path string, wrap ...string) (code int, stderr string) {
	t.Helper()
	argv := append(wrap, "/bin/sh", "-s", "check")
	cmd := exec.Command(argv[0], argv[1:]...)
	script, err := os.ReadFile("deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	// On standard input: a user switched to by setpriv may not read the
	// work tree.
	cmd.Stdin = bytes.NewReader(script)
	cmd.Env = []string{"PATH=" + path, "FULCRUM_DEPS_SBIN=", "LC_ALL=C"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err = cmd.Run()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("deps.sh check took %v, want at most 5s", took)
	}
	if out.Len() > 0 {
		t.Errorf("deps.sh check wrote to stdout: %q", out.String())
	}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatal(err)
		}
		return ee.ExitCode(), errb.String()
	}
	return 0, errb.String()
}

// complete requires that, apt-get aside, the machine has every tool:
// what the other tests compare against.
func complete(t *testing.T) {
	t.Helper()
	if code, stderr := runDeps(t, strippedPath(t, nil, nil)); code != 0 {
		t.Fatalf("this machine lacks tools (make deps installs them):\n%s", stderr)
	}
}

const wantMissing = `  nft                  (Debian package nftables)
  keepalived           (Debian package keepalived)
  haproxy              (Debian package haproxy)
install them with:
  sudo apt-get install -y --no-install-recommends haproxy keepalived nftables
or everything at once, as root: make deps
`

// TestMissingToolsNoApt: without nftables, keepalived and HAProxy, and
// without apt-get, the check names all three and the command that installs
// them, and fails.
func TestMissingToolsNoApt(t *testing.T) {
	complete(t)
	code, stderr := runDeps(t, strippedPath(t, absent, nil))
	want := "fulcrum: the build and tests need tools that are missing (no apt-get here, so not installing):\n" + wantMissing
	if os.Geteuid() != 0 {
		want = strings.Replace(want, "no apt-get here, so not installing", "not root, so not installing", 1)
	}
	if code != 1 || stderr != want {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1, stderr:\n%s", code, stderr, want)
	}
}

// TestMissingToolsNotRoot: the same as a user who may not install.
func TestMissingToolsNotRoot(t *testing.T) {
	require.Root(t) // to become another user
	setpriv := require.Tool(t, "setpriv")
	complete(t)
	code, stderr := runDeps(t, strippedPath(t, absent, nil), setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")
	want := "fulcrum: the build and tests need tools that are missing (not root, so not installing):\n" + wantMissing
	if code != 1 || stderr != want {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1, stderr:\n%s", code, stderr, want)
	}
}

// TestMissingToolsInstalls: as root with apt-get, the check asks apt-get
// for exactly the missing packages. The apt-get here is a stand-in that
// records its arguments and installs nothing, so the check then reports
// them still missing.
func TestMissingToolsInstalls(t *testing.T) {
	require.Root(t)
	complete(t)
	log := filepath.Join(t.TempDir(), "apt.log")
	fake := "#!/bin/sh\necho \"$*\" >> " + log + "\n"
	code, stderr := runDeps(t, strippedPath(t, absent, map[string]string{"apt-get": fake}))
	want := "fulcrum: installing what the build and tests need: haproxy keepalived nftables \n" +
		"fulcrum: the build and tests need tools that are missing (still missing after apt-get install):\n" + wantMissing
	if code != 1 || stderr != want {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1, stderr:\n%s", code, stderr, want)
	}
	calls, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(calls), "update -q\ninstall -y -q --no-install-recommends haproxy keepalived nftables\n"; got != want {
		t.Errorf("apt-get was called with\n%s\nwant\n%s", got, want)
	}
}

// TestPackageList: .ci/run installs through make deps, and make deps
// installs the script's list.
func TestPackageList(t *testing.T) {
	ci, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "\nmake deps\n") {
		t.Errorf(".ci/run must install with `make deps`:\n%s", ci)
	}
	// Only make itself, which `make deps` needs, may be installed there.
	for _, m := range regexp.MustCompile(`apt-get install[^;}\n]*`).FindAllString(string(ci), -1) {
		if !strings.HasSuffix(strings.TrimSpace(m), " make") {
			t.Errorf(".ci/run installs packages itself (%q); the list belongs in scripts/deps.sh", m)
		}
	}
	out, err := exec.Command("/bin/sh", "deps.sh", "packages").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "bash bird2 ca-certificates clang-19 dpkg ethtool frr git haproxy iproute2 keepalived libbpf-dev linux-libc-dev llvm-19 make nftables systemd tar util-linux\n"
	if string(out) != want {
		t.Errorf("deps.sh packages = %q, want %q", out, want)
	}
}

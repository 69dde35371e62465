package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// verifyUnit runs systemd-analyze verify on the unit at path, with the
// unit's /usr/bin/fulcrum replaced by bin (the only change: verify
// checks that ExecStart's program exists) and the man pages of its
// Documentation= looked up under manpath ("" skips them).
func verifyUnit(t *testing.T, path, bin, manpath string) {
	t.Helper()
	analyze := require.Tool(t, "systemd-analyze")
	unit, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "/usr/bin/fulcrum ") {
		t.Fatalf("%s runs no /usr/bin/fulcrum", path)
	}
	copy := filepath.Join(t.TempDir(), "fulcrum.service")
	if err := os.WriteFile(copy, []byte(strings.ReplaceAll(string(unit), "/usr/bin/fulcrum ", bin+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"verify"}
	env := os.Environ()
	if manpath == "" {
		args = append(args, "--man=no")
	} else {
		env = append(env, "MANPATH="+manpath)
	}
	cmd := exec.Command(analyze, append(args, copy)...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze %s: %v; want it silent and successful:\n%s", strings.Join(append(args, path), " "), err, out)
	}
}

// TestSystemdUnitVerifies runs systemd-analyze verify on
// systemd/fulcrum.service as it is in the tree. (TestPackage verifies the
// installed one, man pages included.)
func TestSystemdUnitVerifies(t *testing.T) {
	verifyUnit(t, "systemd/fulcrum.service", "/bin/true", "")

	// verify is not blind: a misspelt directive fails it.
	unit, err := os.ReadFile("systemd/fulcrum.service")
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.service")
	os.WriteFile(bad, []byte(strings.Replace(string(unit), "NoNewPrivileges=", "NoNewPrivilege=", 1)), 0o644)
	out, err := exec.Command(require.Tool(t, "systemd-analyze"), "verify", "--man=no", bad).CombinedOutput()
	if !strings.Contains(string(out), "NoNewPrivilege") {
		t.Errorf("systemd-analyze verify said nothing of a misspelt directive (%v):\n%s", err, out)
	}
}

// TestSystemdUnitSettings checks what the unit must say for the daemon:
// notify, reload by SIGHUP, and each capability explained.
func TestSystemdUnitSettings(t *testing.T) {
	data, err := os.ReadFile("systemd/fulcrum.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, want := range []string{
		"\nType=notify\n",
		"\nExecReload=/bin/kill -HUP $MAINPID\n",
		"\nExecStart=/usr/bin/fulcrum daemon --config /etc/fulcrum/fulcrum.yaml\n",
		"\nNoNewPrivileges=yes\n",
		"\nProtectSystem=strict\n",
		"\nProtectHome=yes\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q", strings.TrimSpace(want))
		}
	}
	var bound, ambient string
	for _, line := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(line, "CapabilityBoundingSet="); ok {
			bound = v
		}
		if v, ok := strings.CutPrefix(line, "AmbientCapabilities="); ok {
			ambient = v
		}
	}
	if bound == "" || bound != ambient {
		t.Errorf("CapabilityBoundingSet=%q, AmbientCapabilities=%q; want the same non-empty set", bound, ambient)
	}
	for _, c := range strings.Fields(bound) {
		// Each is named in a comment that says why ("#   CAP_X  why").
		if !strings.Contains(unit, "#   "+c+" ") && !strings.Contains(unit, "#   "+c+",") {
			t.Errorf("%s is in the bounding set but no comment says why", c)
		}
	}
}

package deploy

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

const (
	pkgVersion = "9.8.7~test"
	pkgCommit  = "0123456789ab"
)

// run runs a command and returns its standard output; a failure ends the
// test with the command's output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// TestPackage builds the .deb as `make package` does, checks what it
// holds, installs it with dpkg into a scratch root, runs the installed
// fulcrum there (chroot: an empty root, so the binary must be static),
// checks the installed unit with systemd-analyze, and removes and purges
// the package again.
func TestPackage(t *testing.T) {
	require.Root(t) // dpkg --root writes files owned by root; chroot
	for _, tool := range []string{"make", "gzip", "dpkg", "dpkg-deb", "chroot", "systemd-analyze"} {
		require.Tool(t, tool)
	}
	build := t.TempDir()
	run(t, "make", "-C", "..", "package", "BUILD="+build, "VERSION="+pkgVersion, "COMMIT="+pkgCommit)
	deb := filepath.Join(build, "fulcrum_"+pkgVersion+"_amd64.deb")
	fi, err := os.Stat(deb)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes", filepath.Base(deb), fi.Size())

	// The control fields and the conffile.
	for field, want := range map[string]string{"Package": "fulcrum", "Version": pkgVersion, "Architecture": "amd64"} {
		if got := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, field)); got != want {
			t.Errorf("%s: %q, want %q", field, got, want)
		}
	}
	if got := run(t, "dpkg-deb", "--info", deb, "conffiles"); got != "/etc/fulcrum/fulcrum.yaml\n" {
		t.Errorf("conffiles: %q, want only /etc/fulcrum/fulcrum.yaml", got)
	}

	// The contents.
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
		f := strings.Fields(line)
		if name := strings.TrimPrefix(f[len(f)-1], "."); !strings.HasSuffix(name, "/") {
			files = append(files, name)
		}
	}
	want := []string{
		"/usr/bin/fulcrum",
		"/usr/lib/systemd/system/fulcrum.service",
		"/etc/fulcrum/fulcrum.yaml",
		"/usr/share/man/man8/fulcrum.8.gz",
		"/usr/share/man/man8/fulcrum-daemon.8.gz",
		"/usr/share/man/man8/fulcrum-vip-add.8.gz",
		"/usr/share/bash-completion/completions/fulcrum",
		"/usr/share/zsh/vendor-completions/_fulcrum",
		"/usr/share/doc/fulcrum/README.md",
		"/usr/share/doc/fulcrum/getting-started.md",
		"/usr/share/doc/fulcrum/operations.md",
		"/usr/share/doc/fulcrum/examples/minimal.yaml",
		"/usr/share/doc/fulcrum/monitoring/grafana-fulcrum.json",
		"/usr/share/doc/fulcrum/monitoring/prometheus-alerts.yaml",
	}
	for _, w := range want {
		if !slices.Contains(files, w) {
			t.Errorf("the package lacks %s; it holds:\n%s", w, strings.Join(files, "\n"))
		}
	}
	man := 0
	for _, f := range files {
		if strings.HasPrefix(f, "/usr/share/man/man8/") {
			man++
		}
	}
	if man < 20 {
		t.Errorf("%d man pages, want fulcrum(8) and one per command (at least 20)", man)
	}

	// Install into a scratch root.
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "dpkg", "--root="+root, "--install", deb)
	if got := run(t, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "--show", "--showformat=${Status} ${Version}", "fulcrum"); got != "install ok installed "+pkgVersion {
		t.Errorf("dpkg-query: %q, want installed %s", got, pkgVersion)
	}

	bin := filepath.Join(root, "usr/bin/fulcrum")
	if f, err := elf.Open(bin); err != nil {
		t.Error(err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the installed fulcrum has an ELF interpreter: it is not static")
			}
		}
		f.Close()
	}
	got := run(t, "chroot", root, "/usr/bin/fulcrum", "version")
	if want := "fulcrum " + pkgVersion + " (commit " + pkgCommit + ", " + runtime.Version() + ")\n"; got != want {
		t.Errorf("installed fulcrum version: %q, want %q", got, want)
	}
	// The installed config is the example, and the daemon would take it.
	if out := run(t, "chroot", root, "/usr/bin/fulcrum", "check", "-f", "/etc/fulcrum/fulcrum.yaml"); !strings.HasPrefix(out, "/etc/fulcrum/fulcrum.yaml: good: ") {
		t.Errorf("fulcrum check on the installed config: %q", out)
	}
	if st, err := os.Stat(filepath.Join(root, "etc/fulcrum/fulcrum.yaml")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("installed config: %v, mode %v; want 0600 (it may hold addresses operators keep private)", err, st.Mode().Perm())
	}

	// The installed unit, with the installed binary and man pages.
	verifyUnit(t, filepath.Join(root, "usr/lib/systemd/system/fulcrum.service"), bin, filepath.Join(root, "usr/share/man"))

	// Remove keeps the conffile; purge takes it.
	run(t, "dpkg", "--root="+root, "--remove", "fulcrum")
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("after dpkg --remove, %s: %v; want it gone", bin, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/fulcrum/fulcrum.yaml")); err != nil {
		t.Errorf("after dpkg --remove the conffile is gone (%v); remove keeps it", err)
	}
	run(t, "dpkg", "--root="+root, "--purge", "fulcrum")
	if _, err := os.Stat(filepath.Join(root, "etc/fulcrum/fulcrum.yaml")); !os.IsNotExist(err) {
		t.Errorf("after dpkg --purge the conffile is there (%v)", err)
	}
	left := run(t, "find", root, "-path", filepath.Join(root, "var"), "-prune", "-o", "-print")
	if strings.TrimSpace(left) != root {
		t.Errorf("files left after purge:\n%s", left)
	}
}

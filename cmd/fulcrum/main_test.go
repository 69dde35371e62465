package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// The CLI tests do not run in parallel: urfave/cli/v2 keeps its help
// command and flag in package variables that every App shares.

var update = flag.Bool("update", false, "rewrite the golden files under testdata with the outputs of this run")

// testdata is the absolute path of the golden files: some tests change
// the working directory.
var testdata = func() string {
	dir, err := filepath.Abs("testdata")
	if err != nil {
		panic(err)
	}
	return dir
}()

func TestMain(m *testing.M) {
	flag.Parse()
	// Tables print local times; the golden files hold them in UTC.
	time.Local = time.UTC
	// The help pages show the socket flag's default, which the caller's
	// environment would change; tests that want it set it themselves.
	os.Unsetenv("FULCRUM_SOCKET")
	code := m.Run()
	removeBinary()
	os.Exit(code)
}

// result is what one run of the CLI did.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

// runCLI runs the CLI with args (without the program name) and the clock
// at testNow.
func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runAt(context.Background(), append([]string{"fulcrum"}, args...), &stdout, &stderr, func() time.Time { return testNow })
	return result{args, code, stdout.String(), stderr.String()}
}

// check compares the run with the exit code and the whole of stdout and
// stderr it should have produced.
func (r result) check(t *testing.T, code int, stdout, stderr string) {
	t.Helper()
	if r.code != code || r.stdout != stdout || r.stderr != stderr {
		t.Errorf("fulcrum %s:\ngot  exit %d, stdout %q, stderr %q\nwant exit %d, stdout %q, stderr %q",
			strings.Join(r.args, " "), r.code, r.stdout, r.stderr, code, stdout, stderr)
	}
}

// fails checks that the run failed with code and the one-line message
// msg on stderr, and printed nothing on stdout.
func (r result) fails(t *testing.T, code int, msg string) {
	t.Helper()
	r.check(t, code, "", msg+"\n")
}

// checkGolden checks that the run succeeded, printed nothing on stderr,
// and printed on stdout exactly testdata/name.
func (r result) checkGolden(t *testing.T, name string) {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Errorf("fulcrum %s: exit %d, stderr %q; want 0 and none", strings.Join(r.args, " "), r.code, r.stderr)
	}
	golden(t, name, r.stdout)
}

// golden compares got with the file testdata/name; with -update it writes
// got there instead.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join(testdata, name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it): %s\ngot:\n%s\nwant:\n%s", path, firstDiff(got, string(want)), got, want)
	}
}

// firstDiff names the first line where got and want differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d: got %q, want %q", i+1, g[i], w[i])
		}
	}
	return fmt.Sprintf("got %d lines, want %d", len(g), len(w))
}

// checkJSON checks that the run succeeded and printed one JSON document
// that decodes, with no field unknown to T, into exactly want.
func checkJSON[T any](t *testing.T, r result, want T) {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Errorf("fulcrum %s: exit %d, stderr %q; want 0 and none", strings.Join(r.args, " "), r.code, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	var got T
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("fulcrum %s: stdout is not the JSON of a %T: %v\n%s", strings.Join(r.args, " "), got, err, r.stdout)
	}
	if dec.More() {
		t.Errorf("fulcrum %s: more than one JSON document:\n%s", strings.Join(r.args, " "), r.stdout)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("fulcrum %s: decoded\n%+v\nwant\n%+v", strings.Join(r.args, " "), got, want)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frob"}, `fulcrum: unknown command "frob", want one of: daemon, detach, apply, check, config, vip, backend, conn, status, stats, explain, decap, vrrp, bgp, node, version, completion`},
		{[]string{"--bogus", "status"}, "fulcrum: unknown flag --bogus (see 'fulcrum --help')"},
		{[]string{"-o", "yaml", "status"}, `fulcrum: --output "yaml": want table or json`},
		{[]string{"--timeout", "soon", "status"}, `fulcrum: invalid value "soon" for flag --timeout: want a duration such as 500ms or 30s (see 'fulcrum --help')`},
		{[]string{"status", "extra"}, `fulcrum: status: unexpected argument "extra" (usage: fulcrum status)`},
		{[]string{"stats", "extra"}, `fulcrum: stats: unexpected argument "extra" (usage: fulcrum stats)`},
		{[]string{"vrrp", "handover", "now"}, `fulcrum: vrrp handover: unexpected argument "now" (usage: fulcrum vrrp handover)`},
		{[]string{"vrrp", "frob"}, `fulcrum: vrrp: unknown command "frob", want one of: handover, resume`},
		{[]string{"node", "frob"}, `fulcrum: node: unknown command "frob", want one of: drain, resume`},
		{[]string{"node", "drain", "now"}, `fulcrum: node drain: unexpected argument "now" (usage: fulcrum node drain)`},
		{[]string{"vip", "list", "--socket"}, "fulcrum: flag --socket needs a value (see 'fulcrum --help')"},
		{[]string{"backend", "add", "tcp/203.0.113.10:80", "198.18.0.1", "--weight"}, "fulcrum: backend add: flag --weight needs a value (see 'fulcrum backend add --help')"},
	}
	for _, tt := range tests {
		// No daemon: usage errors come first.
		runCLI(t, append([]string{"--socket", "/nonexistent/api.sock"}, tt.args...)...).fails(t, exitUsage, tt.want)
	}
}

// TestHelp runs the binary: urfave/cli keeps help state in package
// variables, so in one process a help page depends on the runs before it.
func TestHelp(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		golden string
	}{
		{nil, "help.golden"},
		{[]string{"--help"}, "help.golden"},
		{[]string{"vip"}, "help_vip.golden"},
		{[]string{"help", "vip"}, "help_vip.golden"},
		{[]string{"vip", "add", "--help"}, "help_vip_add.golden"},
		{[]string{"backend"}, "help_backend.golden"},
		{[]string{"help", "backend"}, "help_backend.golden"},
		{[]string{"vrrp", "--help"}, "help_vrrp.golden"},
		{[]string{"help", "vrrp"}, "help_vrrp.golden"},
		{[]string{"detach", "-h"}, "help_detach.golden"},
	} {
		runBinary(t, tt.args...).checkGolden(t, tt.golden)
	}
}

// panicWriter panics on every write.
type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("writer exploded") }

func TestPanicIsReported(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"fulcrum", "version"}, panicWriter{}, &stderr)
	if code != exitError || stderr.String() != "fulcrum: internal error: writer exploded\n" {
		t.Errorf("exit %d, stderr %q; want 1 and the internal error", code, stderr.String())
	}
}

func TestReportCodes(t *testing.T) {
	for _, tt := range []struct {
		err    error
		code   int
		stderr string
	}{
		{nil, exitOK, ""},
		{usagef("vip add: bad"), exitUsage, "fulcrum: vip add: bad\n"},
		{errors.New("boom"), exitError, "fulcrum: boom\n"},
		{api.ErrNotFound, exitError, "fulcrum: not found\n"},
		{&api.StatusError{Code: 400, Message: "ring_size: 4 is not a prime"}, exitError, "fulcrum: ring_size: 4 is not a prime\n"},
	} {
		var buf bytes.Buffer
		if got := report(&buf, tt.err); got != tt.code || buf.String() != tt.stderr {
			t.Errorf("report(%v) = %d, %q; want %d, %q", tt.err, got, buf.String(), tt.code, tt.stderr)
		}
	}
}

// The fulcrum binary, built once as a release is: version and commit set
// by the linker. Tests that need a process of their own (a daemon, a
// shell) or the link flags themselves run it.
const (
	buildVersion = "v9.8.7-test"
	buildCommit  = "0123456789ab"
)

var binary struct {
	once      sync.Once
	dir       string
	path      string
	goVersion string // of the toolchain that built it
	err       error
}

// fulcrumBinary returns the path of the built binary.
func fulcrumBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		binary.dir, binary.err = os.MkdirTemp("", "fulcrum-bin")
		if binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "fulcrum")
		const pkg = "github.com/fulcrum-lb/fulcrum/internal/version"
		build := exec.Command("go", "build", "-o", binary.path,
			"-ldflags", "-X "+pkg+".Version="+buildVersion+" -X "+pkg+".Commit="+buildCommit, ".")
		if out, err := build.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		out, err := exec.Command("go", "env", "GOVERSION").Output()
		if err != nil {
			binary.err = fmt.Errorf("go env GOVERSION: %v", err)
			return
		}
		binary.goVersion = strings.TrimSpace(string(out))
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

func removeBinary() {
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
}

// runBinary runs the built binary with args and returns what it did.
func runBinary(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(fulcrumBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return result{args, cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

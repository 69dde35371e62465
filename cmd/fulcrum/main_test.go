package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/apiserver"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// The CLI tests do not run in parallel: urfave/cli/v2 keeps its help
// command and flag in package variables that every App shares.

// result is what one run of the CLI did.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs the CLI with args (without the program name).
func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"fulcrum"}, args...), &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// daemon is a test API server over a Unix socket, backed by a fake.
type testDaemon struct {
	socket string
	fake   *fakeController
}

func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "fcli") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "api.sock")
	l, err := apiserver.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	srv := &http.Server{Handler: apiserver.New(f, slog.New(slog.DiscardHandler))}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return &testDaemon{socket: socket, fake: f}
}

// run runs the CLI against the daemon.
func (d *testDaemon) run(t *testing.T, args ...string) result {
	t.Helper()
	return runCLI(t, append([]string{"--socket", d.socket}, args...)...)
}

// expect checks a result's exit code and that its stdout and stderr
// contain the given lines or fragments.
func (r result) expect(t *testing.T, code int, stdout []string, stderr ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, want := range stdout {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout does not contain %q:\n%s", want, r.stdout)
		}
	}
	for _, want := range stderr {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
		}
	}
	if code == 0 && r.stderr != "" {
		t.Errorf("stderr of a success: %q", r.stderr)
	}
	if code != 0 && strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("error is not one line: %q", r.stderr)
	}
}

// decodeJSON decodes stdout strictly into v.
func decodeJSON(t *testing.T, stdout string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not the expected JSON: %v\n%s", err, stdout)
	}
}

func TestNoDaemon(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{
		{"status"}, {"stats"}, {"vip", "list"}, {"backend", "list"},
		{"vip", "remove", "tcp/203.0.113.10:80"},
		{"explain", "198.19.1.2", "203.0.113.10", "tcp", "40000", "80"},
	} {
		r := runCLI(t, append([]string{"--socket", socket}, args...)...)
		r.expect(t, 1, nil, "fulcrum: cannot reach the fulcrum daemon at "+socket+": is it running? (fulcrum daemon --config FILE)")
		if r.stdout != "" {
			t.Errorf("%v: stdout %q, want none", args, r.stdout)
		}
	}
}

func TestSocketFromEnvironment(t *testing.T) {
	d := startDaemon(t)
	t.Setenv("FULCRUM_SOCKET", d.socket)
	runCLI(t, "status").expect(t, 0, []string{"instance default"})
	t.Setenv("FULCRUM_SOCKET", filepath.Join(t.TempDir(), "other.sock"))
	runCLI(t, "--socket", d.socket, "status").expect(t, 0, nil) // the flag wins
}

func TestDaemonErrorsExit1(t *testing.T) {
	d := startDaemon(t)
	d.fake.err = errors.New("update map vips: operation not permitted")
	d.run(t, "vip", "list").expect(t, 1, nil, "fulcrum: update map vips: operation not permitted")
	d.fake.err = nil
	d.run(t, "vip", "remove", "tcp/203.0.113.99:80").expect(t, 1, nil, "fulcrum: vip tcp/203.0.113.99:80: not found")
	d.run(t, "vip", "add", "tcp/203.0.113.10:80").expect(t, 1, nil, "already exists")
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frob"}, `fulcrum: unknown command "frob", want one of: `},
		{[]string{"vip", "frob"}, `fulcrum: vip: unknown command "frob", want one of: add, remove, list`},
		{[]string{"--bogus", "status"}, "fulcrum: unknown flag --bogus (see 'fulcrum --help')"},
		{[]string{"-o", "yaml", "status"}, `fulcrum: --output "yaml": want table or json`},
		{[]string{"status", "extra"}, `fulcrum: status: unexpected argument "extra"`},
		{[]string{"vip", "add", "--mode"}, "fulcrum: vip add: flag --mode needs a value"},
		{[]string{"--timeout", "soon", "status"}, `invalid value "soon" for flag --timeout: want a duration`},
		{[]string{"daemon"}, `Required flag "config" not set`},
	}
	for _, tt := range tests {
		r := runCLI(t, tt.args...)
		r.expect(t, 2, nil, tt.want)
		if t.Failed() {
			t.Fatalf("args %q", tt.args)
		}
	}
}

func TestHelp(t *testing.T) {
	r := runCLI(t)
	r.expect(t, 0, []string{"USAGE:", "vip", "backend", "explain", "--socket", "--output"})
	runCLI(t, "--help").expect(t, 0, []string{"COMMANDS:"})
	runCLI(t, "vip").expect(t, 0, []string{"add", "remove", "list"})
	runCLI(t, "vip", "add", "--help").expect(t, 0, []string{"--backend", "--ring-size", "--no-conntrack"})
	runCLI(t, "help", "backend").expect(t, 0, []string{"drain", "weight"})
}

func TestGlobalFlagsAfterCommand(t *testing.T) {
	d := startDaemon(t)
	r := runCLI(t, "vip", "list", "-o", "json", "--socket", d.socket)
	r.expect(t, 0, nil)
	var vips []api.VIP
	decodeJSON(t, r.stdout, &vips)
	if len(vips) != 2 {
		t.Errorf("got %d VIPs, want 2", len(vips))
	}
}

// panicWriter panics on every write.
type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("writer exploded") }

func TestPanicIsReported(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"fulcrum", "version"}, panicWriter{}, &stderr)
	if code != 1 || stderr.String() != "fulcrum: internal error: writer exploded\n" {
		t.Errorf("exit %d, stderr %q; want 1 and the internal error", code, stderr.String())
	}
}

func TestReorderArgs(t *testing.T) {
	app := newApp(&bytes.Buffer{}, &bytes.Buffer{})
	tests := []struct{ in, want string }{
		{"vip add tcp/203.0.113.10:80 --mode dsr --no-conntrack --backend 198.18.0.1",
			"vip add --mode dsr --no-conntrack --backend 198.18.0.1 tcp/203.0.113.10:80"},
		{"vip list -o json", "-o json vip list"},
		{"--socket /s vip list --output=json", "--socket /s --output=json vip list"},
		{"backend weight tcp/203.0.113.10:80 198.18.0.1 -1", "backend weight -- tcp/203.0.113.10:80 198.18.0.1 -1"},
		{"backend add V A -- --weight", "backend add -- V A --weight"},
		{"vip add -h", "vip add -h"},
		{"explain 198.19.1.2 203.0.113.10 tcp --syn", "explain --syn 198.19.1.2 203.0.113.10 tcp"},
		{"vip frob --x", "vip --x frob"},
		{"vip list --generate-bash-completion", "vip list --generate-bash-completion"},
	}
	for _, tt := range tests {
		got := strings.Join(reorderArgs(app, append([]string{"fulcrum"}, strings.Fields(tt.in)...))[1:], " ")
		if got != tt.want {
			t.Errorf("reorderArgs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestReportCodes(t *testing.T) {
	var buf bytes.Buffer
	if got := report(&buf, nil); got != 0 || buf.Len() != 0 {
		t.Errorf("report(nil) = %d, %q", got, buf.String())
	}
	if got := report(&buf, usagef("vip add: bad")); got != 2 || buf.String() != "fulcrum: vip add: bad\n" {
		t.Errorf("report(usage) = %d, %q", got, buf.String())
	}
	buf.Reset()
	if got := report(&buf, errors.New("boom")); got != 1 || buf.String() != "fulcrum: boom\n" {
		t.Errorf("report(error) = %d, %q", got, buf.String())
	}
}

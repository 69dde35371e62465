package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/apiserver"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// The shape of every command that talks to the daemon (call.go): no
// daemon, a refusal, a daemon that does not answer. The noun tests cover
// the rest.

func TestNoDaemon(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{
		{"status"}, {"stats"}, {"vip", "list"}, {"backend", "list"}, {"vrrp"},
		{"vip", "remove", "tcp/203.0.113.10:80"}, {"vrrp", "handover"},
		{"explain", "198.19.1.2", "203.0.113.10", "tcp", "40000", "80"},
	} {
		r := runCLI(t, append([]string{"--socket", socket}, args...)...)
		r.fails(t, exitError, "fulcrum: cannot reach the fulcrum daemon at "+socket+": is it running? (fulcrum daemon --config FILE)")
	}
}

func TestSocketFromEnvironment(t *testing.T) {
	d := startDaemon(t)
	t.Setenv("FULCRUM_SOCKET", d.socket)
	runCLI(t, "vrrp", "resume").check(t, 0, "vrrp: hold lifted; this node may preempt again\n", "")
	t.Setenv("FULCRUM_SOCKET", filepath.Join(t.TempDir(), "other.sock"))
	runCLI(t, "--socket", d.socket, "vrrp", "resume").check(t, 0, "vrrp: hold lifted; this node may preempt again\n", "") // the flag wins
}

// TestDaemonErrors: whatever the daemon's reason, a refusal exits 1 with
// its message.
func TestDaemonErrors(t *testing.T) {
	d := startDaemon(t)
	d.fake.update(func(f *fakeController) { f.err = errors.New("update map vips: operation not permitted") })
	d.run(t, "vip", "list").fails(t, exitError, "fulcrum: update map vips: operation not permitted")
	d.fake.update(func(f *fakeController) { f.err = nil })
	d.run(t, "vip", "remove", "tcp/203.0.113.99:80").fails(t, exitError, "fulcrum: vip tcp/203.0.113.99:80: not found")
	d.run(t, "vip", "add", "tcp/203.0.113.10:80").fails(t, exitError, "fulcrum: vip tcp/203.0.113.10:80 already exists: conflict")
	d.fake.update(func(f *fakeController) {
		f.err = errors.New("weight: 70000 is over the maximum 65535: " + api.ErrInvalid.Error())
	})
	d.run(t, "backend", "weight", "tcp/203.0.113.10:80", "198.18.0.12", "7").fails(t, exitError, "fulcrum: weight: 70000 is over the maximum 65535: invalid request")
}

// TestTimeout: a daemon that does not answer in --timeout is given up on.
func TestTimeout(t *testing.T) {
	dir, err := os.MkdirTemp("", "fcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "mute.sock")
	l, err := apiserver.Listen(socket) // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	r := runCLI(t, "--socket", socket, "--timeout", "200ms", "status")
	r.fails(t, exitError, "fulcrum: fulcrum daemon at "+socket+": context deadline exceeded")
	if took := time.Since(start); took < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("gave up after %v, want 200ms (and well under 5s)", took)
	}
}

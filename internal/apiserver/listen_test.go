package apiserver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// shortTempDir returns a temporary directory with a path short enough
// for a Unix socket (108 bytes), which t.TempDir's may not be.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestListenSocket(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "a", "b", "api.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o755 {
		t.Errorf("created directory mode %v, want 0755", di.Mode().Perm())
	}

	// A second daemon on the same socket is refused while the first runs.
	srv := &http.Server{Handler: New(newFake(), nil)}
	go srv.Serve(l)
	_, err = Listen(path)
	if want := "another daemon is listening on " + path; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("second Listen: %v, want %q", err, want)
	}
	srv.Close()
	l.Close() // in case Serve had not started when srv.Close ran
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}

	// A stale socket (its daemon died without removing it) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	l, err = Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l.Close()

	// A file that is not a socket is left alone.
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("Listen over a regular file: %v, want \"is not a socket\"", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Errorf("regular file changed to %q", b)
	}
}

func TestPeerCredentialsRefused(t *testing.T) {
	var mu sync.Mutex
	var uids []uint32
	old := allowPeer
	allowPeer = func(uid uint32) bool {
		mu.Lock()
		defer mu.Unlock()
		uids = append(uids, uid)
		return false
	}
	t.Cleanup(func() { allowPeer = old })
	path := serve(t, newFake())

	_, err := api.NewClient(path).Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "closed the connection") {
		t.Errorf("as a refused user: %v, want the connection closed", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := uint32(os.Geteuid()); len(uids) == 0 || uids[0] != want {
		t.Errorf("peer uids checked %v, want [%d]", uids, want)
	}
}

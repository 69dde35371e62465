package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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

// serve runs the API for c on a fresh socket and returns its path.
func serve(t *testing.T, c Controller) string {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "run", "api.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewServer(c, slog.New(slog.DiscardHandler))}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return path
}

func TestClientRoundTrip(t *testing.T) {
	f := newFake()
	path := serve(t, f)
	c := NewClient(path)
	ctx := context.Background()
	web := mustRef("tcp/203.0.113.10:80")
	b12 := netip.MustParseAddr("198.18.0.12")

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Instance != "default" || st.Reconcile != 1500*time.Microsecond || len(st.Interfaces) != 1 {
		t.Errorf("Status() = %+v, want the fake's", st)
	}

	ipv6 := VIP{VIPRef: mustRef("udp/[2001:db8::1]:53"), Mode: "dsr",
		Backends: []Backend{{Address: netip.MustParseAddr("2001:db8:1::2"), Weight: 1, MAC: "02:00:00:00:00:01"}}}
	if err := c.AddVIP(ctx, ipv6); err != nil {
		t.Fatal(err)
	}
	if f.last != "AddVIP udp/[2001:db8::1]:53" {
		t.Errorf("last call %q", f.last)
	}
	vips, err := c.ListVIPs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vips) != 2 || vips[1].VIPRef != ipv6.VIPRef || vips[1].Backends[0].MAC != "02:00:00:00:00:01" {
		t.Errorf("ListVIPs() = %+v, want web and the IPv6 VIP", vips)
	}

	if err := c.AddBackend(ctx, ipv6.VIPRef, Backend{Address: netip.MustParseAddr("2001:db8:1::3"), Weight: 4}); err != nil {
		t.Fatal(err)
	}
	if f.last != "AddBackend udp/[2001:db8::1]:53 2001:db8:1::3 4" {
		t.Errorf("last call %q", f.last)
	}
	if err := c.SetWeight(ctx, ipv6.VIPRef, netip.MustParseAddr("2001:db8:1::3"), 0); err != nil {
		t.Fatal(err)
	}
	if f.last != "SetWeight udp/[2001:db8::1]:53 2001:db8:1::3 0" {
		t.Errorf("last call %q", f.last)
	}
	if err := c.RemoveBackend(ctx, ipv6.VIPRef, netip.MustParseAddr("2001:db8:1::3")); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveVIP(ctx, ipv6.VIPRef); err != nil {
		t.Fatal(err)
	}
	if f.last != "RemoveVIP udp/[2001:db8::1]:53" {
		t.Errorf("last call %q", f.last)
	}

	stats, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(stats.VIPs) != 1 || stats.VIPs[0].Counter.ByteRate != 3.4e6 || stats.Interval != time.Second {
		t.Errorf("Stats() = %+v", stats)
	}
	ex, err := c.Explain(ctx, ExplainRequest{Src: netip.MustParseAddr("198.19.1.2"), Dst: web.Address, Protocol: "tcp", Sport: 40000, Dport: 80})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Backend != b12 || ex.Slot != 1234 {
		t.Errorf("Explain() = %+v", ex)
	}
	res, err := c.Apply(ctx, []byte("vips: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Added, []string{"udp/203.0.113.11:53"}) || string(f.cfg) != "vips: []\n" {
		t.Errorf("Apply() = %+v, controller got %q", res, f.cfg)
	}
}

func TestClientErrorsMatchSentinels(t *testing.T) {
	f := newFake()
	c := NewClient(serve(t, f))
	ctx := context.Background()
	web := mustRef("tcp/203.0.113.10:80")

	err := c.RemoveVIP(ctx, mustRef("tcp/203.0.113.99:80"))
	if !errors.Is(err, ErrNotFound) || err.Error() != "vip tcp/203.0.113.99:80: not found" {
		t.Errorf("remove a missing VIP: %v, want the server's message wrapping ErrNotFound", err)
	}
	err = c.AddVIP(ctx, VIP{VIPRef: web, Mode: "dsr"})
	if !errors.Is(err, ErrConflict) {
		t.Errorf("add an existing VIP: %v, want ErrConflict", err)
	}
	err = c.AddBackend(ctx, web, Backend{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"address" is required`) {
		t.Errorf("add a backend without address: %v, want ErrInvalid naming the field", err)
	}
	f.err = errors.New("update map: no space left")
	_, err = c.Status(ctx)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 500 || errors.Is(err, ErrInvalid) || err.Error() != "update map: no space left" {
		t.Errorf("controller failure: %v, want a StatusError 500 with its message", err)
	}
}

func TestClientNoDaemon(t *testing.T) {
	dir := shortTempDir(t)
	missing := filepath.Join(dir, "missing.sock")
	_, err := NewClient(missing).Status(context.Background())
	want := "cannot reach the fulcrum daemon at " + missing + ": is it running? (fulcrum daemon --config FILE)"
	if err == nil || err.Error() != want {
		t.Errorf("no socket: %v, want %q", err, want)
	}

	// A socket file that nobody listens on any more.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	_, err = NewClient(stale).Stats(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach the fulcrum daemon at "+stale) {
		t.Errorf("stale socket: %v, want cannot reach", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("stale socket: %v does not unwrap to ECONNREFUSED", err)
	}
}

func TestClientPermissionDenied(t *testing.T) {
	// Root passes file permissions, so feed the mapping the error a
	// non-root user's connect(2) gets.
	c := NewClient("/run/fulcrum/default.sock")
	dialErr := &url.Error{Op: "Get", URL: "http://fulcrum/v1/status",
		Err: &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)}}
	err := c.connError(context.Background(), dialErr)
	want := "permission denied on /run/fulcrum/default.sock: the API is root-only, run as root"
	if err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("%v does not unwrap to os.ErrPermission", err)
	}
}

func TestClientContextCancelled(t *testing.T) {
	f := newFake()
	f.hold = time.Second
	c := NewClient(serve(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.SetWeight(ctx, mustRef("tcp/203.0.113.10:80"), netip.MustParseAddr("198.18.0.11"), 3)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want a deadline error", err)
	}
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
	srv := &http.Server{Handler: NewServer(newFake(), nil)}
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

	_, err := NewClient(path).Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "closed the connection") {
		t.Errorf("as a refused user: %v, want the connection closed", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := uint32(os.Geteuid()); len(uids) == 0 || uids[0] != want {
		t.Errorf("peer uids checked %v, want [%d]", uids, want)
	}
}

func TestStatusErrorWithoutJSONBody(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream exploded", http.StatusBadGateway)
	})
	path := filepath.Join(shortTempDir(t), "x.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Close()
	_, err = NewClient(path).Status(context.Background())
	if want := fmt.Sprintf("daemon answered %d %s: upstream exploded", http.StatusBadGateway, http.StatusText(http.StatusBadGateway)); err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

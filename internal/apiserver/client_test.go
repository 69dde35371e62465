package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// The Client of pkg/api is tested here, next to the server and its test
// fake: against the real server, against no daemon and against a foreign
// server.

// A Client has a method for every method of Controller, with the same
// signature: the CLI and the daemon stay in step.
var _ Controller = (*api.Client)(nil)

// serve runs the API for c on a fresh socket and returns its path.
func serve(t *testing.T, c Controller) string {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "run", "api.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: New(c, slog.New(slog.DiscardHandler))}
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
	c := api.NewClient(path)
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

	ipv6 := api.VIP{VIPRef: mustRef("udp/[2001:db8::1]:53"), Mode: "dsr",
		Backends: []api.Backend{{Address: netip.MustParseAddr("2001:db8:1::2"), Weight: 1, MAC: "02:00:00:00:00:01"}}}
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

	if err := c.AddBackend(ctx, ipv6.VIPRef, api.Backend{Address: netip.MustParseAddr("2001:db8:1::3"), Weight: 4}); err != nil {
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
	ex, err := c.Explain(ctx, api.ExplainRequest{Src: netip.MustParseAddr("198.19.1.2"), Dst: web.Address, Protocol: "tcp", Sport: 40000, Dport: 80})
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
	mutations := f.mutations.Load()
	plan, err := c.Plan(ctx, []byte("vips: [] # plan\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.last != "Plan" || string(f.cfg) != "vips: [] # plan\n" || len(plan.Changed) != 1 || plan.Changed[0].MovedSlots != 100 ||
		plan.Added == nil || plan.Changed[0].Backends == nil || f.mutations.Load() != mutations {
		t.Errorf("Plan() = %+v (last call %q, body %q, %d mutations); want the fake's plan, lists not null, no mutation",
			plan, f.last, f.cfg, f.mutations.Load()-mutations)
	}
	rc, err := c.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f.last != "Config" || rc.YAML != "interfaces:\n  - name: eth0\n" {
		t.Errorf("Config() = %+v (last call %q), want the fake's", rc, f.last)
	}
}

func TestClientErrorsMatchSentinels(t *testing.T) {
	f := newFake()
	c := api.NewClient(serve(t, f))
	ctx := context.Background()
	web := mustRef("tcp/203.0.113.10:80")

	err := c.RemoveVIP(ctx, mustRef("tcp/203.0.113.99:80"))
	if !errors.Is(err, api.ErrNotFound) || err.Error() != "vip tcp/203.0.113.99:80: not found" {
		t.Errorf("remove a missing VIP: %v, want the server's message wrapping ErrNotFound", err)
	}
	err = c.AddVIP(ctx, api.VIP{VIPRef: web, Mode: "dsr"})
	if !errors.Is(err, api.ErrConflict) {
		t.Errorf("add an existing VIP: %v, want ErrConflict", err)
	}
	err = c.AddBackend(ctx, web, api.Backend{})
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), `"address" is required`) {
		t.Errorf("add a backend without address: %v, want ErrInvalid naming the field", err)
	}
	f.err = errors.New("update map: no space left")
	_, err = c.Status(ctx)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != 500 || errors.Is(err, api.ErrInvalid) || err.Error() != "update map: no space left" {
		t.Errorf("controller failure: %v, want a StatusError 500 with its message", err)
	}
}

func TestClientNoDaemon(t *testing.T) {
	dir := shortTempDir(t)
	missing := filepath.Join(dir, "missing.sock")
	_, err := api.NewClient(missing).Status(context.Background())
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
	_, err = api.NewClient(stale).Stats(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach the fulcrum daemon at "+stale) {
		t.Errorf("stale socket: %v, want cannot reach", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("stale socket: %v does not unwrap to ECONNREFUSED", err)
	}
}

func TestClientContextCancelled(t *testing.T) {
	f := newFake()
	f.hold = time.Second
	c := api.NewClient(serve(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.SetWeight(ctx, mustRef("tcp/203.0.113.10:80"), netip.MustParseAddr("198.18.0.11"), 3)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want a deadline error", err)
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
	_, err = api.NewClient(path).Status(context.Background())
	if want := fmt.Sprintf("daemon answered %d %s: upstream exploded", http.StatusBadGateway, http.StatusText(http.StatusBadGateway)); err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

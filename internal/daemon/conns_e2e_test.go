package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// connsVIP is the echo VIP the connection tests use.
var connsVIP = api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}

// TestConnCounts runs long-lived TCP connections through the daemon: each
// backend's active count (API, listing, metric) equals the connections the
// backend really holds; connections the clients close turn inactive;
// `backend drain --wait` times out with exit status 3 while a connection
// stays, and returns 0 as the last one closes; a flush empties a backend.
func TestConnCounts(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(h.config())
	h.startDaemon()
	const n = 300
	conns := h.openConns(n, vip4)
	byBackend := make(map[string][]*conn)
	for _, c := range conns {
		byBackend[c.backend] = append(byBackend[c.backend], c)
	}
	addrOf := make(map[string]netip.Addr)
	for i, b := range h.topo.Backends {
		addrOf[fmt.Sprintf("backend%d", i+1)] = b.IPv4
	}
	if len(byBackend) < 3 {
		t.Fatalf("the %d connections reached %d backends, want all 3", n, len(byBackend))
	}
	want := func(closed map[string]int) map[netip.Addr]api.BackendConns {
		out := make(map[netip.Addr]api.BackendConns)
		for name, cs := range byBackend {
			out[addrOf[name]] = api.BackendConns{Active: uint64(len(cs) - closed[name]), Inactive: uint64(closed[name])}
		}
		return out
	}

	// The counts the API shows (the fast path's, corrected by the
	// daemon's periodic walk) reach the connections the clients hold, and
	// so do the listing's and the backends' own.
	h.waitCounts(want(nil))
	h.checkListing(want(nil))
	// The counts listed are the fast path's; a drain's count is a walk
	// of the table begun now: the two agree.
	for _, b := range h.topo.Backends {
		walked, err := h.client.BackendConns(context.Background(), connsVIP, b.IPv4, 0)
		if w := want(nil)[b.IPv4]; err != nil || walked.Active != w.Active || walked.Inactive != w.Inactive {
			t.Errorf("backend %s by a walk: %+v, %v; the fast path's counts %+v", b.IPv4, walked, err, w)
		}
	}
	for i, b := range h.topo.Backends {
		if got, wantN := h.heldBy(i), len(byBackend[fmt.Sprintf("backend%d", i+1)]); got != wantN {
			t.Errorf("backend%d holds %d established connections from the client, the clients %d", i+1, got, wantN)
		}
		series := fmt.Sprintf(`fulcrum_backend_connections{backend="%s",state="active",vip="tcp/203.0.113.10:9000"}`, b.IPv4)
		if got := metricValue(t, h.scrape(), series); got != float64(len(byBackend[fmt.Sprintf("backend%d", i+1)])) {
			t.Errorf("%s = %v, want %d", series, got, len(byBackend[fmt.Sprintf("backend%d", i+1)]))
		}
	}

	// The clients of backend1 close (FIN): its entries turn inactive.
	closed := map[string]int{}
	for _, c := range byBackend["backend1"] {
		c.c.Close()
		closed["backend1"]++
	}
	h.waitCounts(want(closed))
	h.checkListing(want(closed))
	require.Eventually(t, 5*time.Second, func() error {
		if got := h.heldBy(0); got != 0 {
			return fmt.Errorf("backend1 still holds %d established connections", got)
		}
		return nil
	})

	// Drain backend2 while its connections stay: the wait times out with
	// exit status 3.
	b2 := addrOf["backend2"]
	start := time.Now()
	out, err := h.cli("backend", "drain", connsVIP.String(), b2.String(), "--wait", "--timeout", "1s")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(out, fmt.Sprintf("still holds %d active connections after 1s", len(byBackend["backend2"]))) {
		t.Fatalf("drain --wait with connections open: %v\n%s", err, out)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("drain --wait --timeout 1s gave up after %v", took)
	}

	// Again, with time: it waits while one connection is left, and
	// returns 0 once that one closes.
	cmd := exec.Command(h.bin, "--socket", h.socket, "backend", "drain", connsVIP.String(), b2.String(), "--wait", "--timeout", "60s")
	var buf strings.Builder
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	last := byBackend["backend2"][len(byBackend["backend2"])-1]
	for _, c := range byBackend["backend2"][:len(byBackend["backend2"])-1] {
		c.c.Close()
		closed["backend2"]++
	}
	// Each close is seen (only the last stays active) while drain waits.
	h.waitCounts(want(closed))
	live, err := h.client.BackendConns(context.Background(), connsVIP, b2, 0)
	if err != nil || live.Active != 1 {
		t.Fatalf("backend2 with one connection left: %+v, %v", live, err)
	}
	select {
	case err := <-done:
		t.Fatalf("drain --wait returned with a connection still open: %v\n%s", err, buf.String())
	default:
	}
	if _, err := last.exchange("still here"); err != nil {
		t.Fatalf("the last connection of the drained backend broke: %v", err)
	}
	closedAt := time.Now()
	last.c.Close()
	closed["backend2"]++
	select {
	case err := <-done:
		if err != nil || !strings.Contains(buf.String(), "no active connection left") {
			t.Fatalf("drain --wait after the last close: %v\n%s", err, buf.String())
		}
		t.Logf("drain --wait returned %v after the last connection closed", time.Since(closedAt))
	case <-time.After(10 * time.Second):
		t.Fatalf("drain --wait did not return within 10s of the last close\n%s", buf.String())
	}

	// A flush of backend3 deletes its entries: the counts drop to zero.
	out, err = h.cli("conn", "flush", connsVIP.String(), "--backend", addrOf["backend3"].String(), "--yes")
	if wantOut := fmt.Sprintf("deleted %d connection entries of %s backend %s\n", len(byBackend["backend3"]), connsVIP, addrOf["backend3"]); err != nil || out != wantOut {
		t.Fatalf("conn flush: %v: %q, want %q", err, out, wantOut)
	}
	b3, err := h.client.BackendConns(context.Background(), connsVIP, addrOf["backend3"], 0)
	if err != nil || b3.Active != 0 || b3.Inactive != 0 {
		t.Fatalf("backend3 after the flush: %+v, %v", b3, err)
	}
}

// waitCounts waits until the VIP's backends in the API's listing carry
// the counts want (the fast path's, corrected by a walk every 2 s).
func (h *harness) waitCounts(want map[netip.Addr]api.BackendConns) {
	h.t.Helper()
	require.Eventually(h.t, 10*time.Second, func() error {
		vips, err := h.client.ListVIPs(context.Background())
		if err != nil {
			return err
		}
		for _, v := range vips {
			if v.VIPRef != connsVIP {
				continue
			}
			for _, b := range v.Backends {
				w := want[b.Address]
				if b.Active != w.Active || b.Inactive != w.Inactive {
					return fmt.Errorf("backend %s: %d active, %d inactive; want %d, %d", b.Address, b.Active, b.Inactive, w.Active, w.Inactive)
				}
			}
			return nil
		}
		return fmt.Errorf("no vip %s", connsVIP)
	})
}

// checkListing requires `fulcrum conn list VIP -o json` to show exactly
// the counts want, and its table the same total.
func (h *harness) checkListing(want map[netip.Addr]api.BackendConns) {
	h.t.Helper()
	out, err := h.cli("conn", "list", connsVIP.String(), "-o", "json")
	if err != nil {
		h.t.Fatalf("conn list: %v\n%s", err, out)
	}
	got := make(map[netip.Addr]api.BackendConns)
	total := 0
	for line := range strings.Lines(out) {
		var c api.Conn
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			h.t.Fatalf("conn list -o json: %q: %v", line, err)
		}
		if c.VIP != connsVIP || c.Client.Addr() != h.topo.Client.IPv4 {
			h.t.Fatalf("conn list %s listed %+v", connsVIP, c)
		}
		n := got[c.Backend]
		if c.State == "established" {
			n.Active++
		} else {
			n.Inactive++
		}
		got[c.Backend] = n
		total++
	}
	for a, w := range want {
		if got[a] != w {
			h.t.Errorf("conn list: backend %s: %d active, %d inactive; want %d, %d", a, got[a].Active, got[a].Inactive, w.Active, w.Inactive)
		}
	}
	if len(got) > len(want) {
		h.t.Errorf("conn list: backends %v, want %v", got, want)
	}
	out, err = h.cli("conn", "list", connsVIP.String())
	if err != nil || !strings.HasSuffix(out, fmt.Sprintf("\n%d entries\n", total)) {
		h.t.Errorf("conn list (table): %v, ends %q; want %d entries", err, out[max(0, len(out)-40):], total)
	}
}

// heldBy counts the established connections from the client that backend
// i's echo server holds, as its kernel sees them.
func (h *harness) heldBy(i int) int {
	h.t.Helper()
	out, err := h.topo.Backends[i].Run(context.Background(), "ss", "-Htn", "state", "established", "sport", "=", ":9000", "dst", h.topo.Client.IPv4.String())
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.Count(out, "\n")
}

// TestConnCountsTimeout: connections the clients close turn inactive and,
// once idle past the FIN timeout (3 s here, set short so the test waits
// seconds), leave the counts, the listing and the table: a walk begun
// after the timeout finds none of them.
func TestConnCountsTimeout(t *testing.T) {
	h := newHarness(t)
	const finTimeout = 3 * time.Second
	h.writeConfig(strings.Replace(h.config(), "entries: 65536", "entries: 65536\n  timeouts: {tcp_fin: 3s}", 1))
	h.startDaemon()
	const n = 30
	conns := h.openConns(n, vip4)
	perBackend := make(map[netip.Addr]uint64)
	for i, b := range h.topo.Backends {
		for _, c := range conns {
			if c.backend == fmt.Sprintf("backend%d", i+1) {
				perBackend[b.IPv4]++
			}
		}
	}
	walked := func() (active, inactive uint64) {
		for _, b := range h.topo.Backends {
			got, err := h.client.BackendConns(context.Background(), connsVIP, b.IPv4, 0)
			if err != nil {
				t.Fatal(err)
			}
			active, inactive = active+got.Active, inactive+got.Inactive
		}
		return active, inactive
	}
	if a, i := walked(); a != n || i != 0 {
		t.Fatalf("before the clients close: %d active, %d inactive; want %d, 0", a, i, n)
	}

	closedAt := time.Now()
	for _, c := range conns {
		c.c.Close()
	}
	// Inactive while younger than the timeout: each walk asks the table
	// now, so this sees the FINs within milliseconds.
	require.Eventually(t, finTimeout/2, func() error {
		if a, i := walked(); a != 0 || i != n {
			return fmt.Errorf("after the clients' FIN: %d active, %d inactive; want 0, %d", a, i, n)
		}
		return nil
	})
	if early := time.Since(closedAt); early >= finTimeout {
		t.Fatalf("the FINs took %v to be seen, past the %v timeout: the test cannot tell inactive from gone", early, finTimeout)
	}
	// Gone once idle past it, and not before.
	var goneAfter time.Duration
	require.Eventually(t, finTimeout+10*time.Second, func() error {
		if a, i := walked(); a != 0 || i != 0 {
			return fmt.Errorf("%v after the clients' FIN: %d active, %d inactive; want none past the %v timeout", time.Since(closedAt), a, i, finTimeout)
		}
		goneAfter = time.Since(closedAt)
		return nil
	})
	if goneAfter < finTimeout-time.Second {
		t.Errorf("the entries were gone %v after the FIN, before the %v timeout", goneAfter, finTimeout)
	}
	// The counts the API lists (the fast path's, corrected by the walk)
	// and the listing follow.
	none := make(map[netip.Addr]api.BackendConns)
	h.waitCounts(none)
	h.checkListing(none)
	t.Logf("%d connections (%v per backend) inactive after their FIN, gone %v after it (tcp_fin %v)", n, perBackend, goneAfter.Round(10*time.Millisecond), finTimeout)
}

package daemon_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// TestSystemdNotify runs the daemon as systemd would run
// deploy/systemd/fulcrum.service: with only the capabilities of the unit's
// CapabilityBoundingSet and no new privileges (setpriv), and NOTIFY_SOCKET
// naming a unixgram socket the test owns (Type=notify). READY=1
// must be the first thing on it, and when it arrives the XDP program must
// already be attached to lb1's eth0 and every VIP of the config
// reconciled (the API answers with all of them); a SIGHUP reload is
// framed by RELOADING=1 and READY=1; SIGTERM sends STOPPING=1.
func TestSystemdNotify(t *testing.T) {
	h := newHarness(t)
	// A socket file, not an abstract one: abstract unix sockets belong to
	// a network namespace, and the daemon runs in lb1's.
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	require.Tool(t, "setpriv")
	h.wrap = []string{"setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all," + unitCapabilities(t),
		"env", "NOTIFY_SOCKET=" + sock}
	h.writeConfig(h.config())
	if h.xdpAttached() {
		t.Fatal("XDP attached to lb1's eth0 before the daemon started")
	}
	// What the daemon has done is looked at the moment READY=1 arrives,
	// before startDaemon (which waits for the API) returns: the reader
	// runs from before the daemon starts.
	type atReady struct {
		msg      string
		err      error
		attached bool
		vips     int
		vipsErr  error
	}
	first := make(chan atReady, 1)
	go func() {
		var r atReady
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		r.msg, r.err = string(buf[:n]), err
		if err == nil {
			r.attached = h.xdpAttached()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			vips, err := h.client.ListVIPs(ctx)
			cancel()
			r.vips, r.vipsErr = len(vips), err
		}
		first <- r
	}()
	h.startDaemon()

	r := <-first
	if r.err != nil {
		t.Fatalf("nothing at the notify socket: %v\ndaemon log:\n%s", r.err, h.log())
	}
	if r.msg != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", r.msg)
	}
	if !r.attached {
		t.Fatal("at READY=1 no XDP program is attached to lb1's eth0")
	}
	if r.vipsErr != nil || r.vips != 5 {
		t.Fatalf("at READY=1 the API lists %d VIPs (err %v), want the config's 5", r.vips, r.vipsErr)
	}
	receive := func(within time.Duration) string {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(within))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("nothing at the notify socket within %v: %v\ndaemon log:\n%s", within, err, h.log())
		}
		return string(buf[:n])
	}
	// Nothing more until told.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 4096)); err == nil {
		t.Fatalf("a second notification without a signal: %d bytes", n)
	}

	// A reload: one VIP's weights change.
	h.writeConfig(h.config(2, 1, 1))
	if err := syscall.Kill(h.daemon.Process.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloading := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`)
	if got := receive(5 * time.Second); !reloading.MatchString(got) {
		t.Fatalf("on SIGHUP: %q, want RELOADING=1 with MONOTONIC_USEC", got)
	}
	if got := receive(10 * time.Second); got != "READY=1" {
		t.Fatalf("after the reload: %q, want READY=1", got)
	}

	if err := syscall.Kill(h.daemon.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := receive(10 * time.Second); got != "STOPPING=1" {
		t.Fatalf("on SIGTERM: %q, want STOPPING=1", got)
	}
	// With the unit's capabilities the daemon can still tell that its
	// pins outlive it (it reads its outer namespace's mounts).
	if log := h.log(); !strings.Contains(log, "pins outlive this process") || strings.Contains(log, "level=WARN") {
		t.Errorf("the daemon warned under the unit's capabilities; want no warning and 'pins outlive this process':\n%s", log)
	}
}

// unitCapabilities reads the unit's CapabilityBoundingSet as setpriv takes
// it: "+bpf,+net_admin,...".
func unitCapabilities(t *testing.T) string {
	t.Helper()
	unit, err := os.ReadFile("../../deploy/systemd/fulcrum.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(unit), "\n") {
		v, ok := strings.CutPrefix(line, "CapabilityBoundingSet=")
		if !ok {
			continue
		}
		var caps []string
		for _, c := range strings.Fields(v) {
			caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
		}
		return strings.Join(caps, ",")
	}
	t.Fatal("deploy/systemd/fulcrum.service has no CapabilityBoundingSet=")
	return ""
}

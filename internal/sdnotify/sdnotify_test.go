package sdnotify

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// listen opens a unixgram socket the test owns at name (a path, or
// "@..." for the abstract namespace) and points NOTIFY_SOCKET at it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return conn
}

// receive reads one datagram, failing after 5 s.
func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no datagram at the notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestNotifyPath(t *testing.T) {
	conn := listen(t, filepath.Join(t.TempDir(), "notify"))
	if err := Notify(Ready); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, conn); got != "READY=1" {
		t.Errorf("got %q, want %q", got, "READY=1")
	}
	// Several states go in one datagram, one per line.
	if err := Notify(Stopping, "STATUS=bye"); err != nil {
		t.Fatal(err)
	}
	if got, want := receive(t, conn), "STOPPING=1\nSTATUS=bye"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := fmt.Sprintf("@fulcrum-sdnotify-test-%d", time.Now().UnixNano())
	conn := listen(t, name)
	if err := Notify(Ready); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, conn); got != "READY=1" {
		t.Errorf("got %q, want %q", got, "READY=1")
	}
}

func TestReloading(t *testing.T) {
	conn := listen(t, filepath.Join(t.TempDir(), "notify"))
	if err := Notify(Reloading()); err != nil {
		t.Fatal(err)
	}
	got := receive(t, conn)
	if !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`).MatchString(got) {
		t.Errorf("got %q, want RELOADING=1 and MONOTONIC_USEC=<microseconds>", got)
	}
}

func TestNotifyUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify(Ready); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want nil", err)
	}
}

func TestNotifyErrors(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "relative/sock")
	if err := Notify(Ready); err == nil || !strings.Contains(err.Error(), `NOTIFY_SOCKET="relative/sock"`) {
		t.Errorf("relative path: %v, want an error naming it", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	if err := Notify(Ready); err == nil || !strings.Contains(err.Error(), "sd_notify") {
		t.Errorf("no listener: %v, want an sd_notify error", err)
	}
}

package api

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
)

// The Client's tests against sockets (the daemon's real server, no
// daemon, a foreign server) are in internal/apiserver, next to the server.

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

func TestEscapeSegment(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"tcp/203.0.113.10:80", "tcp%2F203.0.113.10:80"},
		{"udp/[2001:db8::1]:53", "udp%2F%5B2001:db8::1%5D:53"},
	} {
		if got := escapeSegment(tt.in); got != tt.want {
			t.Errorf("escapeSegment(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

package apiserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// allowPeer decides from a connecting process's uid whether it may use
// the API: root, or the user the daemon itself runs as (only for tests
// and unprivileged development runs; a real daemon is root).
var allowPeer = func(uid uint32) bool {
	return uid == 0 || uid == uint32(os.Geteuid())
}

// Listen listens on the Unix socket at path for the API, which only root
// may use:
//   - the parent directory is created (0755) if missing;
//   - a socket file left by a daemon that is gone is removed, but if a
//     daemon still answers on it Listen fails ("another daemon is
//     listening on PATH"), and a file that is not a socket is left alone;
//   - the socket is chmod 0600, so only its owner (root) can connect;
//   - every accepted connection's peer credentials (SO_PEERCRED) are
//     checked, and a connection from another uid is closed before any
//     request is read and logged (once per uid) through slog.Default.
//
// Closing the listener removes the socket file.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("api socket: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api socket: %w", err)
	}
	return &peerListener{Listener: l, path: path, allow: allowPeer, logged: map[uint32]bool{}}, nil
}

// removeStale removes a socket file at path that nothing answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("api socket: %s exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("api socket: another daemon is listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("api socket: cannot tell whether a daemon listens on %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("api socket: remove stale %s: %w", path, err)
	}
	return nil
}

// peerListener accepts only connections whose peer passes allowPeer.
type peerListener struct {
	net.Listener
	path  string
	allow func(uid uint32) bool

	mu     sync.Mutex
	logged map[uint32]bool // uids already logged as refused
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && l.allow(uid) {
			return c, nil
		}
		c.Close()
		l.refused(uid, err)
	}
}

func (l *peerListener) refused(uid uint32, err error) {
	if err != nil {
		slog.Default().Warn("api: refused a connection whose peer credentials cannot be read", "socket", l.path, "err", err)
		return
	}
	l.mu.Lock()
	seen := l.logged[uid]
	if !seen && len(l.logged) < 1024 {
		l.logged[uid] = true
	}
	l.mu.Unlock()
	if !seen {
		slog.Default().Warn("api: refused a connection from a non-root user (further refusals of this uid are not logged)", "socket", l.path, "uid", uid)
	}
}

// peerUID returns the uid of the process at the other end of a Unix
// socket connection, from SO_PEERCRED.
func peerUID(c net.Conn) (uint32, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("connection of type %T has no peer credentials", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred.Uid, nil
}

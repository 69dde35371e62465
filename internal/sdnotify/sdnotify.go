// Package sdnotify tells systemd how a Type=notify service is doing: it
// sends state lines ("READY=1", "STOPPING=1", ...) as one datagram to the
// unix socket named by $NOTIFY_SOCKET (sd_notify(3)). Without that
// variable, as outside systemd, every call does nothing.
//
// It is the protocol's few lines rather than go-systemd's daemon package:
// that is the only thing needed from go-systemd, and the protocol is
// stable and small enough to test whole here (a socket the test owns).
// No watchdog: the daemon keeps none (WatchdogSec= is not set in the
// unit), so nothing sends WATCHDOG=1.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// States the daemon sends.
const (
	// Ready: start-up is finished, or a reload is.
	Ready = "READY=1"
	// Stopping: the service is shutting down.
	Stopping = "STOPPING=1"
)

// Reloading is the state sent when a reload starts. systemd (253 and
// later) wants the CLOCK_MONOTONIC time with it, to tell this reload from
// an earlier one; Ready ends it.
func Reloading() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "RELOADING=1"
	}
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000)
}

// Notify sends the states, one per line, in one datagram to
// $NOTIFY_SOCKET. It returns nil without doing anything if the variable
// is unset. A name starting with '@' is a socket in the abstract
// namespace (the '@' stands for the leading NUL byte).
func Notify(states ...string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] != '/' && name[0] != '@' {
		return fmt.Errorf("NOTIFY_SOCKET=%q: want an absolute path or an abstract socket (@name)", name)
	}
	// Go's net package maps a leading '@' to the abstract namespace.
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(states, "\n"))); err != nil {
		return fmt.Errorf("sd_notify to %s: %w", name, err)
	}
	return nil
}

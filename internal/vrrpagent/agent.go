// Package vrrpagent runs the VRRP protocol (internal/vrrp) in a process of its
// own, a child of the daemon, every thread of which has real-time priority.
//
// Why a process: a goroutine locked to a real-time thread still needs the
// Go scheduler. When sysmon takes its P away during a long ppoll or send,
// or preempts it, the goroutine can only run again once another thread of
// the process hands it a P, and in the daemon those threads are ordinary
// ones. With XDP keeping every CPU busy they wait for the CPU for tens of
// milliseconds, 100 ms and more at times, and the advertisements wait with
// them (perf traces of the protocol thread parked in futex(2) after a send;
// docs/vrrp.md). In a process of its own, where every thread is real-time
// and almost nothing else runs, those hand-offs take microseconds. It is
// keepalived's design too: its VRRP runs in a child process.
//
// The daemon talks to the agent over a Unix socket pair passed as the
// child's file descriptor 3, one JSON object per line: a hello with the
// configuration, answered by ready or an error, then requests (stats,
// priority offset, handover, resume, log level, stop), of which only stats
// is answered. The agent stops gracefully, advertising priority 0 and
// releasing its addresses, on a stop request, on SIGINT/SIGTERM, and when
// the socket closes because the daemon died.
package vrrpagent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/vrrp"
)

// Command is the (hidden) fulcrum subcommand that runs Serve.
const Command = "vrrp-agent"

// controlFD is the agent's end of the socket pair: the first of
// exec.Cmd.ExtraFiles.
const controlFD = 3

const (
	// startTimeout bounds the agent's start: process start, hello, and
	// vrrp.New (sockets, netlink).
	startTimeout = 10 * time.Second
	// requestTimeout bounds a stats request: an agent that does not
	// answer in that time is stuck or dying, and Stats returns the last
	// answer instead of blocking the API.
	requestTimeout = 2 * time.Second
	// stopTimeout is how long Run waits for a graceful stop (priority 0
	// sent, addresses released) before it kills the agent.
	stopTimeout = 5 * time.Second
)

// hello is the daemon's first message.
type hello struct {
	Config vrrp.Config `json:"config"`
	Log    config.Log  `json:"log"`
	// Realtime is the SCHED_RR priority of the protocol thread; the
	// agent's other threads get one less (vrrp.Options.RealtimePriority).
	Realtime int `json:"realtime"`
}

// request is one of the daemon's later messages.
type request struct {
	Op     string     `json:"op"` // stats, offset, handover, resume, log_level, stop
	Offset int        `json:"offset,omitempty"`
	Level  slog.Level `json:"level"` // of log_level
}

// reply is the agent's answer to the hello (Ready or Error) and to stats.
type reply struct {
	Ready bool        `json:"ready,omitempty"`
	Error string      `json:"error,omitempty"`
	Stats *vrrp.Stats `json:"stats,omitempty"`
}

// Options say how to start the agent.
type Options struct {
	// Executable is the fulcrum binary; empty means this one
	// (os.Executable). Args follow it; nil means []string{Command}.
	Executable string
	Args       []string
	// Env is added to the agent's environment (tests use it to make a
	// test binary act as the agent).
	Env []string
	// LogOutput receives the agent's log lines; nil means os.Stderr.
	LogOutput io.Writer
	// Log is the daemon's log configuration.
	Log config.Log
	// RealtimePriority as in vrrp.Options: 0 is the default, negative
	// none.
	RealtimePriority int
}

// Agent is the daemon's handle on a running agent process.
type Agent struct {
	cmd  *exec.Cmd
	conn net.Conn
	rd   *bufio.Reader

	mu   sync.Mutex // one request (and its answer) at a time
	last vrrp.Stats // the last stats the agent gave

	exited  chan struct{} // closed when the process is gone
	waitErr error         // why, once exited is closed
	stopped bool          // Run asked it to stop (under mu)
}

// Start starts the agent for cfg and returns once it has opened its
// sockets and is about to run the protocol. The agent inherits the calling
// thread's network namespace: call Start from a thread in the namespace of
// the interface. A bad configuration or a missing interface is an error
// here, and no process is left behind.
func Start(cfg vrrp.Config, o Options) (*Agent, error) {
	exe := o.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("vrrp agent: %w", err)
		}
	}
	args := o.Args
	if args == nil {
		args = []string{Command}
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vrrp agent: socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "vrrp-agent-control"), os.NewFile(uintptr(fds[1]), "vrrp-agent-control")
	defer theirs.Close()
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, fmt.Errorf("vrrp agent: %w", err)
	}

	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = o.LogOutput
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("vrrp agent: start %s: %w", exe, err)
	}
	a := &Agent{cmd: cmd, conn: conn, rd: bufio.NewReader(conn), exited: make(chan struct{})}
	go func() {
		a.waitErr = cmd.Wait()
		close(a.exited)
	}()

	h := hello{Config: cfg, Log: o.Log, Realtime: o.RealtimePriority}
	var rep reply
	if err := a.roundTrip(h, &rep, startTimeout); err != nil {
		a.kill()
		return nil, fmt.Errorf("vrrp agent: no answer to the configuration: %w%s", err, a.exitNote())
	}
	if !rep.Ready {
		a.kill()
		// The agent's error is the router's, already prefixed "vrrp:".
		return nil, errors.New(rep.Error)
	}
	return a, nil
}

// Pid is the agent's process id.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Run waits until ctx ends, then stops the agent gracefully (it advertises
// priority 0 and releases its addresses) and waits for it to exit. It
// returns an error if the agent exits before ctx ends, exits with an error,
// or does not stop within stopTimeout (it is then killed).
func (a *Agent) Run(ctx context.Context) error {
	select {
	case <-a.exited:
		a.conn.Close()
		// Signalled together with the daemon (systemd stops the whole
		// unit), it stops by itself, cleanly, as the daemon does.
		if ctx.Err() != nil && a.waitErr == nil {
			return nil
		}
		return fmt.Errorf("vrrp agent (pid %d) exited%s", a.Pid(), a.exitNote())
	case <-ctx.Done():
	}
	// The request may fail: an agent signalled with the daemon (systemd
	// stops the whole unit) stops by itself and closes the socket. Either
	// way it has stopTimeout to finish.
	a.mu.Lock()
	a.stopped = true
	_ = a.send(request{Op: "stop"}, requestTimeout)
	a.mu.Unlock()
	select {
	case <-a.exited:
	case <-time.After(stopTimeout):
		a.kill()
		return fmt.Errorf("vrrp agent (pid %d) did not stop within %s; killed", a.Pid(), stopTimeout)
	}
	a.conn.Close()
	if a.waitErr != nil {
		return fmt.Errorf("vrrp agent (pid %d) stopped with %w", a.Pid(), a.waitErr)
	}
	return nil
}

// Stats returns the agent's state and counters. If the agent does not
// answer (it is gone, or stuck), it returns the last answer.
func (a *Agent) Stats() vrrp.Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	var rep reply
	if err := a.roundTrip(request{Op: "stats"}, &rep, requestTimeout); err == nil && rep.Stats != nil {
		a.last = *rep.Stats
	}
	return a.last
}

// State returns the agent's protocol state (see Stats).
func (a *Agent) State() vrrp.State { return a.Stats().State }

// SetPriorityOffset is vrrp.Router.SetPriorityOffset.
func (a *Agent) SetPriorityOffset(n int) { a.request(request{Op: "offset", Offset: n}) }

// Handover is vrrp.Router.Handover.
func (a *Agent) Handover() { a.request(request{Op: "handover"}) }

// Resume is vrrp.Router.Resume.
func (a *Agent) Resume() { a.request(request{Op: "resume"}) }

// SetLogLevel changes the agent's log level (on a reload of the daemon's).
func (a *Agent) SetLogLevel(level slog.Level) { a.request(request{Op: "log_level", Level: level}) }

// request sends a request that has no answer. An agent that is gone
// cannot take it; Run reports that.
func (a *Agent) request(q request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.stopped {
		_ = a.send(q, requestTimeout)
	}
}

func (a *Agent) send(v any, timeout time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_ = a.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err = a.conn.Write(append(b, '\n'))
	return err
}

// roundTrip sends v and reads one reply line into rep.
func (a *Agent) roundTrip(v any, rep *reply, timeout time.Duration) error {
	if err := a.send(v, timeout); err != nil {
		return err
	}
	_ = a.conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := a.rd.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, rep)
}

func (a *Agent) kill() {
	_ = a.cmd.Process.Kill()
	<-a.exited
	a.conn.Close()
}

// exitNote says how the process ended, if it has.
func (a *Agent) exitNote() string {
	select {
	case <-a.exited:
		if a.waitErr != nil {
			return " (" + a.waitErr.Error() + ")"
		}
		return " (exit status 0)"
	default:
		return ""
	}
}

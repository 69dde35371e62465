package vrrpagent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/vrrp"
)

// realtimeRecheck is how often the agent looks for threads the runtime
// started without real-time priority. New threads inherit the policy of
// the thread that creates them, so this finds none unless something
// changed it.
const realtimeRecheck = time.Second

// Serve is the agent's side, run by `fulcrum vrrp-agent` in the process
// the daemon started: it reads the configuration from file descriptor 3,
// runs the protocol and serves the daemon's requests until it is told to
// stop, is signalled, or the daemon goes away. It returns the protocol's
// error, if any.
func Serve(ctx context.Context) error {
	// Run by hand, fd 3 may be anything, the runtime's own epoll
	// descriptor included: touch it only if it is a Unix stream socket.
	if d, err := unix.GetsockoptInt(controlFD, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || d != unix.AF_UNIX {
		return fmt.Errorf("no control socket on fd %d (the daemon starts this command)", controlFD)
	}
	f := os.NewFile(controlFD, "vrrp-agent-control")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("control socket on fd %d: %w", controlFD, err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	line, err := rd.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read the configuration from the daemon: %w", err)
	}
	var h hello
	if err := json.Unmarshal(line, &h); err != nil {
		return fmt.Errorf("configuration from the daemon: %w", err)
	}
	// Replies go out one at a time: the hello's from here, the stats
	// from the request reader, which starts after it.
	answer := func(rep reply) {
		b, _ := json.Marshal(rep)
		_, _ = conn.Write(append(b, '\n'))
	}

	level := new(slog.LevelVar)
	log := h.Log.NewLogger(os.Stderr, level).With("pid", os.Getpid())
	// A P for the protocol thread after each wake-up, however many of
	// the agent's few goroutines run.
	if n := runtime.NumCPU() + 2; runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n)
	}
	ropts := vrrp.Options{Logger: log, RealtimePriority: h.Realtime}
	prio, err := ropts.Realtime()
	if err != nil {
		answer(reply{Error: err.Error()})
		return err
	}
	ctx, cancel := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if prio > 0 {
		// The protocol thread sets its own priority (prio); the other
		// threads, which hand it its P, get one less, so that none of
		// them delays it for a round-robin slice.
		helper := max(prio-1, 1)
		if err := realtimeThreads(helper); err != nil {
			log.Warn("vrrp agent: no real-time priority for its threads; advertisements may be late under load", "err", err)
		} else {
			go keepRealtime(ctx, helper, log)
		}
	}

	r, err := vrrp.New(h.Config, ropts)
	if err != nil {
		answer(reply{Error: err.Error()})
		return err
	}
	answer(reply{Ready: true})

	// Requests: the reader ends the protocol on stop and when the daemon
	// is gone (end of file), so that an agent never outlives its daemon.
	go func() {
		defer cancel()
		for {
			line, err := rd.ReadBytes('\n')
			if err != nil {
				return
			}
			var q request
			if err := json.Unmarshal(line, &q); err != nil {
				log.Warn("vrrp agent: bad request from the daemon", "err", err)
				continue
			}
			switch q.Op {
			case "stats":
				s := r.Stats()
				answer(reply{Stats: &s})
			case "offset":
				r.SetPriorityOffset(q.Offset)
			case "handover":
				r.Handover()
			case "resume":
				r.Resume()
			case "log_level":
				level.Set(q.Level)
			case "stop":
				return
			default:
				log.Warn("vrrp agent: unknown request from the daemon", "op", q.Op)
			}
		}
	}()
	return r.Run(ctx)
}

// realtimeThreads gives every thread of the process that runs under the
// ordinary scheduler SCHED_RR at prio. Threads already real-time (the
// protocol thread) keep their priority.
func realtimeThreads(prio int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // the thread is gone
		}
		if attr.Policy == unix.SCHED_RR || attr.Policy == unix.SCHED_FIFO {
			continue
		}
		want := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_RR, Priority: uint32(prio)}
		if err := unix.SchedSetAttr(tid, &want, 0); err != nil && err != unix.ESRCH {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return nil
}

func keepRealtime(ctx context.Context, prio int, log *slog.Logger) {
	tick := time.NewTicker(realtimeRecheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := realtimeThreads(prio); err != nil {
			log.Warn("vrrp agent: real-time priority", "err", err)
			return
		}
	}
}

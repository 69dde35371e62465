package vrrpagent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/vrrp"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// childEnv makes the test binary act as the agent (TestMain), so that the
// tests need no fulcrum binary.
const childEnv = "FULCRUM_VRRPAGENT_TEST_CHILD=1"

func TestMain(m *testing.M) {
	if os.Getenv("FULCRUM_VRRPAGENT_TEST_CHILD") == "1" {
		if err := Serve(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer collects the agent's log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func routerConfig(priority int) vrrp.Config {
	return vrrp.Config{
		Interface: testenv.MainIface, VRID: 51, Priority: priority, AdvertInterval: 10, Preempt: true,
		VirtualAddresses: []netip.Prefix{netip.MustParsePrefix("198.18.0.100/24")}, GratuitousCount: 1,
	}
}

// testOptions start this test binary as the agent, logging to log.
func testOptions(log *syncBuffer) Options {
	return Options{Executable: os.Args[0], Args: []string{}, Env: []string{childEnv}, LogOutput: log, Log: config.Log{Level: "debug"}}
}

// startIn starts an agent in h's namespace.
func startIn(t *testing.T, h *testenv.Host, cfg vrrp.Config, log *syncBuffer) *Agent {
	t.Helper()
	var a *Agent
	err := h.Do(func() error {
		var err error
		a, err = Start(cfg, testOptions(log))
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v\nagent log:\n%s", h.Role(), err, log)
	}
	t.Cleanup(func() { syscall.Kill(a.Pid(), syscall.SIGKILL) })
	return a
}

func waitState(t *testing.T, a *Agent, s vrrp.State, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for a.State() != s {
		if time.Now().After(deadline) {
			t.Fatalf("agent %d: state %s after %s, want %s", a.Pid(), a.State(), timeout, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAgent runs two agents, as two daemons would: lb1 (200) becomes
// master, lb2 (100) backup; every request reaches the router; stopping lb1
// hands over to lb2 at once (priority 0).
func TestAgent(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	var log1, log2 syncBuffer
	a1 := startIn(t, topo.LB1, routerConfig(200), &log1)
	a2 := startIn(t, topo.LB2, routerConfig(100), &log2)
	ctx1, stop1 := context.WithCancel(context.Background())
	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	run1, run2 := make(chan error, 1), make(chan error, 1)
	go func() { run1 <- a1.Run(ctx1) }()
	go func() { run2 <- a2.Run(ctx2) }()

	waitState(t, a1, vrrp.Master, 3*time.Second)
	waitState(t, a2, vrrp.Backup, 3*time.Second)
	if s := a2.Stats(); s.Master != testenv.LB1IPv4 || s.Priority != 100 || s.AdvertsReceived == 0 {
		t.Errorf("lb2: master %s, priority %d, %d adverts received; want lb1, 100, some", s.Master, s.Priority, s.AdvertsReceived)
	}

	// Every thread of the agent is real-time: the protocol thread at the
	// default priority, the others one below.
	checkRealtime(t, a1.Pid())

	// Requests reach the router.
	a1.SetPriorityOffset(-254)
	waitState(t, a2, vrrp.Master, 2*time.Second)
	if p := a1.Stats().Priority; p != 1 {
		t.Errorf("lb1 priority %d after offset -254, want 1", p)
	}
	a1.SetPriorityOffset(0)
	waitState(t, a1, vrrp.Master, 2*time.Second)
	waitState(t, a2, vrrp.Backup, 2*time.Second)
	a1.Handover()
	waitState(t, a2, vrrp.Master, 2*time.Second)
	waitState(t, a1, vrrp.Backup, 2*time.Second)
	a1.Resume()
	waitState(t, a1, vrrp.Master, 2*time.Second)
	waitState(t, a2, vrrp.Backup, 2*time.Second)

	// A graceful stop sends priority 0: lb2 takes over after its skew
	// time, well before master down.
	before := a2.Stats().PriorityZeroReceived
	stop1()
	if err := <-run1; err != nil {
		t.Errorf("lb1's Run: %v", err)
	}
	waitState(t, a2, vrrp.Master, time.Second)
	if got := a2.Stats().PriorityZeroReceived; got <= before {
		t.Errorf("lb2 received %d priority-0 advertisements after lb1 stopped, want more than %d", got, before)
	}
	if !strings.Contains(log1.String(), "vrrp: stopped") {
		t.Errorf("lb1's log has no stop:\n%s", log1.String())
	}
	// Its last stats remain readable.
	if s := a1.Stats(); s.State != vrrp.Master && s.State != vrrp.Backup {
		t.Errorf("lb1's last stats: state %s", s.State)
	}
}

// checkRealtime fails unless every thread of pid runs SCHED_RR, the
// protocol thread (the one with the highest priority) at
// vrrp.DefaultRealtimePriority and the others below it.
func checkRealtime(t *testing.T, pid int) {
	t.Helper()
	// The agent sets the threads it did not start with within
	// realtimeRecheck; the runtime may have started one just now.
	deadline := time.Now().Add(3 * realtimeRecheck)
	for {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			t.Fatal(err)
		}
		var bad []string
		top := 0
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			attr, err := unix.SchedGetAttr(tid, 0)
			if err != nil {
				continue
			}
			if attr.Policy != unix.SCHED_RR {
				bad = append(bad, fmt.Sprintf("thread %d: policy %d", tid, attr.Policy))
			}
			top = max(top, int(attr.Priority))
		}
		if top != vrrp.DefaultRealtimePriority {
			bad = append(bad, fmt.Sprintf("highest priority %d, want %d", top, vrrp.DefaultRealtimePriority))
		}
		if len(bad) == 0 {
			t.Logf("agent %d: %d threads, all SCHED_RR", pid, len(tasks))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %d: %s", pid, strings.Join(bad, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAgentBadConfig: the router's error comes back from Start, and no
// process is left.
func TestAgentBadConfig(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{Backends: 1})
	cfg := routerConfig(100)
	cfg.Interface = "nosuch0"
	var log syncBuffer
	err := topo.LB1.Do(func() error {
		_, err := Start(cfg, testOptions(&log))
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Fatalf("Start with interface nosuch0: %v, want an error naming it", err)
	}
	t.Logf("error: %v", err)
}

// TestAgentDeath: an agent that dies makes Run fail, naming it; the last
// stats stay readable. And an agent whose daemon goes away (its end of the
// socket closes) stops by itself, gracefully.
func TestAgentDeath(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{Backends: 1})
	var log syncBuffer
	a := startIn(t, topo.LB1, routerConfig(200), &log)
	waitState(t, a, vrrp.Master, 3*time.Second)
	if err := syscall.Kill(a.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := a.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Run after SIGKILL: %v, want an error saying the agent exited (signal: killed)", err)
	}
	if s := a.Stats(); s.State != vrrp.Master {
		t.Errorf("last stats after death: state %s, want master", s.State)
	}

	var log2 syncBuffer
	b := startIn(t, topo.LB1, routerConfig(200), &log2)
	waitState(t, b, vrrp.Master, 3*time.Second)
	b.conn.Close() // what the kernel does when the daemon dies
	select {
	case <-b.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("agent still running 5s after its socket closed\n%s", log2.String())
	}
	checkCleanStop(t, b, &log2)
}

// checkCleanStop fails unless the agent, which has exited, stopped
// gracefully: exit status 0, and the Router's stop in its log.
func checkCleanStop(t *testing.T, a *Agent, log *syncBuffer) {
	t.Helper()
	if a.waitErr != nil {
		t.Errorf("agent exit: %v, want a clean stop (status 0)", a.waitErr)
	}
	if !strings.Contains(log.String(), "vrrp: stopped") {
		t.Errorf("agent log has no graceful stop:\n%s", log.String())
	}
}

// TestAgentSignalledWithDaemon: systemd stops a unit by signalling every
// process in it, the agent too. The agent stops by itself, gracefully, and
// Run, whose ctx ends at the same time, reports no error.
func TestAgentSignalledWithDaemon(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{Backends: 1})
	var log syncBuffer
	a := startIn(t, topo.LB1, routerConfig(200), &log)
	waitState(t, a, vrrp.Master, 3*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	if err := syscall.Kill(a.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := a.Run(ctx); err != nil {
		t.Errorf("Run: %v, want nil after a stop by signal", err)
	}
	checkCleanStop(t, a, &log)
}

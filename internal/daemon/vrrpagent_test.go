package daemon_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/testenv"
)

var agentStarted = regexp.MustCompile(`msg="vrrp: agent started" pid=(\d+)`)

// agentPids returns the pids of the VRRP agents the node's daemons
// started, in order.
func (h *harness) agentPids() []int {
	var pids []int
	for _, m := range agentStarted.FindAllStringSubmatch(h.log(), -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	return pids
}

// gone reports whether pid has exited (a zombie counts: it runs nothing).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) STATE ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || strings.HasPrefix(s[i+1:], " Z")
}

// TestVRRPAgentLifecycle: the daemon's VRRP agent (a child process) ends
// with it, gracefully, and the daemon ends with its agent.
//
//   - kill -9 of the master's daemon: its agent sees the control socket
//     close, advertises priority 0 and exits, so the backup takes over
//     after its skew time (61 ms at priority 100), well before master down
//     (360 ms);
//   - a restarted daemon starts a new agent and takes mastership back;
//   - kill -9 of that agent: the daemon exits with an error naming it, and
//     the backup takes over.
func TestVRRPAgentLifecycle(t *testing.T) {
	h := newHarness(t, func(o *testenv.Options) { o.SecondLB = true; o.VIPNextHop = virtualAddr })
	lb1, lb2 := h, h.node(h.topo.LB2)
	lb1.writeConfig(lb1.vrrpConfig("lb1", 200))
	lb2.writeConfig(lb2.vrrpConfig("lb2", 100))
	lb1.startDaemon()
	lb1.waitVRRP("master", 5*time.Second)
	lb2.startDaemon()
	lb2.waitVRRP("backup", 5*time.Second)

	pids := lb1.agentPids()
	if len(pids) != 1 {
		t.Fatalf("lb1's log names %d agents, want 1:\n%s", len(pids), lb1.log())
	}
	if err := lb1.daemon.Process.Kill(); err != nil { // the daemon alone, not its process group
		t.Fatal(err)
	}
	killed := time.Now()
	lb2.waitVRRP("master", 2*time.Second)
	took := time.Since(killed)
	t.Logf("lb2 master %s after lb1's daemon was killed (polled every 20ms)", took.Round(time.Millisecond))
	if took > 250*time.Millisecond {
		t.Errorf("lb2 master %s after lb1's daemon was killed, want under 250ms (priority 0 from lb1's agent; master down is 360ms)", took)
	}
	for deadline := time.Now().Add(3 * time.Second); !gone(pids[0]); {
		if time.Now().After(deadline) {
			t.Fatalf("lb1's agent %d still runs 3s after its daemon was killed", pids[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(lb1.log(), "vrrp: stopped") {
		t.Errorf("lb1's agent logged no graceful stop:\n%s", lb1.log())
	}
	lb1.daemon.Wait()

	lb1.startDaemon()
	lb1.waitVRRP("master", 5*time.Second)
	lb2.waitVRRP("backup", 2*time.Second)
	pids = lb1.agentPids()
	if len(pids) != 2 || pids[1] == pids[0] {
		t.Fatalf("lb1's log names agents %v after the restart, want a second one", pids)
	}
	if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- lb1.daemon.Wait() }()
	select {
	case err := <-exited:
		if err == nil {
			t.Errorf("lb1's daemon exited cleanly after its agent was killed, want an error status")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("lb1's daemon still runs 10s after its agent was killed:\n%s", lb1.log())
	}
	want := "vrrp agent (pid " + strconv.Itoa(pids[1]) + ") exited (signal: killed)"
	if !strings.Contains(lb1.log(), want) {
		t.Errorf("lb1's log does not say %q:\n%s", want, lb1.log())
	}
	lb2.waitVRRP("master", 2*time.Second)
}

package daemon_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// TestTracking makes lb1 (priority 200, master) sick in each way VRRP
// tracking knows, with lb2 (100) as a healthy backup: lb1's priority must
// fall to 1, its reasons show in the API, and lb2 must take over; when lb1
// is well again it must preempt back.
//
//   - a second configured interface (trk0, one end of a veth pair inside lb1, generic XDP) goes down;
//   - every backend of a VIP is down: lb1 alone health-checks the TCP VIP
//     on a port nobody listens on, then a reload fixes the port;
//   - the balancer is detached from eth0 behind the daemon's back (the
//     pinned link is detached); a restarted daemon attaches it again.
func TestTracking(t *testing.T) {
	h := newHarness(t, func(o *testenv.Options) { o.SecondLB = true; o.VIPNextHop = virtualAddr })
	lb1, lb2 := h, h.node(h.topo.LB2)
	if _, err := h.topo.LB1.Run(bg(), "sh", "-c", "ip link add trk0 type veth peer name trk1 && ip link set trk0 up && ip link set trk1 up"); err != nil {
		t.Fatal(err)
	}
	base := strings.Replace(lb1.vrrpConfig("lb1", 200), "interfaces:\n  - name: eth0\n",
		"interfaces:\n  - name: eth0\n  - {name: trk0, xdp_mode: generic}\n", 1)
	check := func(port int) string {
		return strings.Replace(base, "    protocol: tcp\n",
			fmt.Sprintf("    protocol: tcp\n    health_check: {type: tcp, port: %d, interval: 100ms, timeout: 80ms, rise: 2, fall: 2}\n", port), 1)
	}
	lb1.writeConfig(check(9000))
	lb2.writeConfig(lb2.vrrpConfig("lb2", 100))
	lb1.startDaemon()
	lb1.waitVRRP("master", 5*time.Second)
	lb2.startDaemon()
	lb2.waitVRRP("backup", 5*time.Second)

	// sick checks that lb1 is sick for want and that lb2 took over; well
	// checks that lb1 is well and master again.
	sickLines := 0
	sick := func(want string, since time.Time) {
		t.Helper()
		lb2.waitVRRP("master", 3*time.Second)
		t.Logf("%s: lb2 master within %s", want, time.Since(since).Round(10*time.Millisecond))
		lb1.waitVRRP("backup", 3*time.Second)
		v := lb1.vrrpStats()
		if v.Priority != 1 || !slices.Contains(v.Sick, want) {
			t.Fatalf("lb1 after %q: priority %d, sick %q; want priority 1 and that reason", want, v.Priority, v.Sick)
		}
		if out, err := lb1.cli("vrrp"); err != nil || !strings.Contains(out, want) {
			t.Errorf("fulcrum vrrp does not show %q (%v):\n%s", want, err, out)
		}
		// One log line per change, naming the reason.
		log := lb1.log()
		if n := strings.Count(log, "node sick"); n != sickLines+1 || !strings.Contains(log, want) {
			t.Errorf("lb1's log has %d \"node sick\" lines (want %d) or lacks %q:\n%s", n, sickLines+1, want, log)
		}
		sickLines++
	}
	wellLines := 0
	// logged: the daemon that got well is the one that was sick (not a
	// restarted one), so it logs the change.
	well := func(what string, logged bool) {
		t.Helper()
		lb1.waitVRRP("master", 3*time.Second)
		lb2.waitVRRP("backup", 3*time.Second)
		if v := lb1.vrrpStats(); v.Priority != 200 || len(v.Sick) != 0 {
			t.Fatalf("lb1 after %s: priority %d, sick %q; want 200 and well", what, v.Priority, v.Sick)
		}
		if logged {
			wellLines++
		}
		if n := strings.Count(lb1.log(), "node well again"); n != wellLines {
			t.Errorf("lb1's log has %d \"node well again\" lines, want %d", n, wellLines)
		}
	}

	// A configured interface goes down (not the VRRP one: that one puts
	// the router in Fault, which TestFailover covers).
	at := time.Now()
	if _, err := h.topo.LB1.Run(bg(), "ip", "link", "set", "trk0", "down"); err != nil {
		t.Fatal(err)
	}
	sick("interface trk0 is down", at)
	if _, err := h.topo.LB1.Run(bg(), "ip", "link", "set", "trk0", "up"); err != nil {
		t.Fatal(err)
	}
	well("trk0 came back", true)

	// Every backend of the TCP VIP fails lb1's check (port 9 is closed).
	lb1.writeConfig(check(9))
	at = time.Now()
	if out, err := lb1.cli("apply", "-f", lb1.cfgPath); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	sick(fmt.Sprintf("every backend of tcp/%s:9000 is down", vip4), at)
	lb1.writeConfig(check(9000))
	if out, err := lb1.cli("apply", "-f", lb1.cfgPath); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	well("the check was fixed", true)

	// The balancer is detached from eth0 behind the daemon's back.
	eth0, err := h.topo.LB1.Link("eth0")
	if err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(datapath.PinDir(h.dir, "lb1"), fmt.Sprintf("xdp_link_ifindex_%d", eth0.Attrs().Index))
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatalf("the daemon's pinned XDP link: %v", err)
	}
	at = time.Now()
	err = l.Detach()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	sick("the balancer is not attached to eth0", at)
	// A restarted daemon attaches it again (the detached link is no
	// longer live, so it is not adopted) and is well.
	lb1.daemon.Process.Signal(syscall.SIGTERM)
	lb1.daemon.Wait()
	lb1.startDaemon()
	if !lb1.xdpAttached() {
		t.Fatal("the restarted daemon did not attach the balancer to eth0")
	}
	well("a restart", false)
}

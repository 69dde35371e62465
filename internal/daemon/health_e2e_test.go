package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// The timing of healthConfig's checks, from which TestHealthChecks
// derives its bounds.
const (
	healthInterval = 200 * time.Millisecond
	healthTimeout  = 150 * time.Millisecond
	healthRise     = 2
	healthFall     = 2
)

// healthConfig is the harness config with health checks: tcp on the echo
// VIP, udp (payload and expected reply) on the DNS VIP.
func (h *harness) healthConfig() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "instance: e2e\nbpffs: %s\ninterfaces:\n  - name: eth0\napi:\n  socket: %s\nmetrics:\n  address: 127.0.0.1:9542\nvips:\n", h.dir, h.socket)
	timing := fmt.Sprintf("interval: %s, timeout: %s, rise: %d, fall: %d", healthInterval, healthTimeout, healthRise, healthFall)
	checks := map[string]string{
		"tcp": "{type: tcp, " + timing + "}",
		"udp": "{type: udp, " + timing + ", payload: hc, expect: hc}",
	}
	for _, v := range []struct {
		port  int
		proto string
	}{{9000, "tcp"}, {53, "udp"}} {
		fmt.Fprintf(&sb, "  - address: %s\n    port: %d\n    protocol: %s\n    health_check: %s\n    backends:\n", vip4, v.port, v.proto, checks[v.proto])
		for _, b := range h.topo.Backends {
			fmt.Fprintf(&sb, "      - address: %s\n", b.IPv4)
		}
	}
	return sb.String()
}

// backendHealth returns the health of every backend of a VIP, by name.
func (h *harness) backendHealth(ref api.VIPRef) map[string]api.Backend {
	vips, err := h.client.ListVIPs(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]api.Backend{}
	for _, v := range vips {
		if v.VIPRef == ref {
			for _, b := range v.Backends {
				out[h.names[b.Address]] = b
			}
		}
	}
	return out
}

// waitHealth waits until backend name of ref has the state, and returns
// how long that took.
func (h *harness) waitHealth(ref api.VIPRef, name, state string, limit time.Duration) time.Duration {
	start := time.Now()
	for {
		if b := h.backendHealth(ref)[name]; b.Health == state {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			h.t.Fatalf("%s of %s not %s after %s: %+v\n%s", name, ref, state, limit, h.backendHealth(ref), h.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkBound is how long after its server stops (or starts) a backend may
// take to go down (up) after n probes in a row at interval, each of which
// ends within timeout:
//   - the next probe starts within one interval, the n-th (n-1) intervals
//     later, and ends within the timeout: n × interval + timeout;
//   - waitHealth sees the state within its 20 ms poll, the second of two
//     waits within two;
//   - and one interval for a probe timer that a loaded 2-core machine runs
//     late.
//
// For healthConfig's checks and n = 2: 400 + 150 + 40 + 200 = 790 ms.
func checkBound(n int, interval, timeout time.Duration) time.Duration {
	return time.Duration(n)*interval + timeout + 2*20*time.Millisecond + interval
}

// TestHealthChecks stops a backend's servers under live traffic: its
// backend goes down within checkBound(fall), new flows avoid it, the other
// backends' connections see no reset; restarted, it comes back within
// checkBound(rise); the UDP check follows too.
func TestHealthChecks(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(h.healthConfig())
	h.startDaemon()
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	dns := api.VIPRef{Protocol: "udp", Address: vip4, Port: 53}
	for _, ref := range []api.VIPRef{web, dns} {
		for _, name := range []string{"backend1", "backend2", "backend3"} {
			h.waitHealth(ref, name, "up", 5*time.Second)
		}
	}
	conns := h.openConns(40, vip4)

	stopped := time.Now()
	h.stopServer(1) // backend2
	// Both measured from the stop: the udp figure is at most the later
	// of the two, and each must be within the bound.
	bound := checkBound(healthFall, healthInterval, healthTimeout)
	h.waitHealth(web, "backend2", "down", 3*time.Second)
	took := time.Since(stopped)
	h.waitHealth(dns, "backend2", "down", 3*time.Second)
	tookUDP := time.Since(stopped)
	t.Logf("backend2 marked down after %s (tcp check), %s (udp check); bound %s", took.Round(time.Millisecond), tookUDP.Round(time.Millisecond), bound)
	if took > bound || tookUDP > bound {
		t.Errorf("backend2 marked down after %s (tcp), %s (udp); want within %s", took, tookUDP, bound)
	}
	if b := h.backendHealth(web)["backend2"]; b.HealthError == "" || b.HealthSince.IsZero() {
		t.Errorf("down backend shows no error or transition time: %+v", b)
	}
	h.checkConns(conns, "backend2", "after backend2 went down")
	for i, c := range h.openConns(30, vip4) {
		if c.backend == "backend2" {
			t.Fatalf("new connection %d reached the down backend2", i)
		}
	}
	out, err := h.cli("backend", "list", "tcp/"+vip4.String()+":9000")
	if err != nil || !strings.Contains(out, "down") {
		t.Fatalf("backend list does not show the down backend: %v\n%s", err, out)
	}
	metrics := h.scrape()
	if want := `fulcrum_backend_health{backend="198.18.0.12",state="down",vip="tcp/203.0.113.10:9000"} 1`; !strings.Contains(metrics, want) {
		t.Fatalf("metrics lack %s", want)
	}
	if !strings.Contains(metrics, "fulcrum_health_check_duration_seconds_count") {
		t.Fatal("metrics lack the health-check latency histogram")
	}

	h.startServer(1) // returns once it listens
	started := time.Now()
	bound = checkBound(healthRise, healthInterval, healthTimeout)
	h.waitHealth(web, "backend2", "up", 3*time.Second)
	took = time.Since(started)
	h.waitHealth(dns, "backend2", "up", 3*time.Second)
	tookUDP = time.Since(started)
	t.Logf("backend2 back up after %s (tcp check), %s (udp check); bound %s", took.Round(time.Millisecond), tookUDP.Round(time.Millisecond), bound)
	if took > bound || tookUDP > bound {
		t.Errorf("backend2 back up after %s (tcp), %s (udp); want within %s", took, tookUDP, bound)
	}
	h.checkConns(conns, "backend2", "after backend2 came back")
	back := 0
	for _, c := range h.openConns(30, vip4) {
		if c.backend == "backend2" {
			back++
		}
	}
	if back == 0 {
		t.Fatal("no new connection reached backend2 after it came back")
	}
}

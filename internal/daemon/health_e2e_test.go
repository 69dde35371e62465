package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// healthConfig is the harness config with health checks: tcp on the echo
// VIP, udp (payload and expected reply) on the DNS VIP.
func (h *harness) healthConfig() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "instance: e2e\nbpffs: %s\ninterfaces:\n  - name: eth0\napi:\n  socket: %s\nmetrics:\n  address: 127.0.0.1:9542\nvips:\n", h.dir, h.socket)
	checks := map[string]string{
		"tcp": "{type: tcp, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}",
		"udp": "{type: udp, interval: 200ms, timeout: 150ms, rise: 2, fall: 2, payload: hc, expect: hc}",
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

// TestHealthChecks stops a backend's servers under live traffic: its
// backend goes down within interval × fall + one interval (plus slack for
// this busy machine), new flows avoid it, the other backends' connections
// see no reset; restarted, it comes back; the UDP check follows too.
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

	h.stopServer(1) // backend2
	// interval × fall + one interval = 600 ms; the bound has slack for a
	// loaded 2-core machine, the measured figure is logged.
	took := h.waitHealth(web, "backend2", "down", 3*time.Second)
	tookUDP := h.waitHealth(dns, "backend2", "down", 3*time.Second)
	t.Logf("backend2 marked down after %s (tcp check), %s (udp check); bound 600 ms + slack", took.Round(time.Millisecond), tookUDP.Round(time.Millisecond))
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

	h.startServer(1)
	took = h.waitHealth(web, "backend2", "up", 3*time.Second)
	h.waitHealth(dns, "backend2", "up", 3*time.Second)
	t.Logf("backend2 back up after %s (rise 2 × 200 ms)", took.Round(time.Millisecond))
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

package daemon_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// TestResponseTimes runs real TCP through the daemon to a VIP that
// measures response times both ways, with backend3 answering 20 ms late
// (fcbackend -delay: its every packet, SYN-ACK and probe answers
// included): backend3's passive time (SYN to first ACK at the LB) and its
// active time (the tcp probe's connect) must each read at least 20 ms more
// than every other backend's, in the API, in `fulcrum backend list` and
// in the metrics.
func TestResponseTimes(t *testing.T) {
	const delay = 20 * time.Millisecond
	h := newHarness(t)
	h.slowServer(2, delay)
	cfg := h.config(1, 1, 1)
	cfg = strings.Replace(cfg, "    port: 9000\n    protocol: tcp\n", "    port: 9000\n    protocol: tcp\n"+
		"    response_time: {source: both}\n    health_check: {type: tcp, interval: 200ms, timeout: 200ms}\n", 1)
	h.writeConfig(cfg)
	h.startDaemon()
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	slow := h.topo.Backends[2].IPv4

	var last map[netip.Addr]api.ResponseTime
	check := func() error {
		// New handshakes for the passive source, a few per backend.
		for range 12 {
			c, err := h.dial(vip4, 9000)
			if err != nil {
				return fmt.Errorf("dial: %v", err)
			}
			c.c.Close()
		}
		vips, err := h.client.ListVIPs(context.Background())
		if err != nil {
			return err
		}
		last = make(map[netip.Addr]api.ResponseTime)
		for _, v := range vips {
			if v.VIPRef != web {
				continue
			}
			for _, b := range v.Backends {
				if b.ResponseTime == nil {
					return fmt.Errorf("backend %s has no response_time", b.Address)
				}
				last[b.Address] = *b.ResponseTime
			}
		}
		if len(last) != 3 {
			return fmt.Errorf("response times of %d backends, want 3: %v", len(last), last)
		}
		for a, rt := range last {
			if rt.Passive <= 0 || rt.Active <= 0 || rt.Source != "both" {
				return fmt.Errorf("backend %s: %+v, want both sources measured", a, rt)
			}
		}
		for a, rt := range last {
			if a == slow {
				continue
			}
			s := last[slow]
			if s.Passive < rt.Passive+delay || s.Active < rt.Active+delay {
				return fmt.Errorf("slow backend %s: passive %v active %v; backend %s: passive %v active %v; want the slow one %v more on each",
					slow, s.Passive, s.Active, a, rt.Passive, rt.Active, delay)
			}
		}
		return nil
	}
	if _, err := require.Poll(30*time.Second, check); err != nil {
		t.Fatalf("%v\ndaemon log:\n%s", err, h.log())
	}
	t.Logf("response times: %v", last)

	// The listing shows the cost; under both with handshakes flowing, the
	// passive time, so the slow backend's RT reads at least the delay.
	out, err := h.cli("backend", "list", web.String())
	if err != nil {
		t.Fatalf("backend list: %v\n%s", err, out)
	}
	lines := strings.Split(out, "\n")
	rtCol := strings.Index(lines[0], "RT ")
	var row string
	for _, l := range lines {
		if strings.HasPrefix(l, web.String()+" ") && strings.Contains(l, " "+slow.String()+" ") {
			row = l
		}
	}
	if rtCol < 0 || len(row) <= rtCol {
		t.Fatalf("no RT column or no row for %s:\n%s", slow, out)
	}
	if d, err := time.ParseDuration(strings.Fields(row[rtCol:])[0]); err != nil || d < delay {
		t.Errorf("backend list shows RT %q for %s, want a duration of at least %v:\n%s", strings.Fields(row[rtCol:])[0], slow, delay, out)
	}

	body := h.scrape()
	for _, source := range []string{"passive", "active"} {
		series := fmt.Sprintf(`fulcrum_backend_response_seconds{backend="%s",source="%s",vip="%s"}`, slow, source, web)
		if v := metricValue(t, body, series); v < delay.Seconds() {
			t.Errorf("%s = %v, want at least %v", series, v, delay.Seconds())
		}
	}
}

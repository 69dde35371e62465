package daemon

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/reconcile"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// TestRunningConfigRoundTrip: the file `fulcrum config show` prints for a
// state edited through the API (a VIP added as the API adds it, a backend
// added, a weight changed, under a global health check that the API's VIP
// does not take) parses back to the same configuration, field for field.
func TestRunningConfigRoundTrip(t *testing.T) {
	cfg, err := config.Parse([]byte(`
interfaces: [{name: eth0}]
ipip: {source_v4: 198.18.0.0/24}
conntrack: {entries: 65536, new_flow_limit: 1000}
health_check: {type: http, path: /ready, interval: 2s}
vips:
  - name: web
    address: 203.0.113.10
    port: 80
    protocol: tcp
    backends:
      - {address: 198.18.0.11, weight: 2}
      - {address: 198.18.0.12, mac: "02:00:5e:00:53:12"}
`))
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	vips := cfg.VIPs
	added, err := fromAPI(api.VIP{VIPRef: api.VIPRef{Protocol: "udp", Address: a("2001:db8::5"), Port: 53}, Mode: "ipip",
		Scheduler: "source-hash", RingSize: 251, Backends: []api.Backend{{Address: a("198.18.0.21"), Weight: 0}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := config.ParseBackend(vips[0], backendFields(api.Backend{Address: a("198.18.0.13"), Weight: 5}))
	if err != nil {
		t.Fatal(err)
	}
	auto, err := fromAPI(api.VIP{VIPRef: api.VIPRef{Protocol: "tcp", Address: a("203.0.113.10"), Port: 443}, Mode: "dsr",
		RingSizeAuto: true, RingSizeMax: 131071, Backends: []api.Backend{{Address: a("198.18.0.21"), Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	vips[0].Backends = append(vips[0].Backends, b)
	vips[0].Backends[0].Weight = 7
	vips = append(vips, added, auto)

	out, err := runningConfig(cfg, vips, map[datapath.VIP]uint32{reconcile.Key(auto): 251, reconcile.Key(added): 251})
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse(out)
	if err != nil {
		t.Fatalf("the running config does not parse: %v\n%s", err, out)
	}
	want := *cfg
	want.VIPs = vips
	if !reflect.DeepEqual(back, &want) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v\nfile:\n%s", back, &want, out)
	}
	if !strings.Contains(string(out), "ring_size: auto # chosen: 251 slots\n") || strings.Count(string(out), "chosen") != 1 {
		t.Errorf("the auto VIP's ring_size does not say the chosen size (251), or another does:\n%s", out)
	}
	if len(back.VIPs) != 3 || back.VIPs[1].HealthCheck != nil || back.VIPs[0].Backends[2].HealthCheck == nil {
		t.Errorf("health checks after the round trip: the API's VIP must stay unchecked, the file's new backend checked:\n%s", out)
	}
}

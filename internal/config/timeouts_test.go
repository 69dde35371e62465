package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// TestConntrackTimeouts: the global timeouts fill in the defaults, a VIP's
// own override them field by field, and both survive a round trip.
func TestConntrackTimeouts(t *testing.T) {
	doc := base + `conntrack: {timeouts: {tcp_established: 1h, udp: 30s}}
vips:
  - {address: 203.0.113.1, port: 80, protocol: tcp, conntrack: {timeouts: {tcp_fin: 20s, tcp_closed: 2s}}}
  - {address: 203.0.113.1, port: 53, protocol: udp, conntrack: {timeouts: {udp: 5s}}}
  - {address: 203.0.113.1, port: 443, protocol: tcp}
`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	global := datapath.DefaultConnTimeouts
	global.Established, global.UDP = time.Hour, 30*time.Second
	if c.Conntrack.Timeouts != global {
		t.Errorf("conntrack.timeouts = %+v, want %+v", c.Conntrack.Timeouts, global)
	}
	want := []datapath.ConnTimeouts{
		{SYN: global.SYN, Established: time.Hour, FIN: 20 * time.Second, Closed: 2 * time.Second, UDP: global.UDP},
		{SYN: global.SYN, Established: time.Hour, FIN: global.FIN, Closed: global.Closed, UDP: 5 * time.Second},
		global,
	}
	for i, w := range want {
		if !c.VIPs[i].Conntrack {
			t.Errorf("vips[%d]: conntrack off, want on", i)
		}
		if got := c.Conntrack.TimeoutsOf(&c.VIPs[i]); got != w {
			t.Errorf("vips[%d] timeouts = %+v, want %+v", i, got, w)
		}
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(out)
	if err != nil {
		t.Fatalf("the marshalled config does not parse: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("round trip differs:\nfirst  %+v\nsecond %+v\nyaml:\n%s", c, c2, out)
	}
}

// TestConntrackTimeoutProblems: each bad timeout is refused with its path.
func TestConntrackTimeoutProblems(t *testing.T) {
	tests := []struct{ name, doc, path, fragment string }{
		{"zero", base + "conntrack: {timeouts: {tcp_fin: 0s}}", "conntrack.timeouts.tcp_fin", "must be above zero"},
		{"negative", base + "conntrack: {timeouts: {udp: -5s}}", "conntrack.timeouts.udp", "-5s must be above zero"},
		{"no unit", base + "conntrack: {timeouts: {udp: 30}}", "conntrack.timeouts.udp", "has no unit"},
		{"fraction", base + "conntrack: {timeouts: {tcp_syn: 1500ms}}", "conntrack.timeouts.tcp_syn", "not a whole number of seconds"},
		{"too long", base + "conntrack: {timeouts: {tcp_established: 200h}}", "conntrack.timeouts.tcp_established", "from 1s to 168h0m0s"},
		{"unknown state", base + "conntrack: {timeouts: {tcp_time_wait: 5s}}", "conntrack.timeouts.tcp_time_wait", "unknown"},
		{"not a mapping", base + "conntrack: {timeouts: 5s}", "conntrack.timeouts", "want a mapping of idle timeouts"},
		{"vip, other protocol", vip(", conntrack: {timeouts: {udp: 5s}}"), "vips[0].conntrack.timeouts.udp", "a tcp VIP's entries have no udp timeout"},
		{"udp vip, tcp state", base + "vips:\n  - {address: 203.0.113.1, port: 53, protocol: udp, conntrack: {timeouts: {tcp_fin: 5s}}}\n",
			"vips[0].conntrack.timeouts.tcp_fin", "a udp VIP's entries have no tcp_fin timeout: set udp"},
		{"vip, zero", vip(", conntrack: {timeouts: {tcp_closed: 0s}}"), "vips[0].conntrack.timeouts.tcp_closed", "must be above zero"},
		{"vip, unknown key", vip(", conntrack: {timeout: {tcp_closed: 1s}}"), "vips[0].conntrack.timeout", "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.doc)
			}
			if !strings.Contains(err.Error(), tt.path+": ") || !strings.Contains(err.Error(), tt.fragment) {
				t.Errorf("err = %v\nwant %s: ...%s...", err, tt.path, tt.fragment)
			}
		})
	}
}

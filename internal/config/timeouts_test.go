package config

import (
	"reflect"
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

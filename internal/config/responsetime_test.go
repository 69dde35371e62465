package config

import (
	"strings"
	"testing"
	"time"
)

func TestResponseTime(t *testing.T) {
	c := mustParse(t, base+`vips:
  - {address: 203.0.113.1, port: 80, protocol: tcp, response_time: {source: passive}}
  - {address: 203.0.113.2, port: 80, protocol: tcp, response_time: {source: both, half_life: 3s}, health_check: {type: tcp}}
  - {address: 203.0.113.3, port: 53, protocol: udp, response_time: {source: active}, health_check: {type: udp, payload: ping}}
  - {address: 203.0.113.4, port: 80, protocol: tcp, response_time: {}}
  - {address: 203.0.113.5, port: 80, protocol: tcp}
`)
	want := []*ResponseTime{
		{ResponsePassive, time.Second},
		{ResponseBoth, 3 * time.Second},
		{ResponseActive, time.Second},
		{ResponsePassive, time.Second},
		nil,
	}
	for i, w := range want {
		got := c.VIPs[i].ResponseTime
		if (got == nil) != (w == nil) || (got != nil && *got != *w) {
			t.Errorf("vips[%d].response_time = %+v, want %+v", i, got, w)
		}
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back := mustParse(t, string(out))
	for i := range want {
		a, b := back.VIPs[i].ResponseTime, c.VIPs[i].ResponseTime
		if (a == nil) != (b == nil) || (a != nil && *a != *b) {
			t.Errorf("after a round trip vips[%d].response_time = %+v, want %+v", i, a, b)
		}
	}
}

// TestResponseTimeRefused: every bad response_time, and a least-time VIP
// that cannot measure, are refused by name, with the path of the
// offending key.
func TestResponseTimeRefused(t *testing.T) {
	for _, c := range []struct{ vip, path, msg string }{
		{`{address: 203.0.113.1, port: 80, protocol: tcp, response_time: {source: fast}}`, "vips[0].response_time.source", `"fast"`},
		{`{address: 203.0.113.1, port: 80, protocol: tcp, response_time: {half_life: 10ms}}`, "vips[0].response_time.half_life", "10ms is out of range; use 100ms to 1m0s"},
		{`{address: 203.0.113.1, port: 80, protocol: tcp, response_time: {half_life: 2m}}`, "vips[0].response_time.half_life", "out of range"},
		{`{address: 203.0.113.1, port: 80, protocol: tcp, response_time: {sauce: passive}}`, "vips[0].response_time.sauce", ""},
		{`{address: 203.0.113.1, port: 80, protocol: tcp, response_time: passive}`, "vips[0].response_time", ""},
		{`{address: 203.0.113.1, port: 53, protocol: udp, response_time: {}}`, "vips[0].response_time.source", "passive measures TCP handshakes and the vip is udp"},
		{`{address: 203.0.113.1, port: 80, protocol: tcp, conntrack: false, response_time: {source: both}, health_check: {type: tcp}}`, "vips[0].response_time.source", "conntrack: false"},
		{`{address: 203.0.113.1, port: 80, protocol: tcp, response_time: {source: active}}`, "vips[0].response_time.source", "has no health check"},
		{`{address: 203.0.113.1, port: 53, protocol: udp, scheduler: least-time}`, "vips[0].response_time", "least-time compares response times, and a udp vip measures them only with its health probes"},
		{`{address: 203.0.113.1, port: 80, protocol: tcp, scheduler: least-time, conntrack: false}`, "vips[0].scheduler", "least-time counts the connection table's entries"},
	} {
		ps := problems(t, base+"vips:\n  - "+c.vip+"\n")
		found := false
		for _, p := range ps {
			if p.Path == c.path && strings.Contains(p.Message, c.msg) {
				found = true
			}
		}
		if !found || len(ps) != 1 {
			t.Errorf("%s: got %v, want one problem at %s saying %q", c.vip, ps, c.path, c.msg)
		}
	}
}

// TestLeastTimeResponseDefault: a least-time VIP without response_time
// measures what it can: passive for TCP, the probes for UDP with a health
// check; one that sets it keeps its own; the half-life a least-time VIP
// sets none of is LeastTimeHalfLife.
func TestLeastTimeResponseDefault(t *testing.T) {
	c := mustParse(t, base+`vips:
  - {address: 203.0.113.1, port: 80, protocol: tcp, scheduler: least-time}
  - {address: 203.0.113.2, port: 53, protocol: udp, scheduler: least-time, health_check: {type: udp, payload: ping}}
  - {address: 203.0.113.3, port: 80, protocol: tcp, scheduler: least-time, response_time: {source: both, half_life: 2s}, health_check: {type: tcp}}
  - {address: 203.0.113.4, port: 80, protocol: tcp, scheduler: least-time, response_time: {source: both}, health_check: {type: tcp}}
`)
	want := []ResponseTime{{ResponsePassive, LeastTimeHalfLife}, {ResponseActive, LeastTimeHalfLife}, {ResponseBoth, 2 * time.Second}, {ResponseBoth, LeastTimeHalfLife}}
	for i, w := range want {
		v := c.VIPs[i]
		if v.Scheduler != SchedulerLeastTime || v.ResponseTime == nil || *v.ResponseTime != w {
			t.Errorf("vips[%d]: scheduler %s, response_time %+v; want least-time, %+v", i, v.Scheduler, v.ResponseTime, w)
		}
	}
}

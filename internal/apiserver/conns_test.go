package apiserver

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// connLines decodes a /v1/conns body, one entry a line.
func connLines(t *testing.T, body string) []api.ConnLine {
	t.Helper()
	var out []api.ConnLine
	for line := range strings.Lines(body) {
		var l api.ConnLine
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out = append(out, l)
	}
	return out
}

// TestListConns: the stream carries the entries the filter selects, one
// JSON object a line, up to the limit; bad filters are refused naming the
// parameter; a walk that fails half way ends the stream with an error
// line, one that fails at once answers an error.
func TestListConns(t *testing.T) {
	tests := []struct {
		query   string
		clients []string
	}{
		{"", []string{"198.19.1.2:40000", "198.19.1.3:40001", "198.19.1.4:40002"}},
		{"?backend=198.18.0.11", []string{"198.19.1.2:40000", "198.19.1.3:40001"}},
		{"?state=active", []string{"198.19.1.2:40000", "198.19.1.4:40002"}},
		{"?state=INACTIVE&vip=tcp/203.0.113.10:80", []string{"198.19.1.3:40001"}},
		{"?limit=2", []string{"198.19.1.2:40000", "198.19.1.3:40001"}},
		{"?vip=tcp/203.0.113.10:81", nil},
	}
	for _, tt := range tests {
		f := newFake()
		code, body := call(t, New(f, nil), "GET", "/v1/conns"+tt.query, "")
		if code != 200 {
			t.Fatalf("GET /v1/conns%s: status %d, body %s", tt.query, code, body)
		}
		var got []string
		for _, l := range connLines(t, body) {
			if l.Conn == nil || l.Error != "" {
				t.Fatalf("GET /v1/conns%s: line %+v is not an entry", tt.query, l)
			}
			got = append(got, l.Client.String())
		}
		if strings.Join(got, " ") != strings.Join(tt.clients, " ") {
			t.Errorf("GET /v1/conns%s: clients %v, want %v", tt.query, got, tt.clients)
		}
	}
	// One entry in full, as the wire carries it.
	_, body := call(t, New(newFake(), nil), "GET", "/v1/conns?limit=1", "")
	want := `{"protocol":"tcp","client":"198.19.1.2:40000","dst":"203.0.113.10:80","vip":{"protocol":"tcp","address":"203.0.113.10","port":80},"backend":"198.18.0.11","state":"established","idle_ns":1000000000,"expires_in_ns":899000000000}` + "\n"
	if body != want {
		t.Errorf("one entry:\n got %s\nwant %s", body, want)
	}

	for _, bad := range []struct{ query, msg string }{
		{"?vip=203.0.113.10:80", `query parameter vip: vip "203.0.113.10:80": want PROTO/ADDRESS:PORT`},
		{"?backend=web1", `query parameter backend: "web1" is not an IP address`},
		{"?state=open", `query parameter state: "open", want active, inactive, established, syn, fin or closed`},
		{"?limit=-1", `query parameter limit: "-1", want a whole number`},
		{"?client=1.2.3.4", `query parameter "client": unknown; want vip, backend, state or limit`},
	} {
		f := newFake()
		code, body := call(t, New(f, nil), "GET", "/v1/conns"+bad.query, "")
		if code != 400 || !strings.Contains(errorMessage(t, body), bad.msg) {
			t.Errorf("GET /v1/conns%s: %d %s, want 400 with %q", bad.query, code, body, bad.msg)
		}
		if f.last != "" {
			t.Errorf("GET /v1/conns%s: the controller was called (%s)", bad.query, f.last)
		}
	}

	f := newFake()
	f.connErrAfter = 2
	code, body := call(t, New(f, nil), "GET", "/v1/conns", "")
	lines := connLines(t, body)
	if code != 200 || len(lines) != 3 || lines[2].Conn != nil || !strings.Contains(lines[2].Error, "bad things") {
		t.Errorf("walk failing after 2 entries: %d %s, want 2 entries and an error line", code, body)
	}
	f = newFake()
	f.err = api.ErrInvalid
	if code, body := call(t, New(f, nil), "GET", "/v1/conns", ""); code != 400 {
		t.Errorf("walk failing at once: %d %s, want 400", code, body)
	}
}

func TestFlushConns(t *testing.T) {
	f := newFake()
	h := New(f, nil)
	code, body := call(t, h, "DELETE", "/v1/conns?backend=198.18.0.11", "")
	if code != 200 || body != `{"deleted":2}`+"\n" {
		t.Fatalf("flush .11: %d %s", code, body)
	}
	if len(f.conns) != 1 || f.last != "FlushConns ?backend=198.18.0.11" {
		t.Errorf("after the flush: %d entries, last call %q", len(f.conns), f.last)
	}
	for _, bad := range []struct{ query, msg string }{
		{"", "a flush needs query parameter vip or backend"},
		{"?state=syn", "a flush needs query parameter vip or backend"},
		{"?vip=tcp/203.0.113.10:80&limit=1", "query parameter limit: a flush deletes every entry it selects"},
		{"?backend=x", `query parameter backend: "x" is not an IP address`},
	} {
		f := newFake()
		code, body := call(t, New(f, nil), "DELETE", "/v1/conns"+bad.query, "")
		if code != 400 || !strings.Contains(errorMessage(t, body), bad.msg) || len(f.conns) != 3 {
			t.Errorf("DELETE /v1/conns%s: %d %s (%d entries left), want 400 with %q and nothing deleted", bad.query, code, body, len(f.conns), bad.msg)
		}
	}
}

func TestBackendConnsAndDrain(t *testing.T) {
	f := newFake()
	h := New(f, nil)
	code, body := call(t, h, "GET", vipPathWeb+"/backends/198.18.0.11/connections", "")
	if code != 200 || body != `{"active":1,"inactive":1,"empty":false,"waited_ns":0}`+"\n" {
		t.Errorf("connections of .11: %d %s", code, body)
	}
	code, body = call(t, h, "GET", vipPathWeb+"/backends/198.18.0.11/connections?wait_ns=5000000000", "")
	if code != 200 || f.last != "BackendConns tcp/203.0.113.10:80 198.18.0.11 wait=5s" || !strings.Contains(body, `"waited_ns":5000000000`) {
		t.Errorf("connections of .11 with a wait: %d %s, call %q", code, body, f.last)
	}
	code, body = call(t, h, "POST", vipPathWeb+"/backends/198.18.0.12/drain", `{"wait_ns":3000000000}`)
	if code != 200 || body != `{"active":1,"inactive":0,"empty":false,"waited_ns":3000000000}`+"\n" {
		t.Errorf("drain .12: %d %s", code, body)
	}
	if f.vips[0].Backends[1].Weight != 0 || f.last != "BackendConns tcp/203.0.113.10:80 198.18.0.12 wait=3s" {
		t.Errorf("drain .12: weight %d, last call %q; want 0 and a wait of 3s", f.vips[0].Backends[1].Weight, f.last)
	}
	for _, bad := range []struct{ method, path, body, msg string }{
		{"GET", "/backends/198.18.0.11/connections?wait_ns=-1", "", `query parameter wait_ns: "-1"`},
		{"GET", "/backends/198.18.0.11/connections?wait=1s", "", `query parameter "wait": unknown; want wait_ns`},
		{"POST", "/backends/198.18.0.11/drain", `{"wait_ns":-5}`, `field "wait_ns": -5, want 0 to`},
		{"POST", "/backends/198.18.0.11/drain", `{"wait":1}`, `unknown field "wait"`},
		{"POST", "/backends/x/drain", `{}`, `path: backend address "x"`},
	} {
		f := newFake()
		code, body := call(t, New(f, nil), bad.method, vipPathWeb+bad.path, bad.body)
		if code != 400 || !strings.Contains(errorMessage(t, body), bad.msg) {
			t.Errorf("%s %s: %d %s, want 400 with %q", bad.method, bad.path, code, body, bad.msg)
		}
		if f.vips[0].Backends[0].Weight != 1 {
			t.Errorf("%s %s: refused, but the weight changed", bad.method, bad.path)
		}
	}
}

// TestClientConns runs the client's connection calls against the server.
func TestClientConns(t *testing.T) {
	f := newFake()
	c := api.NewClient(serve(t, f))
	ctx := context.Background()
	web := mustRef("tcp/203.0.113.10:80")
	var got []api.Conn
	if err := c.Conns(ctx, api.ConnFilter{VIP: &web, State: "active"}, func(x api.Conn) error { got = append(got, x); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != f.conns[0] || got[1] != f.conns[2] {
		t.Errorf("Conns(active) = %+v", got)
	}
	f.connErrAfter = 1
	n := 0
	err := c.Conns(ctx, api.ConnFilter{}, func(api.Conn) error { n++; return nil })
	if n != 1 || err == nil || !strings.Contains(err.Error(), "ended early: walk connection table ct_v4: bad things") {
		t.Errorf("a walk failing half way: %d entries, err %v", n, err)
	}
	f.connErrAfter = 0

	b11 := netip.MustParseAddr("198.18.0.11")
	bc, err := c.BackendConns(ctx, web, b11, 0)
	if err != nil || bc.Active != 1 || bc.Inactive != 1 {
		t.Errorf("BackendConns = %+v, %v", bc, err)
	}
	bc, err = c.DrainBackend(ctx, web, b11, time.Second)
	if err != nil || bc.Empty || bc.Waited != time.Second || f.vips[0].Backends[0].Weight != 0 {
		t.Errorf("DrainBackend = %+v, %v (weight %d)", bc, err, f.vips[0].Backends[0].Weight)
	}
	deleted, err := c.FlushConns(ctx, api.ConnFilter{Backend: b11})
	if err != nil || deleted != 2 {
		t.Errorf("FlushConns = %d, %v", deleted, err)
	}
	if _, err := c.FlushConns(ctx, api.ConnFilter{}); err == nil || !strings.Contains(err.Error(), "needs query parameter vip or backend") {
		t.Errorf("FlushConns without a filter: %v", err)
	}
}

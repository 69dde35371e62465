package main

import (
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestBackendListTable(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "backend", "list")
	r.expect(t, 0, []string{"HEALTH"})
	for _, want := range [][]string{
		{"VIP", "BACKEND", "WEIGHT", "HEALTH", "SINCE", "MAC", "LAST ERROR"},
		{"tcp/203.0.113.10:80", "198.18.0.11", "1", "up", "-", "(resolved)", "-"},
		{"tcp/203.0.113.10:80", "198.18.0.12", "0 (draining)", "up", "-", "02:00:5e:00:53:12", "-"},
		{"tcp/203.0.113.10:80", "198.18.0.13", "2", "down", "-", "(resolved)", "-"},
		{"udp/[2001:db8::1]:53", "2001:db8:1::2", "1", "unknown", "-", "(resolved)", "-"},
	} {
		if !hasRow(r.stdout, want) {
			t.Errorf("no row %q in:\n%s", want, r.stdout)
		}
	}
}

func TestBackendListOneVIP(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "backend", "list", "udp/[2001:db8::1]:53")
	r.expect(t, 0, []string{"2001:db8:1::2"})
	if hasRow(r.stdout, []string{"tcp/203.0.113.10:80", "198.18.0.11", "1", "up", "-", "(resolved)", "-"}) {
		t.Errorf("other VIP's backends listed:\n%s", r.stdout)
	}

	r = d.run(t, "-o", "json", "backend", "list", "tcp/203.0.113.10:80")
	r.expect(t, 0, nil)
	var vips []api.VIP
	decodeJSON(t, r.stdout, &vips)
	if len(vips) != 1 || len(vips[0].Backends) != 3 || vips[0].Backends[2].Health != "down" {
		t.Errorf("decoded %+v", vips)
	}

	d.run(t, "backend", "list", "tcp/203.0.113.99:80").expect(t, 1, nil, "fulcrum: vip tcp/203.0.113.99:80: not found")
}

func TestBackendListArguments(t *testing.T) {
	runCLI(t, "backend", "list", "203.0.113.10:80").expect(t, 2, nil, `fulcrum: backend list: vip "203.0.113.10:80": want PROTO/ADDRESS:PORT`)
	runCLI(t, "backend", "list", "tcp/203.0.113.10:80", "x").expect(t, 2, nil, `unexpected argument "x"`)
}

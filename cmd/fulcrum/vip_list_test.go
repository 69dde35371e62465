package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestVIPListTable(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "vip", "list")
	r.expect(t, 0, []string{"VIP", "SCHEDULER", "BACKENDS"})
	for _, want := range [][]string{
		{"tcp/203.0.113.10:80", "web", "dsr", "maglev", "65537", "on", "drop", "3 (2 up, 1 down, 1 draining)"},
		{"udp/[2001:db8::1]:53", "-", "dsr", "source-hash", "251", "off", "pass", "1"},
	} {
		if !hasRow(r.stdout, want) {
			t.Errorf("no row %q in:\n%s", want, r.stdout)
		}
	}
	// The alias.
	d.run(t, "vip", "ls").expect(t, 0, []string{"tcp/203.0.113.10:80"})
}

// hasRow reports whether a table holds a row with exactly these cells.
func hasRow(table string, cells []string) bool {
	for _, l := range strings.Split(table, "\n") {
		if cellsEqual(l, cells) {
			return true
		}
	}
	return false
}

func TestVIPListJSON(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "vip", "list", "-o", "json")
	r.expect(t, 0, nil)
	var vips []api.VIP
	decodeJSON(t, r.stdout, &vips)
	if len(vips) != 2 || vips[1].Conntrack == nil || *vips[1].Conntrack || vips[0].Backends[1].MAC != "02:00:5e:00:53:12" {
		t.Errorf("decoded %+v", vips)
	}
}

func TestVIPListEmpty(t *testing.T) {
	var buf bytes.Buffer
	printVIPs(&buf, nil)
	if !strings.HasPrefix(buf.String(), "no VIPs") {
		t.Errorf("got %q", buf.String())
	}

	d := startDaemon(t)
	d.fake.vips = nil
	r := d.run(t, "-o", "json", "vip", "list")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("no VIPs as JSON: exit %d, %q; want []", r.code, r.stdout)
	}
}

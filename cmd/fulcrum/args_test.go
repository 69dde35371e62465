package main

import (
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestParseBackendSpec(t *testing.T) {
	tests := []struct {
		in   string
		want api.Backend
	}{
		{"198.18.0.1", api.Backend{Address: netip.MustParseAddr("198.18.0.1"), Weight: 1}},
		{"198.18.0.1,weight=0", api.Backend{Address: netip.MustParseAddr("198.18.0.1"), Weight: 0}},
		{"2001:db8::1,mac=02:00:5e:00:53:01,weight=7", api.Backend{Address: netip.MustParseAddr("2001:db8::1"), Weight: 7, MAC: "02:00:5e:00:53:01"}},
		{"[2001:db8::1]", api.Backend{Address: netip.MustParseAddr("2001:db8::1"), Weight: 1}},
	}
	for _, tt := range tests {
		got, err := parseBackendSpec(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseBackendSpec(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "x", "198.18.0.1,", "198.18.0.1,weight=1,weight=2", "198.18.0.1,weight=65536", "198.18.0.1,mac=00:00:00:00:00:00:00:01", "fe80::1%eth0"} {
		if b, err := parseBackendSpec(bad); err == nil {
			t.Errorf("parseBackendSpec(%q) = %+v, want an error", bad, b)
		}
	}
}

func TestIsFlag(t *testing.T) {
	for in, want := range map[string]bool{"-o": true, "--mode": true, "--mode=dsr": true, "-1": false, "-": false, "tcp/1.2.3.4:80": false, "-0.5": false} {
		if got := isFlag(in); got != want {
			t.Errorf("isFlag(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestReorderArgs(t *testing.T) {
	app := newApp(io.Discard, io.Discard, time.Now)
	tests := []struct{ in, want string }{
		{"vip add tcp/203.0.113.10:80 --mode dsr --no-conntrack --backend 198.18.0.1",
			"vip add --mode dsr --no-conntrack --backend 198.18.0.1 tcp/203.0.113.10:80"},
		{"vip list -o json", "-o json vip list"},
		{"--socket /s vip list --output=json", "--socket /s --output=json vip list"},
		{"backend weight tcp/203.0.113.10:80 198.18.0.1 -1", "backend weight -- tcp/203.0.113.10:80 198.18.0.1 -1"},
		{"backend add V A -- --weight", "backend add -- V A --weight"},
		{"vip add -h", "vip add -h"},
		{"explain 198.19.1.2 203.0.113.10 tcp --syn", "explain --syn 198.19.1.2 203.0.113.10 tcp"},
		{"detach --instance edge1 --socket /s", "--socket /s detach --instance edge1"},
		{"vip frob --x", "vip --x frob"},
		{"vip list --generate-bash-completion", "vip list --generate-bash-completion"},
		// A flag that wants a value and ends the line takes no argument
		// before it as its value.
		{"vip add tcp/203.0.113.10:80 --mode", "vip add --mode"},
		{"vip list --socket", "--socket"},
	}
	for _, tt := range tests {
		got := strings.Join(reorderArgs(app, append([]string{"fulcrum"}, strings.Fields(tt.in)...))[1:], " ")
		if got != tt.want {
			t.Errorf("reorderArgs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

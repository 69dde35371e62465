package main

import (
	"net/netip"
	"testing"

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

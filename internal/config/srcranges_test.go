package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestSourceRanges(t *testing.T) {
	c := mustParse(t, base+`vips:
  - {address: 203.0.113.1, port: 80, protocol: tcp, source_ranges: [198.51.100.0/24, 203.0.113.128/25, 10.1.2.3/32]}
  - {address: "2001:db8::1", port: 80, protocol: tcp, source_ranges: ["2001:db8:1::/48", "::/0"]}
  - {address: 203.0.113.2, port: 80, protocol: tcp, source_ranges: []}
  - {address: 203.0.113.3, port: 80, protocol: tcp}
`)
	want := [][]netip.Prefix{
		{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.128/25"), netip.MustParsePrefix("10.1.2.3/32")},
		{netip.MustParsePrefix("2001:db8:1::/48"), netip.MustParsePrefix("::/0")},
		nil, nil,
	}
	for i, w := range want {
		if got := c.VIPs[i].SourceRanges; !slices.Equal(got, w) {
			t.Errorf("vips[%d].source_ranges = %v, want %v", i, got, w)
		}
	}
	// They round-trip through the running config.
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back := mustParse(t, string(out))
	for i := range want {
		if !slices.Equal(back.VIPs[i].SourceRanges, c.VIPs[i].SourceRanges) {
			t.Errorf("after a round trip vips[%d].source_ranges = %v, want %v", i, back.VIPs[i].SourceRanges, c.VIPs[i].SourceRanges)
		}
	}
}

// TestParseVIPSourceRanges: the API's VIPs take the same ranges, with the
// same checks and paths relative to the VIP.
func TestParseVIPSourceRanges(t *testing.T) {
	in := VIPFields{Address: netip.MustParseAddr("203.0.113.1"), Port: 80, Protocol: "tcp", SourceRanges: []string{"198.51.100.0/24"}}
	v, err := ParseVIP(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}; !slices.Equal(v.SourceRanges, want) {
		t.Errorf("SourceRanges = %v, want %v", v.SourceRanges, want)
	}
	in.SourceRanges = []string{"198.51.100.0/24", "2001:db8::/32"}
	_, err = ParseVIP(in)
	if err == nil || !strings.Contains(err.Error(), "source_ranges[1]") || !strings.Contains(err.Error(), "is IPv6 but the vip is IPv4") {
		t.Errorf("v6 range through ParseVIP: err = %v", err)
	}
}

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

func TestSourceRangesProblems(t *testing.T) {
	three := base + "vips:\n - {address: 203.0.113.1, port: 80, protocol: tcp}\n - {address: 203.0.113.2, port: 80, protocol: tcp}\n" +
		" - {address: 203.0.113.3, port: 80, protocol: tcp, source_ranges: [10.0.0.0/8, 10.0.0.0/33]}\n"
	tests := []struct {
		name, doc, path, message string
	}{
		{"bad length", three, "vips[2].source_ranges[1]", `"10.0.0.0/33" is not a prefix; write an address and a length, e.g. 198.51.100.0/24 or 2001:db8::/32`},
		{"bare address", vip(", source_ranges: [198.51.100.7]"), "vips[0].source_ranges[0]", `"198.51.100.7" is not a prefix; for the one address write 198.51.100.7/32`},
		{"word", vip(", source_ranges: [office]"), "vips[0].source_ranges[0]", `"office" is not a prefix`},
		{"host bits", vip(", source_ranges: [198.51.100.7/24]"), "vips[0].source_ranges[0]", `"198.51.100.7/24" has address bits set past its length 24; write 198.51.100.0/24`},
		{"v6 on v4 vip", vip(`, source_ranges: [198.51.100.0/24, "2001:db8::/32"]`), "vips[0].source_ranges[1]",
			"2001:db8::/32 is IPv6 but the vip is IPv4; a vip's clients are of its own family"},
		{"v4 on v6 vip", base + `vips: [{address: "2001:db8::1", port: 80, protocol: tcp, source_ranges: [198.51.100.0/24]}]`, "vips[0].source_ranges[0]",
			"198.51.100.0/24 is IPv4 but the vip is IPv6"},
		{"v4-mapped", base + `vips: [{address: "2001:db8::1", port: 80, protocol: tcp, source_ranges: ["::ffff:198.51.100.0/120"]}]`, "vips[0].source_ranges[0]",
			`"::ffff:198.51.100.0/120" is an IPv4-mapped IPv6 prefix; write it as IPv4, e.g. 198.51.100.0/24`},
		{"duplicate", vip(", source_ranges: [198.51.100.0/24, 10.0.0.0/8, 198.51.100.0/24]"), "vips[0].source_ranges[2]",
			"198.51.100.0/24 is already source_ranges[0]; list each range once"},
		{"not a list", vip(", source_ranges: 198.51.100.0/24"), "vips[0].source_ranges", "want a list of client prefixes"},
		{"item not a scalar", vip(", source_ranges: [{prefix: 198.51.100.0/24}]"), "vips[0].source_ranges[0]", "want a prefix such as 198.51.100.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := problems(t, tt.doc)
			for _, p := range ps {
				if p.Path == tt.path && strings.Contains(p.Message, tt.message) {
					return
				}
			}
			t.Errorf("no problem at %s containing %q\n got:\n%v", tt.path, tt.message, &ValidationError{Problems: ps})
		})
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

package config

import (
	"reflect"
	"strings"
	"testing"
)

// TestRingSizeAuto: ring_size: auto and ring_size_max, per VIP and as the
// root's default, resolve into each VIP and survive Marshal.
func TestRingSizeAuto(t *testing.T) {
	type ring struct {
		size uint32
		auto bool
		max  uint32
	}
	cases := []struct {
		name string
		root string
		vips []string // extra fields of each VIP
		want []ring
	}{
		{"default", "", []string{""}, []ring{{65537, false, 0}}},
		{"vip auto", "", []string{", ring_size: auto", ""}, []ring{{0, true, 65537}, {65537, false, 0}}},
		{"vip auto with max", "", []string{", ring_size: auto, ring_size_max: 131071", ", ring_size: auto, ring_size_max: 4099"},
			[]ring{{0, true, 131071}, {0, true, 4099}}},
		{"root auto", "ring_size: auto\n", []string{"", ", ring_size: 251", ", ring_size_max: 8191"},
			[]ring{{0, true, 65537}, {251, false, 0}, {0, true, 8191}}},
		{"root auto with max", "ring_size: auto\nring_size_max: 131071\n", []string{"", ", ring_size: 4099", ", ring_size_max: 8191"},
			[]ring{{0, true, 131071}, {4099, false, 0}, {0, true, 8191}}},
		{"root fixed", "ring_size: 4099\n", []string{"", ", ring_size: auto"}, []ring{{4099, false, 0}, {0, true, 65537}}},
		{"root max alone", "ring_size_max: 131071\n", []string{"", ", ring_size: auto"}, []ring{{65537, false, 0}, {0, true, 131071}}},
	}
	for _, c := range cases {
		doc := base + c.root + "vips:\n"
		for i, extra := range c.vips {
			doc += "  - {address: 203.0.113.1, port: " + string(rune('1'+i)) + "0, protocol: tcp" + extra + "}\n"
		}
		cfg := mustParse(t, doc)
		var got []ring
		for _, v := range cfg.VIPs {
			got = append(got, ring{v.RingSize, v.RingSizeAuto, v.RingSizeMax})
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
		out, err := cfg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("%s: the marshalled config does not parse: %v\n%s", c.name, err, out)
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Errorf("%s: round trip differs:\n%+v\n%+v\n%s", c.name, cfg, again, out)
		}
		if strings.Contains(c.root+strings.Join(c.vips, ""), "auto") && !strings.Contains(string(out), "ring_size: auto") {
			t.Errorf("%s: Marshal does not write auto:\n%s", c.name, out)
		}
	}
}

// TestParseVIPRingSizeBoth: an API VIP cannot ask for a fixed size and
// auto at once.
func TestParseVIPRingSizeBoth(t *testing.T) {
	_, err := ParseVIP(VIPFields{Address: addr("203.0.113.10"), Port: 80, Protocol: "tcp", RingSize: 251, RingSizeAuto: true})
	if err == nil || err.Error() != "ring_size: 251 is given with ring_size_auto; give a fixed size or auto, not both" {
		t.Errorf("err = %v", err)
	}
}

// TestMarshalNoted: the chosen size is a comment on ring_size: auto, and
// only there; the rest is Marshal's output, and it parses back the same.
func TestMarshalNoted(t *testing.T) {
	c := mustParse(t, base+"vips:\n  - {address: 203.0.113.1, port: 80, protocol: tcp, ring_size: auto}\n"+
		"  - {address: 203.0.113.1, port: 81, protocol: tcp, ring_size: 251}\n  - {address: 203.0.113.1, port: 82, protocol: tcp, ring_size: auto}\n")
	plain, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	noted, err := c.MarshalNoted(func(i int) uint32 { return []uint32{11579, 251, 0}[i] })
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(string(plain), "ring_size: auto\n", "ring_size: auto # chosen: 11579 slots\n", 1)
	if string(noted) != want || want == string(plain) {
		t.Errorf("MarshalNoted:\n%s\nwant:\n%s", noted, want)
	}
	again, err := Parse(noted)
	if err != nil || !reflect.DeepEqual(again, c) {
		t.Errorf("the noted config parses to %+v, %v; want %+v", again, err, c)
	}
}

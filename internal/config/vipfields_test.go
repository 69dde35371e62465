package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// fileVIP parses one VIP written in YAML as a file's only VIP, in a file
// that has both ipip source prefixes (so that ipip VIPs are complete) and
// no top-level health_check (as ParseVIP has none). It returns the VIP or
// the problems, with paths relative to the VIP.
func fileVIP(t *testing.T, vipYAML string) (VIP, []Problem) {
	t.Helper()
	doc := "interfaces: [{name: eth0}]\nipip: {source_v4: 198.18.1.0/24, source_v6: 2001:db8:4::/64}\nvips:\n  - " +
		strings.ReplaceAll(vipYAML, "\n", "\n    ") + "\n"
	c, err := Parse([]byte(doc))
	if err != nil {
		ve, ok := errors.AsType[*ValidationError](err)
		if !ok {
			t.Fatalf("Parse: error is %T, want *ValidationError: %v", err, err)
		}
		var out []Problem
		for _, p := range ve.Problems {
			rel, ok := strings.CutPrefix(p.Path, "vips[0].")
			if !ok {
				t.Fatalf("Parse: problem %q is not about the VIP, in:\n%s", p, doc)
			}
			out = append(out, Problem{Path: rel, Message: p.Message})
		}
		return VIP{}, out
	}
	return c.VIPs[0], nil
}

func parseVIPProblems(t *testing.T, in VIPFields) (VIP, []Problem) {
	t.Helper()
	v, err := ParseVIP(in)
	if err == nil {
		return v, nil
	}
	ve, ok := errors.AsType[*ValidationError](err)
	if !ok {
		t.Fatalf("ParseVIP: error is %T, want *ValidationError: %v", err, err)
	}
	for _, p := range ve.Problems {
		if p.Line != 0 {
			t.Errorf("ParseVIP: problem %q has line %d, want none", p, p.Line)
		}
	}
	return VIP{}, ve.Problems
}

func weight(w uint32) *uint32 { return &w }
func boolp(b bool) *bool      { return &b }

// TestParseVIPMatchesFile: for each VIP, written as a file writes it and
// given as fields, ParseVIP returns what Parse returns (defaults
// included), or the same problems for the same fields.
func TestParseVIPMatchesFile(t *testing.T) {
	web := func() VIPFields {
		return VIPFields{Address: addr("203.0.113.10"), Port: 80, Protocol: "tcp",
			Backends: []BackendFields{{Address: addr("198.18.0.11")}}}
	}
	with := func(v VIPFields, edit func(*VIPFields)) VIPFields { edit(&v); return v }
	const webYAML = "{address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: 198.18.0.11}]"
	cases := []struct {
		name string
		yaml string
		in   VIPFields
		// wantProblems is how many problems both must report (0 = valid).
		wantProblems int
	}{
		{"defaults", webYAML + "}", web(), 0},
		{"every field", `{name: web, address: 203.0.113.10, port: 443, protocol: udp, mode: ipip, scheduler: source-hash,
ring_size: 251, conntrack: false, fragments: pass,
backends: [{address: 198.18.0.11, weight: 0}, {address: "2001:db8::11", weight: 7}, {address: 198.18.0.13, mac: "02:00:00:00:00:13"}]}`,
			VIPFields{Name: "web", Address: addr("203.0.113.10"), Port: 443, Protocol: "udp", Mode: "ipip",
				Scheduler: "source-hash", RingSize: 251, Conntrack: boolp(false), Fragments: "pass",
				Backends: []BackendFields{{Address: addr("198.18.0.11"), Weight: weight(0)},
					{Address: addr("2001:db8::11"), Weight: weight(7)}, {Address: addr("198.18.0.13"), MAC: "02:00:00:00:00:13"}}}, 0},
		{"ipv6 every port", `{address: "2001:db8:ffff::1", protocol: tcp, mode: dsr, conntrack: true, backends: [{address: "2001:db8::11", weight: 3}]}`,
			VIPFields{Address: addr("2001:db8:ffff::1"), Protocol: "tcp", Mode: "dsr", Conntrack: boolp(true),
				Backends: []BackendFields{{Address: addr("2001:db8::11"), Weight: weight(3)}}}, 0},
		{"no backends", "{address: 203.0.113.10, port: 80, protocol: tcp}",
			VIPFields{Address: addr("203.0.113.10"), Port: 80, Protocol: "tcp"}, 0},

		{"mode unknown", webYAML + ", mode: nat}", with(web(), func(v *VIPFields) { v.Mode = "nat" }), 1},
		{"mode upper case", webYAML + ", mode: DSR}", with(web(), func(v *VIPFields) { v.Mode = "DSR" }), 1},
		{"scheduler unknown", webYAML + ", scheduler: rr}", with(web(), func(v *VIPFields) { v.Scheduler = "rr" }), 1},
		{"fragments unknown", webYAML + ", fragments: keep}", with(web(), func(v *VIPFields) { v.Fragments = "keep" }), 1},
		{"protocol unknown", "{address: 203.0.113.10, port: 80, protocol: sctp}",
			VIPFields{Address: addr("203.0.113.10"), Port: 80, Protocol: "sctp"}, 1},
		{"protocol missing", "{address: 203.0.113.10, port: 80}", VIPFields{Address: addr("203.0.113.10"), Port: 80}, 1},
		{"address missing", "{port: 80, protocol: tcp}", VIPFields{Port: 80, Protocol: "tcp"}, 1},
		{"address multicast", "{address: 224.0.0.1, port: 80, protocol: tcp}",
			VIPFields{Address: addr("224.0.0.1"), Port: 80, Protocol: "tcp"}, 1},
		{"address with a zone", `{address: "fe80::1%eth0", port: 80, protocol: tcp}`,
			VIPFields{Address: addr("fe80::1%eth0"), Port: 80, Protocol: "tcp"}, 1},
		{"name with a control character", webYAML + `, name: "a\tb"}`, with(web(), func(v *VIPFields) { v.Name = "a\tb" }), 1},
		{"ring size not prime", webYAML + ", ring_size: 1000}", with(web(), func(v *VIPFields) { v.RingSize = 1000 }), 1},
		{"ring size auto", webYAML + ", ring_size: auto}", with(web(), func(v *VIPFields) { v.RingSizeAuto = true }), 0},
		{"ring size auto with a maximum", webYAML + ", ring_size: auto, ring_size_max: 131071}",
			with(web(), func(v *VIPFields) { v.RingSizeAuto, v.RingSizeMax = true, 131071 }), 0},
		{"ring size maximum not prime", webYAML + ", ring_size: auto, ring_size_max: 1000}",
			with(web(), func(v *VIPFields) { v.RingSizeAuto, v.RingSizeMax = true, 1000 }), 1},
		{"ring size maximum without auto", webYAML + ", ring_size: 251, ring_size_max: 65537}",
			with(web(), func(v *VIPFields) { v.RingSize, v.RingSizeMax = 251, 65537 }), 1},
		{"weight over the maximum", "{address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: 198.18.0.11, weight: 70000}]}",
			with(web(), func(v *VIPFields) { v.Backends[0].Weight = weight(70000) }), 1},
		{"bad mac", "{address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: 198.18.0.11, mac: ff:ff:ff:ff:ff:ff}]}",
			with(web(), func(v *VIPFields) { v.Backends[0].MAC = "ff:ff:ff:ff:ff:ff" }), 1},
		{"dsr across families", `{address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: "2001:db8::11"}]}`,
			with(web(), func(v *VIPFields) { v.Backends[0].Address = addr("2001:db8::11") }), 1},
		{"backend is the vip", "{address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: 203.0.113.10}]}",
			with(web(), func(v *VIPFields) { v.Backends[0].Address = addr("203.0.113.10") }), 1},
		{"backend ipv4-mapped", `{address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: "::ffff:198.18.0.11"}]}`,
			with(web(), func(v *VIPFields) { v.Backends[0].Address = addr("::ffff:198.18.0.11") }), 1},
		{"backend twice", "{address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: 198.18.0.11}, {address: 198.18.0.11}]}",
			with(web(), func(v *VIPFields) { v.Backends = append(v.Backends, v.Backends[0]) }), 1},
		{"backend address missing", "{address: 203.0.113.10, port: 80, protocol: tcp, backends: [{weight: 2}]}",
			with(web(), func(v *VIPFields) { v.Backends = []BackendFields{{Weight: weight(2)}} }), 1},
		{"several at once", "{address: 224.0.0.1, port: 80, protocol: tcp, mode: nat, backends: [{address: 198.18.0.11, weight: 70000}]}",
			with(web(), func(v *VIPFields) {
				v.Address, v.Mode, v.Backends[0].Weight = addr("224.0.0.1"), "nat", weight(70000)
			}), 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fromFile, fileProblems := fileVIP(t, c.yaml)
			got, gotProblems := parseVIPProblems(t, c.in)
			if len(fileProblems) != c.wantProblems {
				t.Fatalf("the file gives %d problems, want %d: %v", len(fileProblems), c.wantProblems, fileProblems)
			}
			if !reflect.DeepEqual(gotProblems, fileProblems) {
				t.Fatalf("ParseVIP problems:\n got %v\nwant %v (the file's)", gotProblems, fileProblems)
			}
			if !reflect.DeepEqual(got, fromFile) {
				t.Fatalf("ParseVIP:\n got %+v\nwant %+v (the file's)", got, fromFile)
			}
		})
	}
}

// TestParseVIPEnums: every value of each enumerated field is accepted as
// its constant; anything else is refused by a message naming the field.
func TestParseVIPEnums(t *testing.T) {
	base := VIPFields{Address: addr("203.0.113.10"), Port: 80, Protocol: "tcp"}
	fields := []struct {
		field string
		names []string
		set   func(*VIPFields, string)
		get   func(VIP) string
	}{
		{"mode", ModeNames(), func(v *VIPFields, s string) { v.Mode = s }, func(v VIP) string { return v.Mode.String() }},
		{"scheduler", SchedulerNames(), func(v *VIPFields, s string) { v.Scheduler = s }, func(v VIP) string { return v.Scheduler.String() }},
		{"fragments", FragmentPolicyNames(), func(v *VIPFields, s string) { v.Fragments = s }, func(v VIP) string { return v.Fragments.String() }},
	}
	for _, f := range fields {
		for _, name := range f.names {
			in := base
			f.set(&in, name)
			v, err := ParseVIP(in)
			if err != nil {
				t.Errorf("%s %q: %v", f.field, name, err)
				continue
			}
			if got := f.get(v); got != name {
				t.Errorf("%s %q: got %q", f.field, name, got)
			}
		}
		for _, bad := range []string{"bogus", strings.ToUpper(f.names[0])} {
			in := base
			f.set(&in, bad)
			_, err := ParseVIP(in)
			want := f.field + ": " + errorOf(parseEnum(bad, f.names))
			if err == nil || err.Error() != want {
				t.Errorf("%s %q: err = %v, want %q", f.field, bad, err, want)
			}
		}
	}
	if v, err := ParseVIP(base); err != nil || v.Mode != DefaultMode || v.Scheduler != DefaultScheduler || v.Fragments != DefaultFragments {
		t.Errorf("omitted enums: got %q %q %q (err %v), want %q %q %q",
			v.Mode, v.Scheduler, v.Fragments, err, DefaultMode, DefaultScheduler, DefaultFragments)
	}
}

func errorOf[T any](_ T, err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestParseEnums: the parse functions of the health check and interface
// enums, which a file sets and ParseVIP does not.
func TestParseEnums(t *testing.T) {
	check := func(name string, got string, err error, want string) {
		t.Helper()
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", name, got, err, want)
		}
	}
	for _, s := range []string{"rehash", "drain"} {
		v, err := ParseOnDown(s)
		check("on_down "+s, v.String(), err, s)
	}
	for _, s := range []string{"drop", "fail-open"} {
		v, err := ParseAllDown(s)
		check("all_down "+s, v.String(), err, s)
	}
	for _, s := range []string{"auto", "native", "generic"} {
		v, err := ParseXDPMode(s)
		check("xdp_mode "+s, v.String(), err, s)
	}
	if _, err := ParseAllDown("Fail-Open"); err == nil || err.Error() != `"Fail-Open" must be written in lower case: fail-open` {
		t.Errorf("all_down Fail-Open: err = %v", err)
	}
	if _, err := ParseOnDown("move"); err == nil || err.Error() != `"move" is not supported; use rehash or drain` {
		t.Errorf("on_down move: err = %v", err)
	}
}

// TestParseBackend: a backend is checked against the VIP it joins, as one
// more backend of that VIP in a file is.
func TestParseBackend(t *testing.T) {
	chk := &HealthCheck{Type: "tcp", Interval: DefaultHealthInterval, Timeout: DefaultHealthTimeout,
		Rise: DefaultHealthRise, Fall: DefaultHealthFall, Port: 80, OnDown: OnDownDrain, AllDown: AllDownDrop}
	dsr := VIP{Address: addr("203.0.113.10"), Port: 80, Protocol: "tcp", Mode: ModeDSR, HealthCheck: chk}
	ipip := dsr
	ipip.Mode = ModeIPIP
	six := addr("2001:db8::11")

	b, err := ParseBackend(dsr, BackendFields{Address: addr("198.18.0.11")})
	want := Backend{Address: addr("198.18.0.11"), Weight: 1, HealthCheck: chk}
	if err != nil || !reflect.DeepEqual(b, want) {
		t.Errorf("dsr backend: got %+v, %v; want %+v", b, err, want)
	}
	if b.HealthCheck == chk {
		t.Errorf("the backend's check is the VIP's pointer; want a copy")
	}
	if b, err := ParseBackend(ipip, BackendFields{Address: six, Weight: weight(0)}); err != nil || b.Address != six || b.Weight != 0 {
		t.Errorf("ipip backend of the other family: got %+v, %v; want it, drained", b, err)
	}
	cases := []struct {
		name string
		vip  VIP
		in   BackendFields
		want string
	}{
		{"dsr across families", dsr, BackendFields{Address: six}, "address: 2001:db8::11 is IPv6 but the vip is IPv4 (dsr needs one family)"},
		{"the vip's own address", dsr, BackendFields{Address: dsr.Address}, "address: 203.0.113.10 is the VIP's own address; use the backend's real address"},
		{"weight", ipip, BackendFields{Address: six, Weight: weight(MaxWeight + 1)}, "weight: 65536 is over the maximum 65535"},
		{"mac", dsr, BackendFields{Address: addr("198.18.0.11"), MAC: "00:00:00:00:00:00"},
			"mac: 00:00:00:00:00:00 is all zeros; use the backend's MAC, or remove mac to have it resolved"},
		{"no address", dsr, BackendFields{}, "address: missing; set the backend's address, e.g. 198.18.0.11"},
	}
	for _, c := range cases {
		_, err := ParseBackend(c.vip, c.in)
		if err == nil || err.Error() != c.want {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}

package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

const (
	fullExample    = "../../docs/examples/fulcrum.yaml"
	minimalExample = "../../docs/examples/minimal.yaml"
)

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse:\n%s\nerror:\n%v", doc, err)
	}
	return c
}

func mustLoad(t *testing.T, path string) *Config {
	t.Helper()
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	return c
}

func problems(t *testing.T, doc string) []Problem {
	t.Helper()
	_, err := Parse([]byte(doc))
	if err == nil {
		t.Fatalf("Parse succeeded, want an error, for:\n%s", doc)
	}
	ve, ok := errors.AsType[*ValidationError](err)
	if !ok {
		t.Fatalf("error is %T, want *ValidationError: %v", err, err)
	}
	return ve.Problems
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func mac(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

func TestMinimalExample(t *testing.T) {
	got := mustLoad(t, minimalExample)
	want := &Config{
		Instance:    "default",
		BPFFS:       "/sys/fs/bpf",
		Interfaces:  []Interface{{Name: "eth0", XDPMode: "auto"}},
		Log:         Log{Level: "info", Format: "text"},
		API:         API{Socket: api.DefaultSocket},
		Metrics:     Metrics{Address: "127.0.0.1:9542"},
		Conntrack:   Conntrack{Entries: 1048576, Timeouts: datapath.DefaultConnTimeouts},
		RingSize:    65537,
		RingSizeMax: 65537,
		// 64 Mi slots, 256 MiB: what the datapath allocates by default.
		RingArenaSlots: 1 << 26,
		VIPs: []VIP{{
			Address:   addr("203.0.113.10"),
			Port:      80,
			Protocol:  "tcp",
			Mode:      "dsr",
			Scheduler: "maglev",
			RingSize:  65537,
			Conntrack: true,
			Fragments: "drop",
			Backends: []Backend{
				{Address: addr("198.18.0.11"), Weight: 1},
				{Address: addr("198.18.0.12"), Weight: 1},
			},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("minimal example:\n got %+v\nwant %+v", got, want)
	}
}

func TestFullExample(t *testing.T) {
	c := mustLoad(t, fullExample)
	if len(c.VIPs) != 4 {
		t.Fatalf("got %d VIPs, want 4", len(c.VIPs))
	}
	web, dns, web6, all := &c.VIPs[0], &c.VIPs[1], &c.VIPs[2], &c.VIPs[3]
	topCheck := &HealthCheck{Type: "tcp", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3,
		OnDown: "rehash", AllDown: "drop"}
	webCheck := &HealthCheck{Type: "http", Interval: 5 * time.Second, Timeout: 2 * time.Second, Rise: 2, Fall: 3,
		Port: 8080, Path: "/healthz", ExpectStatus: []int{200, 204}, Host: "www.example.com",
		OnDown: "drain", AllDown: "fail-open"}
	drainCheck := &HealthCheck{Type: "https", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3,
		Port: 8443, Path: "/healthz", ExpectStatus: []int{200}, SkipVerify: true, OnDown: "rehash", AllDown: "drop"}
	dnsCheck := &HealthCheck{Type: "udp", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3,
		Port: 53, Payload: "ping\n", Expect: "pong", OnDown: "rehash", AllDown: "drop"}
	web6Check := &HealthCheck{Type: "tcp", Interval: time.Second, Timeout: time.Second, Rise: 2, Fall: 3,
		Port: 443, OnDown: "rehash", AllDown: "drop"}
	allCheck := &HealthCheck{Type: "tcp", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3,
		Port: 22, OnDown: "rehash", AllDown: "drop"}

	tests := []struct {
		name      string
		got, want any
	}{
		{"instance", c.Instance, "edge1"},
		{"bpffs", c.BPFFS, "/sys/fs/bpf"},
		{"interfaces", c.Interfaces, []Interface{{"eth0", "auto"}, {"eth1", "generic"}}},
		{"log", c.Log, Log{"info", "text"}},
		{"api", c.API, API{"/run/fulcrum/edge1.sock"}},
		{"metrics", c.Metrics, Metrics{"127.0.0.1:9542"}},
		{"conntrack", c.Conntrack, Conntrack{Entries: 1048576, Timeouts: datapath.DefaultConnTimeouts}},
		{"health_check", c.HealthCheck, topCheck},
		{"vrrp", c.VRRP, &VRRP{Interface: "eth0", VRID: 51, Priority: 100, AdvertInterval: 10, Preempt: true,
			UnicastPeers: []netip.Addr{addr("198.18.0.3")}, GratuitousCount: 3, Family: "ipv4",
			VirtualAddresses: []netip.Prefix{netip.MustParsePrefix("198.18.0.100/24")}}},
		{"web key", web.Key(), "tcp/203.0.113.10:80"},
		{"web name", web.Name, "web"},
		{"web settings", []any{web.Mode, web.Scheduler, web.RingSize, web.Conntrack, web.Fragments},
			[]any{ModeDSR, SchedulerMaglev, maglev.DefaultSize, true, FragmentsDrop}},
		{"web check", web.HealthCheck, webCheck},
		{"web backends", web.Backends, []Backend{
			{Address: addr("198.18.0.11"), Weight: 100, MAC: mac("02:42:c6:12:00:0b"), HealthCheck: webCheck},
			{Address: addr("198.18.0.12"), Weight: 100, HealthCheck: webCheck},
			{Address: addr("198.18.0.13"), Weight: 0, HealthCheck: drainCheck},
		}},
		{"dns key", dns.Key(), "udp/203.0.113.53:53"},
		{"dns conntrack", dns.Conntrack, false},
		{"dns check", dns.HealthCheck, dnsCheck},
		{"dns backend weights", []uint32{dns.Backends[0].Weight, dns.Backends[1].Weight}, []uint32{1, 1}},
		{"web6 key", web6.Key(), "tcp/[2001:db8::10]:443"},
		{"web6 scheduler", web6.Scheduler, SchedulerSourceHash},
		{"web6 ring", web6.RingSize, uint32(251)},
		{"web6 check (merged from the top level)", web6.HealthCheck, web6Check},
		{"web6 backend check", web6.Backends[1].HealthCheck, web6Check},
		{"web6 weights", []uint32{web6.Backends[0].Weight, web6.Backends[1].Weight}, []uint32{1, 2}},
		{"all-ports key", all.Key(), "tcp/203.0.113.20:0"},
		{"all-ports ring", []any{all.RingSize, all.RingSizeAuto, all.RingSizeMax}, []any{uint32(0), true, uint32(131071)}},
		{"all-ports check", all.HealthCheck, allCheck},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, tt.got, tt.want)
		}
	}
	// Resolved checks are copies: changing one must not change another.
	web.Backends[1].HealthCheck.ExpectStatus[0] = 599
	web.Backends[1].HealthCheck.Port = 1
	if web.HealthCheck.ExpectStatus[0] != 200 || web.Backends[0].HealthCheck.Port != 8080 {
		t.Errorf("health checks share memory between backends")
	}
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, `
instance: blue-2
interfaces: [{name: eth0}]
metrics: {address: "off"}
health_check: {type: http, interval: 500ms}
vrrp: {interface: eth1, vrid: 7, virtual_addresses: [198.18.0.100/24]}
vips:
  - {address: "2001:db8::1", port: 8080, protocol: udp, backends: [{address: "2001:db8::2"}]}
  - address: 203.0.113.1
    port: 443
    protocol: tcp
    health_check: {type: none}
    backends:
      - address: 198.18.0.1
      - address: 198.18.0.2
        health_check: {type: tcp, port: 22, rise: 1, fall: 1, source: 198.18.0.100}
  - address: 203.0.113.2
    protocol: tcp
    port: 0
    health_check: {type: none}
`)
	httpCheck := &HealthCheck{Type: "http", Interval: 500 * time.Millisecond, Timeout: 500 * time.Millisecond,
		Rise: 2, Fall: 3, Port: 8080, Path: "/", ExpectStatus: []int{200}, OnDown: "rehash", AllDown: "drop"}
	top := *httpCheck
	top.Port = 0
	tests := []struct {
		name      string
		got, want any
	}{
		{"socket follows the instance", c.API.Socket, "/run/fulcrum/blue-2.sock"},
		{"metrics off", c.Metrics.Address, ""},
		{"log", c.Log, Log{Level: "info", Format: "text"}},
		{"conntrack entries", c.Conntrack.Entries, uint32(1 << 20)},
		{"top-level check keeps port 0", c.HealthCheck, &top},
		{"vrrp", c.VRRP, &VRRP{Interface: "eth1", VRID: 7, Priority: 100, AdvertInterval: 10, Preempt: true,
			GratuitousCount: 3, Family: "ipv4", VirtualAddresses: []netip.Prefix{netip.MustParsePrefix("198.18.0.100/24")}}},
		{"vip defaults", []any{c.VIPs[0].Mode, c.VIPs[0].Scheduler, c.VIPs[0].RingSize, c.VIPs[0].Conntrack, c.VIPs[0].Fragments},
			[]any{ModeDSR, SchedulerMaglev, maglev.DefaultSize, true, FragmentsDrop}},
		{"inherited check with the VIP's port, timeout capped at the interval", c.VIPs[0].HealthCheck, httpCheck},
		{"backend inherits", c.VIPs[0].Backends[0].HealthCheck, httpCheck},
		{"weight default", c.VIPs[0].Backends[0].Weight, uint32(1)},
		{"mac default", c.VIPs[0].Backends[0].MAC, net.HardwareAddr(nil)},
		{"type none is nil", c.VIPs[1].HealthCheck, (*HealthCheck)(nil)},
		{"backend under none", c.VIPs[1].Backends[0].HealthCheck, (*HealthCheck)(nil)},
		{"backend's own check", c.VIPs[1].Backends[1].HealthCheck, &HealthCheck{Type: "tcp", Interval: 2 * time.Second,
			Timeout: time.Second, Rise: 1, Fall: 1, Port: 22, Source: addr("198.18.0.100"), OnDown: "rehash", AllDown: "drop"}},
		{"port 0 with check none", c.VIPs[2].Port, uint16(0)},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, tt.got, tt.want)
		}
	}
}

func TestEmptyVIPsAndBackends(t *testing.T) {
	for _, doc := range []string{
		"interfaces: [{name: eth0}]",
		"interfaces: [{name: eth0}]\nvips: []",
		"interfaces: [{name: eth0}]\nvips:",
		"interfaces: [{name: eth0}]\nvips: [{address: 203.0.113.1, port: 80, protocol: tcp}]",
		"interfaces: [{name: eth0}]\nvips: [{address: 203.0.113.1, port: 80, protocol: tcp, backends: []}]",
	} {
		c := mustParse(t, doc)
		for _, v := range c.VIPs {
			if len(v.Backends) != 0 {
				t.Errorf("%q: got %d backends, want 0", doc, len(v.Backends))
			}
		}
	}
}

func TestMergeKeys(t *testing.T) {
	c := mustParse(t, `
interfaces: [{name: eth0}]
health_check: &hc {type: tcp, interval: 3s}
vips:
  - &web
    address: 203.0.113.1
    port: 80
    protocol: tcp
    backends: &pool
      - {address: 198.18.0.1, weight: 3}
      - {address: 198.18.0.2}
  - <<: *web
    port: 443
    health_check: {<<: *hc, rise: 5}
  - <<: [{port: 8080}, *web]
`)
	tests := []struct {
		name      string
		got, want any
	}{
		{"keys", []string{c.VIPs[0].Key(), c.VIPs[1].Key(), c.VIPs[2].Key()},
			[]string{"tcp/203.0.113.1:80", "tcp/203.0.113.1:443", "tcp/203.0.113.1:8080"}},
		{"shared backends", c.VIPs[1].Backends[0].Weight, uint32(3)},
		{"merged check", []any{c.VIPs[1].HealthCheck.Interval, c.VIPs[1].HealthCheck.Rise, c.VIPs[1].HealthCheck.Port},
			[]any{3 * time.Second, 5, uint16(443)}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, tt.got, tt.want)
		}
	}
}

// base is a valid start that the problem cases extend.
const base = "interfaces: [{name: eth0}]\n"

func vip(extra string) string {
	return base + "vips:\n  - {address: 203.0.113.1, port: 80, protocol: tcp" + extra + "}\n"
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name, doc, path, fragment string
	}{
		// Top level.
		{"no interfaces", "vips: []", "interfaces", "at least one interface is required"},
		{"empty interfaces", "interfaces: []", "interfaces", "at least one"},
		{"interfaces not a list", "interfaces: eth0", "interfaces", "want a list of interfaces"},
		{"bad instance", base + "instance: Blue", "instance", `"Blue" is not a valid instance name`},
		{"long instance", base + "instance: " + strings.Repeat("a", 33), "instance", "1 to 32"},
		{"relative bpffs", base + "bpffs: sys/fs/bpf", "bpffs", "not an absolute path"},
		{"relative socket", base + "api: {socket: fulcrum.sock}", "api.socket", "not an absolute path"},
		{"long socket", base + "api: {socket: /" + strings.Repeat("s", 120) + "}", "api.socket", "over the 107"},
		{"metrics no port", base + "metrics: {address: 127.0.0.1}", "metrics.address", "not host:port"},
		{"metrics port 0", base + "metrics: {address: \"127.0.0.1:0\"}", "metrics.address", "no valid port"},
		{"metrics empty", base + "metrics: {address: \"\"}", "metrics.address", `"off" to disable`},
		{"log level", base + "log: {level: trace}", "log.level", `"trace" is not supported; use one of: debug, info, warn, error`},
		{"log format case", base + "log: {format: JSON}", "log.format", "lower case: json"},
		{"conntrack small", base + "conntrack: {entries: 100}", "conntrack.entries", "100 is below the minimum 1024"},
		{"conntrack big", base + "conntrack: {entries: 67108865}", "conntrack.entries", "67108865 is over the maximum 67108864"},
		{"timeout zero", base + "conntrack: {timeouts: {tcp_fin: 0s}}", "conntrack.timeouts.tcp_fin", "must be above zero"},
		{"timeout negative", base + "conntrack: {timeouts: {udp: -5s}}", "conntrack.timeouts.udp", "-5s must be above zero"},
		{"timeout no unit", base + "conntrack: {timeouts: {udp: 30}}", "conntrack.timeouts.udp", "has no unit"},
		{"timeout fraction", base + "conntrack: {timeouts: {tcp_syn: 1500ms}}", "conntrack.timeouts.tcp_syn", "not a whole number of seconds"},
		{"timeout too long", base + "conntrack: {timeouts: {tcp_established: 200h}}", "conntrack.timeouts.tcp_established", "from 1s to 168h0m0s"},
		{"timeout unknown state", base + "conntrack: {timeouts: {tcp_time_wait: 5s}}", "conntrack.timeouts.tcp_time_wait", "unknown"},
		{"timeouts not a mapping", base + "conntrack: {timeouts: 5s}", "conntrack.timeouts", "want a mapping of idle timeouts"},
		{"vip timeout, other protocol", vip(", conntrack: {timeouts: {udp: 5s}}"), "vips[0].conntrack.timeouts.udp", "a tcp VIP's entries have no udp timeout"},
		{"udp vip timeout, tcp state", base + "vips:\n  - {address: 203.0.113.1, port: 53, protocol: udp, conntrack: {timeouts: {tcp_fin: 5s}}}\n",
			"vips[0].conntrack.timeouts.tcp_fin", "a udp VIP's entries have no tcp_fin timeout: set udp"},
		{"vip timeout zero", vip(", conntrack: {timeouts: {tcp_closed: 0s}}"), "vips[0].conntrack.timeouts.tcp_closed", "must be above zero"},
		{"vip timeout unknown key", vip(", conntrack: {timeout: {tcp_closed: 1s}}"), "vips[0].conntrack.timeout", "unknown"},
		{"root is a list", "- a", "config", "want a mapping of settings"},
		{"section not a mapping", base + "log: info", "log", "want a mapping with level and format"},

		// Interfaces.
		{"interface name missing", "interfaces: [{xdp_mode: native}]", "interfaces[0].name", "missing"},
		{"interface name long", "interfaces: [{name: abcdefghijklmnop}]", "interfaces[0].name", "at most 15"},
		{"interface name slash", "interfaces: [{name: a/b}]", "interfaces[0].name", "'/'"},
		{"interface name space", "interfaces: [{name: \"a b\"}]", "interfaces[0].name", "whitespace"},
		{"interface duplicate", "interfaces: [{name: eth0}, {name: eth1}, {name: eth0}]", "interfaces[2].name", `"eth0" is already interfaces[0]`},
		{"xdp mode", "interfaces: [{name: eth0, xdp_mode: offload}]", "interfaces[0].xdp_mode", "use one of: auto, native, generic"},
		{"interface as string", "interfaces: [eth0]", "interfaces[0]", "want a mapping such as {name: eth0}"},

		// VIPs.
		{"vip address missing", base + "vips: [{port: 80, protocol: tcp}]", "vips[0].address", "missing; set the VIP's IPv4 or IPv6 address"},
		{"vip address bad", base + "vips: [{address: 203.0.113, port: 80, protocol: tcp}]", "vips[0].address", "is not an IP address"},
		{"vip address prefix", base + "vips: [{address: 203.0.113.1/32, port: 80, protocol: tcp}]", "vips[0].address", "write the address alone: 203.0.113.1"},
		{"vip address unspecified", base + "vips: [{address: 0.0.0.0, port: 80, protocol: tcp}]", "vips[0].address", "unspecified"},
		{"vip address multicast", base + "vips: [{address: \"ff02::1\", port: 80, protocol: tcp}]", "vips[0].address", "multicast"},
		{"vip address mapped", base + "vips: [{address: \"::ffff:203.0.113.1\", port: 80, protocol: tcp}]", "vips[0].address", "write it as IPv4: 203.0.113.1"},
		{"vip address zone", base + "vips: [{address: \"fe80::1%eth0\", port: 80, protocol: tcp}]", "vips[0].address", "zone"},
		{"port too big", base + "vips: [{address: 203.0.113.1, port: 65536, protocol: tcp}]", "vips[0].port", "65536 is over the maximum 65535"},
		{"port negative", base + "vips: [{address: 203.0.113.1, port: -1, protocol: tcp}]", "vips[0].port", "-1 is below the minimum 0"},
		{"port word", base + "vips: [{address: 203.0.113.1, port: eighty, protocol: tcp}]", "vips[0].port", `"eighty" is not a number`},
		{"port quoted", base + "vips: [{address: 203.0.113.1, port: \"80\", protocol: tcp}]", "vips[0].port", "without quotes"},
		{"port float", base + "vips: [{address: 203.0.113.1, port: 80.5, protocol: tcp}]", "vips[0].port", "not a whole number"},
		{"protocol missing", base + "vips: [{address: 203.0.113.1, port: 80}]", "vips[0].protocol", "missing; set tcp or udp"},
		{"protocol twice", vip(", protocol: udp"), "vips[0].protocol", `set twice`},
		{"protocol unsupported", base + "vips: [{address: 203.0.113.1, port: 80, protocol: sctp}]", "vips[0].protocol", `"sctp" is not supported; use tcp or udp`},
		{"mode", vip(", mode: nat"), "vips[0].mode", `"nat" is not supported; use dsr or ipip`},
		{"scheduler", vip(", scheduler: rr"), "vips[0].scheduler", "use one of: maglev, source-hash, round-robin, least-conn"},
		{"round-robin without conntrack", vip(", scheduler: round-robin, conntrack: false"), "vips[0].scheduler", "round-robin needs the connection table"},
		{"least-conn without conntrack", vip(", scheduler: least-conn, conntrack: false"), "vips[0].scheduler", "least-conn counts the connection table's entries; it needs conntrack on"},
		{"ring not prime", vip(", ring_size: 1000"), "vips[0].ring_size", "1000 is not a prime between 251 and 131071 (try 997)"},
		{"ring too small", vip(", ring_size: 13"), "vips[0].ring_size", "13 is not a prime between 251 and 131071 (try 65537)"},
		{"ring too big", vip(", ring_size: 262139"), "vips[0].ring_size", "not a prime between 251 and 131071"},
		{"ring autox", vip(", ring_size: autox"), "vips[0].ring_size", `"autox" is neither auto nor a number; use auto (the daemon chooses the size, docs/datapath.md) or a prime between 251 and 131071, e.g. 65537`},
		{"ring Auto", vip(", ring_size: Auto"), "vips[0].ring_size", `"Auto" must be written in lower case: auto`},
		{"ring float", vip(", ring_size: 251.5"), "vips[0].ring_size", "251.5 is not a whole number"},
		{"ring list", vip(", ring_size: [auto]"), "vips[0].ring_size", "want text, got a list"},
		{"ring max not prime", vip(", ring_size: auto, ring_size_max: 65536"), "vips[0].ring_size_max", "65536 is not a prime between 251 and 131071 (try 65537)"},
		{"ring max too small", vip(", ring_size: auto, ring_size_max: 13"), "vips[0].ring_size_max", "13 is not a prime between 251 and 131071 (try 65537)"},
		{"ring max too big", vip(", ring_size: auto, ring_size_max: 262139"), "vips[0].ring_size_max", "262139 is not a prime between 251 and 131071"},
		{"ring max negative", vip(", ring_size: auto, ring_size_max: -7"), "vips[0].ring_size_max", "-7 is not a prime between 251 and 131071"},
		{"ring max word", vip(", ring_size: auto, ring_size_max: auto"), "vips[0].ring_size_max", `"auto" is not a number`},
		{"ring max with fixed", vip(", ring_size: 251, ring_size_max: 65537"), "vips[0].ring_size_max", "applies only with ring_size: auto, which chooses a size up to it; the ring size here is fixed at 251"},
		{"ring max alone", vip(", ring_size_max: 65537"), "vips[0].ring_size_max", "the ring size here is fixed at 65537, so remove ring_size_max or set ring_size: auto"},
		{"root ring autox", base + "ring_size: autox", "ring_size", `"autox" is neither auto nor a number`},
		{"root ring not prime", base + "ring_size: 1000", "ring_size", "1000 is not a prime between 251 and 131071 (try 997)"},
		{"root ring max not prime", base + "ring_size: auto\nring_size_max: 1000", "ring_size_max", "1000 is not a prime between 251 and 131071 (try 997)"},
		{"conntrack not bool", vip(", conntrack: yes"), "vips[0].conntrack", "want true or false"},
		{"fragments", vip(", fragments: reassemble"), "vips[0].fragments", "use drop or pass"},
		{"vip name control", vip(", name: \"a\\tb\""), "vips[0].name", "control characters"},
		{"duplicate vip", base + "vips:\n - {address: 203.0.113.1, port: 80, protocol: tcp}\n - {address: 203.0.113.2, port: 80, protocol: tcp}\n - {address: 203.0.113.1, port: 80, protocol: tcp}\n",
			"vips[2]", "tcp/203.0.113.1:80 is already vips[0]"},
		{"duplicate vip name", base + "vips:\n - {name: a, address: 203.0.113.1, port: 80, protocol: tcp}\n - {name: a, address: 203.0.113.1, port: 81, protocol: tcp}\n",
			"vips[1].name", `"a" is already the name of vips[0]`},
		{"fragments disagree", base + "vips:\n - {address: 203.0.113.1, port: 80, protocol: tcp}\n - {address: 203.0.113.1, port: 53, protocol: udp, fragments: pass}\n",
			"vips[1].fragments", `conflicts with vips[0]`},
		{"backends not a list", vip(", backends: {address: 198.18.0.1}"), "vips[0].backends", "want a list of backends"},
		{"source range bad length", base + "vips:\n - {address: 203.0.113.1, port: 80, protocol: tcp}\n - {address: 203.0.113.2, port: 80, protocol: tcp}\n" +
			" - {address: 203.0.113.3, port: 80, protocol: tcp, source_ranges: [10.0.0.0/8, 10.0.0.0/33]}\n",
			"vips[2].source_ranges[1]", `"10.0.0.0/33" is not a prefix; write an address and a length, e.g. 198.51.100.0/24 or 2001:db8::/32`},
		{"source range bare address", vip(", source_ranges: [198.51.100.7]"), "vips[0].source_ranges[0]", `"198.51.100.7" is not a prefix; for the one address write 198.51.100.7/32`},
		{"source range word", vip(", source_ranges: [office]"), "vips[0].source_ranges[0]", `"office" is not a prefix`},
		{"source range host bits", vip(", source_ranges: [198.51.100.7/24]"), "vips[0].source_ranges[0]", `"198.51.100.7/24" has address bits set past its length 24; write 198.51.100.0/24`},
		{"source range v6 on v4 vip", vip(`, source_ranges: [198.51.100.0/24, "2001:db8::/32"]`), "vips[0].source_ranges[1]",
			"2001:db8::/32 is IPv6 but the vip is IPv4; a vip's clients are of its own family"},
		{"source range v4 on v6 vip", base + `vips: [{address: "2001:db8::1", port: 80, protocol: tcp, source_ranges: [198.51.100.0/24]}]`, "vips[0].source_ranges[0]",
			"198.51.100.0/24 is IPv4 but the vip is IPv6"},
		{"source range v4-mapped", base + `vips: [{address: "2001:db8::1", port: 80, protocol: tcp, source_ranges: ["::ffff:198.51.100.0/120"]}]`, "vips[0].source_ranges[0]",
			`"::ffff:198.51.100.0/120" is an IPv4-mapped IPv6 prefix; write it as IPv4, e.g. 198.51.100.0/24`},
		{"source range duplicate", vip(", source_ranges: [198.51.100.0/24, 10.0.0.0/8, 198.51.100.0/24]"), "vips[0].source_ranges[2]",
			"198.51.100.0/24 is already source_ranges[0]; list each range once"},
		{"source ranges not a list", vip(", source_ranges: 198.51.100.0/24"), "vips[0].source_ranges", "want a list of client prefixes"},
		{"source range not a scalar", vip(", source_ranges: [{prefix: 198.51.100.0/24}]"), "vips[0].source_ranges[0]", "want a prefix such as 198.51.100.0/24"},

		// Backends.
		{"backend address missing", vip(", backends: [{weight: 1}]"), "vips[0].backends[0].address", "missing"},
		{"backend family", vip(", backends: [{address: 198.18.0.1}, {address: \"2001:db8::5\"}]"), "vips[0].backends[1].address",
			"2001:db8::5 is IPv6 but the vip is IPv4 (dsr needs one family)"},
		{"backend family v6", base + "vips: [{address: \"2001:db8::1\", port: 80, protocol: tcp, backends: [{address: 198.18.0.1}]}]",
			"vips[0].backends[0].address", "198.18.0.1 is IPv4 but the vip is IPv6"},
		{"backend duplicate", vip(", backends: [{address: 198.18.0.1}, {address: 198.18.0.2}, {address: 198.18.0.1}]"),
			"vips[0].backends[2].address", "198.18.0.1 is already backends[0]"},
		{"backend is the vip", vip(", backends: [{address: 203.0.113.1}]"), "vips[0].backends[0].address", "the VIP's own address"},
		{"backend loopback", vip(", backends: [{address: 127.0.0.1}]"), "vips[0].backends[0].address", "loopback"},
		{"weight too big", vip(", backends: [{address: 198.18.0.1, weight: 70000}]"), "vips[0].backends[0].weight", "70000 is over the maximum 65535"},
		{"weight negative", vip(", backends: [{address: 198.18.0.1, weight: -1}]"), "vips[0].backends[0].weight", "-1 is below the minimum 0"},
		{"mac bad", vip(", backends: [{address: 198.18.0.1, mac: zz}]"), "vips[0].backends[0].mac", "not a MAC address"},
		{"mac multicast", vip(", backends: [{address: 198.18.0.1, mac: \"01:00:5e:00:00:01\"}]"), "vips[0].backends[0].mac", "multicast or broadcast"},
		{"mac broadcast", vip(", backends: [{address: 198.18.0.1, mac: \"ff:ff:ff:ff:ff:ff\"}]"), "vips[0].backends[0].mac", "multicast or broadcast"},
		{"mac zero", vip(", backends: [{address: 198.18.0.1, mac: \"00:00:00:00:00:00\"}]"), "vips[0].backends[0].mac", "all zeros"},
		{"mac long", vip(", backends: [{address: 198.18.0.1, mac: \"02:00:00:00:00:00:00:01\"}]"), "vips[0].backends[0].mac", "8 bytes"},

		// Health checks.
		{"hc type missing", base + "health_check: {interval: 1s}", "health_check.type", "missing; set one of: tcp, http, https, udp, none"},
		{"hc type bad", base + "health_check: {type: icmp}", "health_check.type", `"icmp" is not supported`},
		{"hc interval no unit", base + "health_check: {type: tcp, interval: 2}", "health_check.interval", "2 has no unit; add one, e.g. 2s"},
		{"hc interval bad", base + "health_check: {type: tcp, interval: fast}", "health_check.interval", `"fast" is not a duration`},
		{"hc interval zero", base + "health_check: {type: tcp, interval: 0s}", "health_check.interval", "must be above zero"},
		{"hc interval negative", base + "health_check: {type: tcp, interval: -1s}", "health_check.interval", "must be above zero"},
		{"hc timeout over interval", vip(", health_check: {type: tcp, interval: 1s, timeout: 2s}"), "vips[0].health_check.timeout",
			"2s is longer than the interval 1s"},
		{"hc timeout default over interval", vip(", health_check: {type: tcp, interval: 3s, timeout: 0s}"), "vips[0].health_check.timeout", "above zero"},
		{"hc rise", base + "health_check: {type: tcp, rise: 0}", "health_check.rise", "0 is below the minimum 1"},
		{"hc fall", base + "health_check: {type: tcp, fall: 101}", "health_check.fall", "101 is over the maximum 100"},
		{"hc port", base + "health_check: {type: tcp, port: 70000}", "health_check.port", "over the maximum 65535"},
		{"hc path", vip(", health_check: {type: http, path: healthz}"), "vips[0].health_check.path", `"healthz" must start with /`},
		{"hc path for tcp", vip(", health_check: {type: tcp, path: /}"), "vips[0].health_check.path", "only http and https checks use it"},
		{"hc status range", vip(", health_check: {type: https, expect_status: [200, 99]}"), "vips[0].health_check.expect_status[1]", "99 is below the minimum 100"},
		{"hc status empty", vip(", health_check: {type: http, expect_status: []}"), "vips[0].health_check.expect_status", "list at least one"},
		{"hc status scalar", vip(", health_check: {type: http, expect_status: 200}"), "vips[0].health_check.expect_status", "e.g. [200]"},
		{"hc skip_verify for http", vip(", health_check: {type: http, skip_verify: true}"), "vips[0].health_check.skip_verify", "only https checks use it"},
		{"hc udp payload missing", base + "vips: [{address: 203.0.113.1, port: 53, protocol: udp, health_check: {type: udp}}]",
			"vips[0].health_check.payload", "missing; a udp check needs the datagram to send"},
		{"hc payload for tcp", vip(", health_check: {type: tcp, payload: x}"), "vips[0].health_check.payload", "only udp checks use it"},
		{"hc expect for http", vip(", health_check: {type: http, expect: x}"), "vips[0].health_check.expect", "only udp checks use it"},
		{"hc on_down", base + "health_check: {type: tcp, on_down: panic}", "health_check.on_down", "use rehash or drain"},
		{"hc all_down", base + "health_check: {type: tcp, all_down: open}", "health_check.all_down", "use drop or fail-open"},
		{"hc source multicast", base + "health_check: {type: tcp, source: 224.0.0.1}", "health_check.source", "multicast"},
		{"hc source family", vip(", health_check: {type: tcp, source: \"2001:db8::1\"}"), "vips[0].health_check.source", "is IPv6 but the address it checks"},
		{"hc port needed", base + "vips: [{address: 203.0.113.1, port: 0, protocol: tcp, health_check: {type: tcp}}]",
			"vips[0].health_check.port", "set health_check.port"},
		{"hc port needed, inherited", base + "health_check: {type: http}\nvips: [{address: 203.0.113.1, protocol: tcp}]",
			"vips[0].health_check.port", "inherited from the top-level health_check"},
		{"hc port needed, backend", base + "vips: [{address: 203.0.113.1, protocol: udp, backends: [{address: 198.18.0.1, health_check: {type: udp, payload: x}}]}]",
			"vips[0].backends[0].health_check.port", "set health_check.port"},
		{"hc not a mapping", vip(", health_check: tcp"), "vips[0].health_check", "want a health check mapping"},

		// VRRP.
		{"vrrp interface missing", base + "vrrp: {vrid: 1, virtual_addresses: [198.18.0.100/24]}", "vrrp.interface", "missing"},
		{"vrrp interface bad", base + "vrrp: {vrid: 1, interface: \"a:b\"}", "vrrp.interface", "':'"},
		{"vrrp vrid missing", base + "vrrp: {interface: eth0, virtual_addresses: [198.18.0.100/24]}", "vrrp.vrid", "missing; set the virtual router id 1..255"},
		{"vrrp vrid zero", base + "vrrp: {interface: eth0, vrid: 0, virtual_addresses: [198.18.0.100/24]}", "vrrp.vrid", "0 is below the minimum 1"},
		{"vrrp vrid big", base + "vrrp: {interface: eth0, vrid: 256, virtual_addresses: [198.18.0.100/24]}", "vrrp.vrid", "256 is over the maximum 255"},
		{"vrrp priority", base + "vrrp: {interface: eth0, vrid: 1, priority: 0, virtual_addresses: [198.18.0.100/24]}", "vrrp.priority", "below the minimum 1"},
		{"vrrp advert", base + "vrrp: {interface: eth0, vrid: 1, advert_interval: 4096, virtual_addresses: [198.18.0.100/24]}", "vrrp.advert_interval", "over the maximum 4095"},
		{"vrrp preempt", base + "vrrp: {interface: eth0, vrid: 1, preempt: on, virtual_addresses: [198.18.0.100/24]}", "vrrp.preempt", "want true or false"},
		{"vrrp preempt delay", base + "vrrp: {interface: eth0, vrid: 1, preempt_delay: -5s, virtual_addresses: [198.18.0.100/24]}", "vrrp.preempt_delay", "must not be negative"},
		{"vrrp preempt delay unit", base + "vrrp: {interface: eth0, vrid: 1, preempt_delay: 5, virtual_addresses: [198.18.0.100/24]}", "vrrp.preempt_delay", "no unit"},
		{"vrrp gratuitous", base + "vrrp: {interface: eth0, vrid: 1, gratuitous_count: 101, virtual_addresses: [198.18.0.100/24]}", "vrrp.gratuitous_count", "over the maximum 100"},
		{"vrrp family", base + "vrrp: {interface: eth0, vrid: 1, family: inet, virtual_addresses: [198.18.0.100/24]}", "vrrp.family", "use ipv4 or ipv6"},
		{"vrrp no virtual addresses", base + "vrrp: {interface: eth0, vrid: 1}", "vrrp.virtual_addresses", "is empty"},
		{"vrrp virtual address bad", base + "vrrp: {interface: eth0, vrid: 1, virtual_addresses: [198.18.0.100]}", "vrrp.virtual_addresses[0]", "not an address with its prefix length"},
		{"vrrp peer family", base + "vrrp: {interface: eth0, vrid: 1, family: ipv6, unicast_peers: [198.18.0.3], virtual_addresses: [198.18.0.100/24]}", "vrrp.unicast_peers[0]", "is IPv4 but vrrp.family is ipv6"},
		{"vrrp peer bad", base + "vrrp: {interface: eth0, vrid: 1, unicast_peers: [peer], virtual_addresses: [198.18.0.100/24]}", "vrrp.unicast_peers[0]", "not an IP address"},
		{"vrrp peer duplicate", base + "vrrp: {interface: eth0, vrid: 1, unicast_peers: [198.18.0.3, 198.18.0.3], virtual_addresses: [198.18.0.100/24]}", "vrrp.unicast_peers[1]", "already unicast_peers[0]"},
		{"vrrp peers scalar", base + "vrrp: {interface: eth0, vrid: 1, unicast_peers: 198.18.0.3, virtual_addresses: [198.18.0.100/24]}", "vrrp.unicast_peers", "want a list of addresses"},

		// Schema.
		{"unknown top-level field", base + "vipz: []", "vipz", "unknown field; did you mean vips?"},
		{"unknown nested field", vip(", backends: [{address: 198.18.0.1, wieght: 2}]"), "vips[0].backends[0].wieght", "did you mean weight?"},
		{"unknown field lists keys", base + "log: {color: true}", "log.color", "(allowed here: level, format)"},
		{"dashed key", vip(", ring-size: 251"), "vips[0].ring-size", "did you mean ring_size?"},
		{"duplicate key", base + "instance: a\ninstance: b", "instance", "set twice (first on line 2)"},
		{"second document", base + "---\ninstance: a\n", "yaml", "more than one YAML document"},
		{"bad yaml", "interfaces: [{name: eth0}\n", "yaml", "syntax error"},
		{"tab indentation", "interfaces:\n\t- name: eth0\n", "yaml", "syntax error"},
		{"unknown anchor", "interfaces: *nope\n", "yaml", "unknown anchor"},
		{"bad merge", base + "log: {<<: 5}", "log.<<", "merge key takes a mapping"},
		{"recursive merge", base + "log: &l {<<: *l}", "log", "nested more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := problems(t, tt.doc)
			for _, p := range ps {
				if p.Path == tt.path && strings.Contains(p.Message, tt.fragment) {
					return
				}
			}
			t.Errorf("no problem at %s containing %q\n got:\n%v\ndoc:\n%s", tt.path, tt.fragment, &ValidationError{Problems: ps}, tt.doc)
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	doc := `instance: Bad_Name
interfaces:
  - name: eth0
  - name: eth0
vrrp:
  interface: eth0
  vrid: 300
vips:
  - address: 203.0.113.10
    port: 80
    protocol: sctp
    mode: nat
    ring_size: 1000
    backends:
      - address: "2001:db8::5"
      - address: 198.18.0.11
        weight: 70000
      - address: 198.18.0.12
        colour: blue
  - address: 203.0.113.11
    port: "eighty"
    protocol: tcp
`
	want := []Problem{
		{"instance", `"Bad_Name" is not a valid instance name`, 1},
		{"interfaces[1].name", `"eth0" is already interfaces[0]`, 4},
		{"vrrp.vrid", "300 is over the maximum 255", 7},
		{"vrrp.virtual_addresses", "is empty", 6},
		{"vips[0].protocol", `"sctp" is not supported; use tcp or udp`, 11},
		{"vips[0].mode", `"nat" is not supported; use dsr or ipip`, 12},
		{"vips[0].ring_size", "1000 is not a prime between 251 and 131071 (try 997)", 13},
		{"vips[0].backends[1].weight", "70000 is over the maximum 65535", 17},
		{"vips[0].backends[2].colour", "unknown field", 19},
		{"vips[1].port", `"eighty" is not a number; use a whole number 0..65535`, 21},
	}
	ps := problems(t, doc)
	for _, w := range want {
		found := false
		for _, p := range ps {
			if p.Path == w.Path && strings.Contains(p.Message, w.Message) && p.Line == w.Line {
				found = true
			}
		}
		if !found {
			t.Errorf("missing problem %v", w)
		}
	}
	// The family problem is only reported while the vip's address is valid;
	// here it is, so it is there too.
	if !strings.Contains(fmt.Sprint(&ValidationError{Problems: ps}), "vips[0].backends[0].address: 2001:db8::5 is IPv6 but the vip is IPv4 (dsr needs one family) (line 15)") {
		t.Errorf("family problem missing")
	}
	if len(ps) != len(want)+1 {
		t.Errorf("got %d problems, want %d:\n%v", len(ps), len(want)+1, &ValidationError{Problems: ps})
	}
}

func TestLineNumbers(t *testing.T) {
	tests := []struct {
		name, doc string
		want      string // in Error()
	}{
		{"unknown field", "interfaces:\n  - name: eth0\n    mode: native\n", "interfaces[0].mode: unknown field; did you mean xdp_mode? (allowed here: name, xdp_mode) (line 3)"},
		{"wrong type", base + "vips:\n  - address: 203.0.113.1\n    port: \"eighty\"\n    protocol: tcp\n", `vips[0].port: "eighty" is not a number; use a whole number 0..65535 (line 4)`},
		{"list for a number", base + "conntrack:\n  entries: [1]\n", "conntrack.entries: want a whole number 1024..67108864, got a list (line 3)"},
		{"bad yaml", "interfaces:\n  - name: eth0\n vips: []\n", "yaml: syntax error: "},
		{"bad yaml line", "interfaces: [{name: eth0}]\n\ninstance: a: b\n", "yaml: syntax error: mapping values are not allowed in this context (check the indentation and quoting) (line 3)"},
		{"unclosed quote", "instance: \"abc\ninterfaces: []\n", "yaml: syntax error: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got  %v\nwant an error containing %q", err, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(vip(", backends: [{address: 198.18.0.1, weight: 70000}]")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(bad)
	want := bad + ": vips[0].backends[0].weight: 70000 is over the maximum 65535 (line 3)"
	if err == nil || err.Error() != want {
		t.Errorf("Load(bad):\n got %v\nwant %s", err, want)
	}
	if ve, ok := errors.AsType[*ValidationError](err); !ok || ve.File != bad {
		t.Errorf("Load(bad) error is %T, want a *ValidationError with File %s", err, bad)
	}
	missing := filepath.Join(dir, "missing.yaml")
	if _, err := Load(missing); err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing): got %v, want a not-exist error naming %s", err, missing)
	}
}

func TestAliasExpansionIsBounded(t *testing.T) {
	// 3000 aliases of a VIP with 3000 aliases of a backend: 9 million
	// backends from a 30 kB file.
	var b strings.Builder
	b.WriteString(base)
	b.WriteString("vips:\n  - &v {address: 203.0.113.1, port: 80, protocol: tcp, backends: [&b {address: 198.18.0.1}")
	for range 3000 {
		b.WriteString(", *b")
	}
	b.WriteString("]}\n")
	for range 3000 {
		b.WriteString("  - *v\n")
	}
	// The bound is the expansion error itself; how long Parse takes is
	// for benchmarks, not for a test on a shared machine.
	_, err := Parse([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "config: the document expands to more than") {
		t.Fatalf("got %.300v, want the expansion error", err)
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		err  *ValidationError
		want string
	}{
		{&ValidationError{Problems: []Problem{{"a.b", "bad", 3}}}, "a.b: bad (line 3)"},
		{&ValidationError{Problems: []Problem{{"a", "x", 0}, {"b", "y", 2}}}, "a: x\nb: y (line 2)"},
		{&ValidationError{File: "f.yaml", Problems: []Problem{{"a", "x", 0}, {"b", "y", 2}}}, "f.yaml: a: x\nf.yaml: b: y (line 2)"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{fullExample, minimalExample} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(vip(", backends: [{address: 198.18.0.1, weight: 70000, mac: \"02:00:00:00:00:01\"}]")))
	f.Add([]byte(base + "health_check: &h {type: http}\nvips: [{address: 203.0.113.1, protocol: tcp, health_check: {<<: *h, port: 1}}]"))
	f.Add([]byte(base + "vrrp: {interface: eth0, vrid: 1, unicast_peers: [198.18.0.3], virtual_addresses: [198.18.0.100/24]}"))
	f.Add([]byte(""))
	f.Add([]byte("- a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil {
			if c == nil {
				t.Fatal("nil config and nil error")
			}
			return
		}
		if c != nil {
			t.Fatal("config returned with an error")
		}
		if err.Error() == "" {
			t.Fatal("empty error")
		}
		ve, ok := errors.AsType[*ValidationError](err)
		if !ok {
			t.Fatalf("error is %T, want *ValidationError", err)
		}
		if len(ve.Problems) == 0 {
			t.Fatal("ValidationError without problems")
		}
		for _, p := range ve.Problems {
			if p.Path == "" || p.Message == "" {
				t.Fatalf("problem with an empty path or message: %+v", p)
			}
		}
	})
}

func TestLargeConfigFitsTheBudget(t *testing.T) {
	// The datapath holds 4096 VIPs and 262144 backends: a config that
	// fills it must stay within maxNodes. Measure the visits of a VIP and
	// of a backend with every field set, and extrapolate.
	visits := func(vips, backends int) int {
		var b strings.Builder
		b.WriteString(base + "vips:\n")
		for i := range vips {
			fmt.Fprintf(&b, "  - {name: v%d, address: 203.0.%d.%d, port: 80, protocol: tcp, mode: dsr, scheduler: maglev, ring_size: 251, conntrack: true, fragments: drop, backends: [", i, i/256, i%256)
			for j := range backends {
				if j > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "{address: 198.18.%d.%d, weight: 2, mac: \"02:00:00:00:%02x:%02x\"}", j/256, j%256, j/256, j%256)
			}
			b.WriteString("]}\n")
		}
		root, p := parseYAML([]byte(b.String()))
		if p != nil {
			t.Fatal(p)
		}
		d := &decoder{}
		d.config(root)
		if len(d.problems) > 0 {
			t.Fatal(d.problems)
		}
		return d.visits
	}
	perVIP := visits(2, 0) - visits(1, 0)
	perBackend := visits(1, 1001) - visits(1, 1)
	total := 4096*perVIP + 262144*perBackend/1000
	t.Logf("%d visits per VIP, %.1f per backend: %d for a full datapath, budget %d", perVIP, float64(perBackend)/1000, total, maxNodes)
	if total > maxNodes/2 {
		t.Errorf("a full datapath's config needs %d visits, over half the budget %d", total, maxNodes)
	}
}

func TestProblemsAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString(base + "vips:\n")
	for range 1500 {
		b.WriteString("  - {address: 203.0.113.1, port: 80, protocol: sctp}\n")
	}
	ps := problems(t, b.String())
	if len(ps) != maxProblems+1 {
		t.Fatalf("got %d problems, want %d", len(ps), maxProblems+1)
	}
	if last := ps[len(ps)-1]; last.Path != "config" || !strings.HasPrefix(last.Message, "500 more problems not listed") {
		t.Errorf("last problem: got %v", last)
	}
}

// TestIPIP covers the ipip section and its cross-check with ipip VIPs.
func TestIPIP(t *testing.T) {
	ok := `interfaces: [{name: eth0}]
ipip: {source_v4: 198.18.1.0/24, source_v6: "2001:db8:4::/64", gateway_mac: "02:00:00:00:00:01"}
vips:
  - {address: 203.0.113.1, port: 80, protocol: tcp, mode: ipip, backends: [{address: 198.18.2.11}, {address: "2001:db8:3::11"}]}
`
	c, err := Parse([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if c.IPIP.SourceV4.String() != "198.18.1.0/24" || c.IPIP.SourceV6.String() != "2001:db8:4::/64" || c.IPIP.GatewayMAC.String() != "02:00:00:00:00:01" {
		t.Fatalf("ipip = %+v", c.IPIP)
	}
	if got := c.VIPs[0].Backends[1].Address.String(); got != "2001:db8:3::11" {
		t.Fatalf("an ipip VIP's IPv6 backend = %s", got)
	}
	for _, tc := range []struct{ doc, path, msg string }{
		{strings.Replace(ok, "source_v6: \"2001:db8:4::/64\", ", "", 1), "vips[0].backends[1].address", "needs an outer source prefix: set ipip.source_v6"},
		{strings.Replace(ok, "198.18.1.0/24", "198.18.1.1/24", 1), "ipip.source_v4", "has host bits set; use 198.18.1.0/24"},
		{strings.Replace(ok, "198.18.1.0/24", "2001:db8::/64", 1), "ipip.source_v4", "is not an IPv4 prefix"},
		{strings.Replace(ok, "198.18.1.0/24", "banana", 1), "ipip.source_v4", `"banana" is not a prefix`},
		{strings.Replace(ok, "gateway_mac", "gw_mac", 1), "ipip.gw_mac", "unknown"},
	} {
		_, err := Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("err = %v, want %s: ...%s...", err, tc.path, tc.msg)
		}
	}
}

// TestRoundTrip: every valid example, parsed, marshalled and parsed again,
// gives the same Config.
func TestRoundTrip(t *testing.T) {
	for _, path := range []string{"../../docs/examples/fulcrum.yaml", "../../docs/examples/minimal.yaml"} {
		c1, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		out, err := c1.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("%s: the marshalled config does not parse: %v\n%s", path, err, out)
		}
		if !reflect.DeepEqual(c1, c2) {
			t.Fatalf("%s: round trip differs:\nfirst  %+v\nsecond %+v\nyaml:\n%s", path, c1, c2, out)
		}
	}
}

package main

import (
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestBackendGroup(t *testing.T) {
	runCLI(t, "backend", "undrain").fails(t, exitUsage, `fulcrum: backend: unknown command "undrain", want one of: add, remove, drain, weight, list`)
}

func TestBackendList(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "backend", "list").checkGolden(t, "backend_list.golden")
	d.run(t, "backend", "ls", "udp/[2001:db8::1]:53").checkGolden(t, "backend_list_one.golden")
	checkJSON(t, d.run(t, "backend", "list", "-o", "json"), newFake().vips)
	checkJSON(t, d.run(t, "-o", "json", "backend", "list", "tcp/203.0.113.10:80"), newFake().vips[:1])
	d.run(t, "backend", "list", "tcp/203.0.113.99:80").fails(t, exitError, "fulcrum: vip tcp/203.0.113.99:80: not found")

	d.fake.update(func(f *fakeController) { f.vips = nil })
	d.run(t, "backend", "list").check(t, 0, "VIP  BACKEND  WEIGHT  ACTIVE  INACTIVE  RT  HEALTH  SINCE  MAC  LAST ERROR\nno VIPs\n", "")
	checkJSON(t, d.run(t, "backend", "list", "-o", "json"), []api.VIP{})

	runCLI(t, "backend", "list", "203.0.113.10:80").fails(t, exitUsage,
		`fulcrum: backend list: vip "203.0.113.10:80": want PROTO/ADDRESS:PORT, e.g. tcp/203.0.113.10:80 or udp/[2001:db8::1]:53`)
	runCLI(t, "backend", "list", "tcp/203.0.113.10:80", "x").fails(t, exitUsage,
		`fulcrum: backend list: unexpected argument "x" (usage: fulcrum backend list [VIP])`)
}

// TestBackendChanges runs each command that changes a backend: the line
// it confirms with, the call the daemon got, and with -o json nothing.
func TestBackendChanges(t *testing.T) {
	d := startDaemon(t)
	tests := []struct {
		args   []string
		stdout string
		call   string
	}{
		{[]string{"add", "tcp/203.0.113.10:80", "198.18.0.14", "--weight", "5", "--mac", "02:00:5E:00:53:14"},
			"added backend 198.18.0.14 to tcp/203.0.113.10:80 (weight 5)\n",
			"AddBackend tcp/203.0.113.10:80 198.18.0.14 weight=5 mac=02:00:5e:00:53:14"},
		{[]string{"add", "udp/[2001:db8::1]:53", "[2001:db8:1::9]"},
			"added backend 2001:db8:1::9 to udp/[2001:db8::1]:53 (weight 1)\n",
			"AddBackend udp/[2001:db8::1]:53 2001:db8:1::9 weight=1 mac="},
		{[]string{"add", "tcp/203.0.113.10:80", "198.18.0.15", "--weight", "0"},
			"added backend 198.18.0.15 to tcp/203.0.113.10:80 (weight 0)\n",
			"AddBackend tcp/203.0.113.10:80 198.18.0.15 weight=0 mac="},
		{[]string{"remove", "tcp/203.0.113.10:80", "198.18.0.12"},
			"removed backend 198.18.0.12 from tcp/203.0.113.10:80\n",
			"RemoveBackend tcp/203.0.113.10:80 198.18.0.12"},
		{[]string{"rm", "udp/[2001:db8::1]:53", "2001:db8:1::2"},
			"removed backend 2001:db8:1::2 from udp/[2001:db8::1]:53\n",
			"RemoveBackend udp/[2001:db8::1]:53 2001:db8:1::2"},
		{[]string{"drain", "tcp/203.0.113.10:80", "198.18.0.11"},
			"draining backend 198.18.0.11 of tcp/203.0.113.10:80: no new flows, established flows stay\n",
			"SetWeight tcp/203.0.113.10:80 198.18.0.11 0"},
		{[]string{"weight", "tcp/203.0.113.10:80", "198.18.0.12", "4"},
			"set weight of backend 198.18.0.12 of tcp/203.0.113.10:80 to 4\n",
			"SetWeight tcp/203.0.113.10:80 198.18.0.12 4"},
		{[]string{"weight", "tcp/203.0.113.10:80", "198.18.0.12", "65535"},
			"set weight of backend 198.18.0.12 of tcp/203.0.113.10:80 to 65535\n",
			"SetWeight tcp/203.0.113.10:80 198.18.0.12 65535"},
	}
	for _, tt := range tests {
		args := append([]string{"backend"}, tt.args...)
		d.run(t, args...).check(t, 0, tt.stdout, unsavedNotice+"\n")
		if got := d.fake.lastCall(); got != tt.call {
			t.Errorf("fulcrum %v: daemon call %q, want %q", args, got, tt.call)
		}
		d.run(t, append([]string{"-o", "json"}, args...)...).check(t, 0, "", unsavedNotice+"\n")
		if got := d.fake.lastCall(); got != tt.call {
			t.Errorf("fulcrum -o json %v: daemon call %q, want %q", args, got, tt.call)
		}
	}
}

func TestBackendArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"add", "tcp/203.0.113.10:80"}, "fulcrum: backend add: missing ADDRESS: want the backend's IP address, e.g. 198.18.0.12"},
		{[]string{"add", "tcp/203.0.113.10:80", "backend1"}, `fulcrum: backend add: backend "backend1" is not an IP address: want the backend's IP address, e.g. 198.18.0.12`},
		{[]string{"add", "tcp/203.0.113.10:80", "198.18.0.14", "--weight", "70000"}, "fulcrum: backend add: --weight 70000: want a whole number from 0 to 65535"},
		{[]string{"add", "tcp/203.0.113.10:80", "198.18.0.14", "--mac", "nope"}, `fulcrum: backend add: --mac "nope": want six hex bytes, e.g. 02:00:5e:00:53:01`},
		{[]string{"rm"}, "fulcrum: backend remove: missing VIP: want PROTO/ADDRESS:PORT, e.g. tcp/203.0.113.10:80 or udp/[2001:db8::1]:53"},
		{[]string{"remove", "tcp/203.0.113.10:80", "198.18.0.12", "now"}, `fulcrum: backend remove: unexpected argument "now" (usage: fulcrum backend remove VIP ADDRESS)`},
		{[]string{"drain", "tcp/203.0.113.10:80"}, "fulcrum: backend drain: missing ADDRESS: want the backend's IP address, e.g. 198.18.0.12"},
		{[]string{"weight", "tcp/203.0.113.10:80", "198.18.0.12"}, "fulcrum: backend weight: missing N: want the weight, a whole number from 0 to 65535 (0 drains)"},
		{[]string{"weight", "tcp/203.0.113.10:80", "198.18.0.12", "-1"}, `fulcrum: backend weight: weight "-1": want a whole number from 0 to 65535 (0 drains)`},
		{[]string{"weight", "tcp/203.0.113.10:80", "198.18.0.12", "65536"}, `fulcrum: backend weight: weight "65536": want a whole number from 0 to 65535 (0 drains)`},
		{[]string{"weight", "tcp/203.0.113.10:80", "198.18.0.12", "heavy"}, `fulcrum: backend weight: weight "heavy": want a whole number from 0 to 65535 (0 drains)`},
		{[]string{"weight", "udp/203.0.113.10", "198.18.0.12", "1"}, `fulcrum: backend weight: vip "udp/203.0.113.10": not an ip:port (want ADDRESS:PORT, IPv6 in brackets)`},
	}
	for _, tt := range tests {
		runCLI(t, append([]string{"--socket", "/nonexistent/api.sock", "backend"}, tt.args...)...).fails(t, exitUsage, tt.want)
	}
}

package main

import "testing"

func TestVIPGroup(t *testing.T) {
	runCLI(t, "vip", "show").fails(t, exitUsage, `fulcrum: vip: unknown command "show", want one of: add, remove, list`)
}

func TestVIPList(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "vip", "list").checkGolden(t, "vip_list.golden")
	d.run(t, "vip", "ls").checkGolden(t, "vip_list.golden")
	checkJSON(t, d.run(t, "vip", "list", "-o", "json"), newFake().vips)

	d.fake.update(func(f *fakeController) { f.vips = nil })
	d.run(t, "vip", "list").check(t, 0, "no VIPs (add one with 'fulcrum vip add' or 'fulcrum apply -f FILE')\n", "")
	d.run(t, "-o", "json", "vip", "list").check(t, 0, "[]\n", "")

	runCLI(t, "vip", "list", "x").fails(t, exitUsage, `fulcrum: vip list: unexpected argument "x" (usage: fulcrum vip list)`)
}

func TestVIPAdd(t *testing.T) {
	d := startDaemon(t)
	tests := []struct {
		args   []string
		stdout string
		call   string
	}{
		{
			[]string{"tcp/203.0.113.20:443", "--mode", "dsr", "--name", "tls", "--scheduler", "source-hash", "--ring-size", "251",
				"--no-conntrack", "--fragments", "pass", "--backend", "198.18.0.21", "--backend", "198.18.0.22,weight=3,mac=02-00-5E-00-53-22"},
			"added vip tcp/203.0.113.20:443 (dsr, 2 backends)\n",
			"AddVIP tcp/203.0.113.20:443 mode=dsr sched=source-hash ring=251 fragments=pass name=tls conntrack=false 198.18.0.21/1/ 198.18.0.22/3/02:00:5e:00:53:22",
		},
		{
			// Defaults: mode dsr, the rest left to the daemon; flags before the VIP.
			[]string{"--backend", "[2001:db8:1::5],weight=0", "udp/[2001:db8::5]:0"},
			"added vip udp/[2001:db8::5]:0 (dsr, 1 backend)\n",
			"AddVIP udp/[2001:db8::5]:0 mode=dsr sched= ring=0 fragments= name= conntrack=true 2001:db8:1::5/0/",
		},
		{
			[]string{"tcp/[2001:db8::6]:80", "--mode", "IPIP", "--backend", "198.18.0.21"},
			"added vip tcp/[2001:db8::6]:80 (ipip, 1 backend)\n",
			"AddVIP tcp/[2001:db8::6]:80 mode=ipip sched= ring=0 fragments= name= conntrack=true 198.18.0.21/1/",
		},
		{
			[]string{"tcp/203.0.113.22:80", "--ring-size", "auto", "--backend", "198.18.0.21"},
			"added vip tcp/203.0.113.22:80 (dsr, 1 backend)\n",
			"AddVIP tcp/203.0.113.22:80 mode=dsr sched= ring=0 fragments= name= conntrack=true ring=auto max=0 198.18.0.21/1/",
		},
		{
			[]string{"tcp/203.0.113.23:80", "--ring-size", "auto", "--ring-size-max", "131071"},
			"added vip tcp/203.0.113.23:80 (dsr, 0 backends)\n",
			"AddVIP tcp/203.0.113.23:80 mode=dsr sched= ring=0 fragments= name= conntrack=true ring=auto max=131071",
		},
		{
			[]string{"tcp/203.0.113.24:80", "--source-range", "198.51.100.0/24", "--source-range", "203.0.113.128/25", "--backend", "198.18.0.21"},
			"added vip tcp/203.0.113.24:80 (dsr, 1 backend)\n",
			"AddVIP tcp/203.0.113.24:80 mode=dsr sched= ring=0 fragments= name= conntrack=true sources=198.51.100.0/24,203.0.113.128/25 198.18.0.21/1/",
		},
	}
	for _, tt := range tests {
		d.run(t, append([]string{"vip", "add"}, tt.args...)...).check(t, 0, tt.stdout, unsavedNotice+"\n")
		if got := d.fake.lastCall(); got != tt.call {
			t.Errorf("daemon call\n got %q\nwant %q", got, tt.call)
		}
	}
	// With -o json a change prints nothing: the exit status says it.
	d.run(t, "-o", "json", "vip", "add", "tcp/203.0.113.21:80").check(t, 0, "", unsavedNotice+"\n")
	d.run(t, "vip", "add", "tcp/203.0.113.10:80").fails(t, exitError, "fulcrum: vip tcp/203.0.113.10:80 already exists: conflict")
}

func TestVIPAddArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "fulcrum: vip add: missing VIP: want PROTO/ADDRESS:PORT, e.g. tcp/203.0.113.10:80 or udp/[2001:db8::1]:53"},
		{[]string{"203.0.113.10:80"}, `fulcrum: vip add: vip "203.0.113.10:80": want PROTO/ADDRESS:PORT, e.g. tcp/203.0.113.10:80 or udp/[2001:db8::1]:53`},
		{[]string{"sctp/203.0.113.10:80"}, `fulcrum: vip add: vip "sctp/203.0.113.10:80": protocol "sctp", want tcp or udp`},
		{[]string{"tcp/203.0.113.10:80", "--mode", "nat"}, `fulcrum: vip add: --mode "nat": want dsr or ipip`},
		{[]string{"tcp/203.0.113.10:80", "--mode", ""}, `fulcrum: vip add: --mode is empty: want dsr or ipip`},
		{[]string{"tcp/203.0.113.10:80", "--mode"}, "fulcrum: vip add: flag --mode needs a value (see 'fulcrum vip add --help')"},
		{[]string{"tcp/203.0.113.10:80", "--scheduler", "rr"}, `fulcrum: vip add: --scheduler "rr": want one of maglev, source-hash, round-robin, least-conn, least-time`},
		{[]string{"tcp/203.0.113.10:80", "--fragments", "keep"}, `fulcrum: vip add: --fragments "keep": want drop or pass`},
		{[]string{"tcp/203.0.113.10:80", "--ring-size", "-5"}, `fulcrum: vip add: --ring-size "-5": want auto or a prime below 2^32, e.g. 65537`},
		{[]string{"tcp/203.0.113.10:80", "--ring-size", "autox"}, `fulcrum: vip add: --ring-size "autox": want auto or a prime below 2^32, e.g. 65537`},
		{[]string{"tcp/203.0.113.10:80", "--ring-size", "251", "--ring-size-max", "65537"}, "fulcrum: vip add: --ring-size-max applies only with --ring-size auto"},
		{[]string{"tcp/203.0.113.10:80", "--ring-size-max", "65537"}, "fulcrum: vip add: --ring-size-max applies only with --ring-size auto"},
		{[]string{"tcp/203.0.113.10:80", "--ring-size", "4294967296"}, `fulcrum: vip add: --ring-size "4294967296": want auto or a prime below 2^32, e.g. 65537`},
		{[]string{"tcp/203.0.113.10:80", "--backend", "198.18.0"}, `fulcrum: vip add: --backend "198.18.0": "198.18.0" is not an IP address: want ADDRESS[,weight=N][,mac=MAC]`},
		{[]string{"tcp/203.0.113.10:80", "--backend", "198.18.0.1,weight=x"}, `fulcrum: vip add: --backend "198.18.0.1,weight=x": weight "x": want a whole number from 0 to 65535 (0 drains)`},
		{[]string{"tcp/203.0.113.10:80", "--backend", "198.18.0.1,mac=zz"}, `fulcrum: vip add: --backend "198.18.0.1,mac=zz": mac "zz": want six hex bytes, e.g. 02:00:5e:00:53:01`},
		{[]string{"tcp/203.0.113.10:80", "--backend", "198.18.0.1,colour=red"}, `fulcrum: vip add: --backend "198.18.0.1,colour=red": unknown option "colour": want weight=N or mac=MAC`},
		{[]string{"tcp/203.0.113.10:80", "--backend", "198.18.0.1", "--backend", "198.18.0.1,weight=2"}, "fulcrum: vip add: --backend 198.18.0.1 is given twice"},
		{[]string{"tcp/203.0.113.10:80", "extra"}, `fulcrum: vip add: unexpected argument "extra" (usage: fulcrum vip add PROTO/ADDRESS:PORT)`},
		{[]string{"tcp/203.0.113.10:80", "--bogus"}, "fulcrum: vip add: unknown flag --bogus (see 'fulcrum vip add --help')"},
	}
	for _, tt := range tests {
		// No daemon: argument errors come first.
		r := runCLI(t, append([]string{"--socket", "/nonexistent/api.sock", "vip", "add"}, tt.args...)...)
		r.fails(t, exitUsage, tt.want)
	}
}

func TestVIPRemove(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "vip", "remove", "udp/[2001:db8::1]:53").check(t, 0, "removed vip udp/[2001:db8::1]:53\n", unsavedNotice+"\n")
	if got, want := d.fake.lastCall(), "RemoveVIP udp/[2001:db8::1]:53"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}
	d.run(t, "vip", "rm", "udp/[2001:db8::1]:53").fails(t, exitError, "fulcrum: vip udp/[2001:db8::1]:53: not found")
	if got, want := d.fake.lastCall(), "RemoveVIP udp/[2001:db8::1]:53"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}

	runCLI(t, "vip", "remove").fails(t, exitUsage, "fulcrum: vip remove: missing VIP: want PROTO/ADDRESS:PORT, e.g. tcp/203.0.113.10:80 or udp/[2001:db8::1]:53")
	runCLI(t, "vip", "remove", "tcp/203.0.113.10").fails(t, exitUsage,
		`fulcrum: vip remove: vip "tcp/203.0.113.10": not an ip:port (want ADDRESS:PORT, IPv6 in brackets)`)
}

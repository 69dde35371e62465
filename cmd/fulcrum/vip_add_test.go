package main

import (
	"testing"
)

func TestVIPAdd(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "vip", "add", "tcp/203.0.113.20:443", "--mode", "dsr", "--name", "tls",
		"--scheduler", "source-hash", "--ring-size", "251", "--no-conntrack", "--fragments", "pass",
		"--backend", "198.18.0.21", "--backend", "198.18.0.22,weight=3,mac=02-00-5E-00-53-22",
	).expect(t, 0, []string{"added vip tcp/203.0.113.20:443 (dsr, 2 backends)\n"})
	want := "AddVIP tcp/203.0.113.20:443 mode=dsr sched=source-hash ring=251 fragments=pass name=tls conntrack=false 198.18.0.21/1/ 198.18.0.22/3/02:00:5e:00:53:22"
	if got := d.fake.lastCall(); got != want {
		t.Errorf("daemon call\n got %q\nwant %q", got, want)
	}

	// Defaults: mode dsr, the rest left to the daemon; flags before the VIP.
	d.run(t, "vip", "add", "--backend", "[2001:db8:1::5],weight=0", "udp/[2001:db8::5]:0").expect(t, 0, []string{"added vip udp/[2001:db8::5]:0 (dsr, 1 backend)"})
	want = "AddVIP udp/[2001:db8::5]:0 mode=dsr sched= ring=0 fragments= name= conntrack=true 2001:db8:1::5/0/"
	if got := d.fake.lastCall(); got != want {
		t.Errorf("daemon call\n got %q\nwant %q", got, want)
	}
}

func TestVIPAddJSONIsQuiet(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "-o", "json", "vip", "add", "tcp/203.0.113.21:80")
	r.expect(t, 0, nil)
	if r.stdout != "" {
		t.Errorf("stdout %q, want none", r.stdout)
	}
}

func TestVIPAddConflict(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "vip", "add", "tcp/203.0.113.10:80").expect(t, 1, nil, "fulcrum: vip tcp/203.0.113.10:80 already exists: conflict")
}

func TestVIPAddArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "fulcrum: vip add: missing VIP: want PROTO/ADDRESS:PORT"},
		{[]string{"203.0.113.10:80"}, `vip add: vip "203.0.113.10:80": want PROTO/ADDRESS:PORT`},
		{[]string{"sctp/203.0.113.10:80"}, `protocol "sctp", want tcp or udp`},
		{[]string{"tcp/203.0.113.10:80", "--mode", "nat"}, `vip add: --mode "nat": want dsr`},
		{[]string{"tcp/203.0.113.10:80", "--scheduler", "rr"}, `--scheduler "rr": want maglev or source-hash`},
		{[]string{"tcp/203.0.113.10:80", "--fragments", "keep"}, `--fragments "keep": want drop or pass`},
		{[]string{"tcp/203.0.113.10:80", "--ring-size", "-5"}, `invalid value "-5" for flag --ring-size: want a whole number`},
		{[]string{"tcp/203.0.113.10:80", "--backend", "198.18.0"}, `--backend "198.18.0": "198.18.0" is not an IP address: want ADDRESS[,weight=N][,mac=MAC]`},
		{[]string{"tcp/203.0.113.10:80", "--backend", "198.18.0.1,weight=x"}, `weight "x": want a whole number from 0 to 65535`},
		{[]string{"tcp/203.0.113.10:80", "--backend", "198.18.0.1,mac=zz"}, `mac "zz": want six hex bytes`},
		{[]string{"tcp/203.0.113.10:80", "--backend", "198.18.0.1,colour=red"}, `unknown option "colour": want weight=N or mac=MAC`},
		{[]string{"tcp/203.0.113.10:80", "--backend", "198.18.0.1", "--backend", "198.18.0.1,weight=2"}, "--backend 198.18.0.1 is given twice"},
		{[]string{"tcp/203.0.113.10:80", "extra"}, `unexpected argument "extra" (usage: fulcrum vip add PROTO/ADDRESS:PORT)`},
	}
	for _, tt := range tests {
		r := runCLI(t, append([]string{"--socket", "/nonexistent/api.sock", "vip", "add"}, tt.args...)...)
		r.expect(t, 2, nil, tt.want)
	}
}

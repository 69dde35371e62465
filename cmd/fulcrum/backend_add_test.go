package main

import "testing"

func TestBackendAdd(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "backend", "add", "tcp/203.0.113.10:80", "198.18.0.14", "--weight", "5", "--mac", "02:00:5E:00:53:14").
		expect(t, 0, []string{"added backend 198.18.0.14 to tcp/203.0.113.10:80 (weight 5)\n"})
	if got, want := d.fake.lastCall(), "AddBackend tcp/203.0.113.10:80 198.18.0.14 weight=5 mac=02:00:5e:00:53:14"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}
	d.run(t, "backend", "add", "udp/[2001:db8::1]:53", "[2001:db8:1::9]").expect(t, 0, nil)
	if got, want := d.fake.lastCall(), "AddBackend udp/[2001:db8::1]:53 2001:db8:1::9 weight=1 mac="; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}
}

func TestBackendAddArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"tcp/203.0.113.10:80"}, "fulcrum: backend add: missing ADDRESS: want the backend's IP address"},
		{[]string{"tcp/203.0.113.10:80", "backend1"}, `backend add: backend "backend1" is not an IP address`},
		{[]string{"tcp/203.0.113.10:80", "198.18.0.14", "--weight", "70000"}, "--weight 70000: want a whole number from 0 to 65535"},
		{[]string{"tcp/203.0.113.10:80", "198.18.0.14", "--mac", "nope"}, `backend add: --mac "nope": want six hex bytes`},
	}
	for _, tt := range tests {
		runCLI(t, append([]string{"backend", "add"}, tt.args...)...).expect(t, 2, nil, tt.want)
	}
}

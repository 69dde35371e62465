package main

import "testing"

func TestVIPRemove(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "vip", "remove", "udp/[2001:db8::1]:53").expect(t, 0, []string{"removed vip udp/[2001:db8::1]:53\n"})
	if got, want := d.fake.lastCall(), "RemoveVIP udp/[2001:db8::1]:53"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}
	d.run(t, "vip", "rm", "udp/[2001:db8::1]:53").expect(t, 1, nil, "fulcrum: vip udp/[2001:db8::1]:53: not found")
}

func TestVIPRemoveArguments(t *testing.T) {
	runCLI(t, "vip", "remove").expect(t, 2, nil, "fulcrum: vip remove: missing VIP: want PROTO/ADDRESS:PORT")
	runCLI(t, "vip", "remove", "tcp/203.0.113.10").expect(t, 2, nil, `fulcrum: vip remove: vip "tcp/203.0.113.10"`)
}

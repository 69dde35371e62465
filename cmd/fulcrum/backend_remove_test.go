package main

import "testing"

func TestBackendRemove(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "backend", "remove", "tcp/203.0.113.10:80", "198.18.0.12").expect(t, 0, []string{"removed backend 198.18.0.12 from tcp/203.0.113.10:80\n"})
	if got, want := d.fake.lastCall(), "RemoveBackend tcp/203.0.113.10:80 198.18.0.12"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}
}

func TestBackendRemoveArguments(t *testing.T) {
	runCLI(t, "backend", "rm").expect(t, 2, nil, "fulcrum: backend remove: missing VIP")
	runCLI(t, "backend", "remove", "tcp/203.0.113.10:80", "198.18.0.12", "now").expect(t, 2, nil, `unexpected argument "now"`)
}

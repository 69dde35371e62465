package main

import "testing"

func TestBackendDrain(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "backend", "drain", "tcp/203.0.113.10:80", "198.18.0.11").expect(t, 0, []string{"draining backend 198.18.0.11 of tcp/203.0.113.10:80"})
	if got, want := d.fake.lastCall(), "SetWeight tcp/203.0.113.10:80 198.18.0.11 0"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}
}

func TestBackendDrainArguments(t *testing.T) {
	runCLI(t, "backend", "drain", "tcp/203.0.113.10:80").expect(t, 2, nil, "fulcrum: backend drain: missing ADDRESS")
}

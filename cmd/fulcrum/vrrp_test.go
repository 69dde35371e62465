package main

import (
	"strings"
	"testing"
)

func TestVRRPShow(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "vrrp")
	r.expect(t, 0, []string{"state:", "master", "priority:", "200", "198.18.0.2", "42 sent",
		"sending:", "worst delay 1.5 ms, worst send call 12.0 ms, 3 late"})
}

func TestVRRPHandoverAndResume(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "vrrp", "handover").expect(t, 0, []string{"handed over"})
	if got := d.fake.lastCall(); got != "VRRPHandover" {
		t.Fatalf("last call %q, want VRRPHandover", got)
	}
	d.run(t, "vrrp", "resume").expect(t, 0, []string{"hold lifted"})
	if got := d.fake.lastCall(); got != "VRRPResume" {
		t.Fatalf("last call %q, want VRRPResume", got)
	}
}

// The daemon starts `fulcrum vrrp-agent` with its control socket on fd 3;
// run by hand it says so, and it is not in the help.
func TestVRRPAgentByHand(t *testing.T) {
	r := runCLI(t, "vrrp-agent")
	r.expect(t, 1, nil)
	if !strings.Contains(r.stderr, "no control socket on fd 3 (the daemon starts this command)") {
		t.Errorf("stderr %q, want the reason", r.stderr)
	}
	if h := runCLI(t, "--help"); strings.Contains(h.stdout, "vrrp-agent") {
		t.Errorf("help lists the hidden vrrp-agent command:\n%s", h.stdout)
	}
}

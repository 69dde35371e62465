package main

import (
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// TestConfigShow prints the daemon's running configuration as it sends it,
// byte for byte, and as JSON with -o json.
func TestConfigShow(t *testing.T) {
	d := startDaemon(t)
	running := api.RunningConfig{YAML: "instance: default\ninterfaces:\n    - name: eth0\n      xdp_mode: auto\nvips:\n    - address: 203.0.113.10\n      port: 80\n      protocol: tcp\n      backends:\n        - address: 198.18.0.11\n          weight: 3\n"}
	d.fake.update(func(f *fakeController) { f.running = running })
	d.run(t, "config", "show").checkGolden(t, "config_show.golden")
	if got := d.fake.lastCall(); got != "Config" {
		t.Errorf("daemon call: got %q, want Config", got)
	}
	checkJSON(t, d.run(t, "-o", "json", "config", "show"), running)

	runCLI(t, "config", "show", "x").fails(t, exitUsage, `fulcrum: config show: unexpected argument "x" (usage: fulcrum config show)`)
	runCLI(t, "config", "frob").fails(t, exitUsage, `fulcrum: config: unknown command "frob", want one of: show`)
}

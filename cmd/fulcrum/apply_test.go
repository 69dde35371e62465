package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

const testConfig = "interfaces:\n  - name: eth0\nvips:\n  - address: 203.0.113.10\n    port: 80\n"

// writeConfig writes testConfig to fulcrum.yaml in a fresh directory,
// which becomes the working directory, so that outputs naming the file
// are the same on every run.
func writeConfig(t *testing.T) string {
	t.Helper()
	t.Chdir(t.TempDir())
	if err := os.WriteFile("fulcrum.yaml", []byte(testConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	return "fulcrum.yaml"
}

func TestApply(t *testing.T) {
	d := startDaemon(t)
	path := writeConfig(t)
	d.run(t, "apply", "-f", path).checkGolden(t, "apply.golden")
	if d.fake.config == nil || string(d.fake.config) != testConfig {
		t.Errorf("daemon got config %q, want the file's %q", d.fake.config, testConfig)
	}
	checkJSON(t, d.run(t, "apply", "--file", path, "-o", "json"), newFake().applied)
}

func TestApplyRefused(t *testing.T) {
	d := startDaemon(t)
	d.fake.update(func(f *fakeController) {
		f.err = fmt.Errorf("vips[0].backends[0].weight: 70000 is over the maximum 65535 (line 6): %w", api.ErrInvalid)
	})
	d.run(t, "apply", "-f", writeConfig(t)).fails(t, exitError, "fulcrum: vips[0].backends[0].weight: 70000 is over the maximum 65535 (line 6): invalid request")
}

func TestApplyArguments(t *testing.T) {
	runCLI(t, "apply").fails(t, exitUsage, "fulcrum: apply: missing -f FILE: want the config file to apply (- for standard input)")
	runCLI(t, "apply", "fulcrum.yaml").fails(t, exitUsage, `fulcrum: apply: unexpected argument "fulcrum.yaml" (usage: fulcrum apply)`)
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	runCLI(t, "apply", "-f", missing).fails(t, exitError, "fulcrum: read config: open "+missing+": no such file or directory")
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, []byte(strings.Repeat("#\n", api.MaxApplyBody/2+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "apply", "-f", big).fails(t, exitError, fmt.Sprintf("fulcrum: config %s is %d bytes, over the API's limit of %d", big, api.MaxApplyBody+2, api.MaxApplyBody))
}

// TestApplyDryRun prints the daemon's plan of the file and asks for no
// change: the daemon sees Plan, never Apply.
func TestApplyDryRun(t *testing.T) {
	d := startDaemon(t)
	path := writeConfig(t)
	a := netip.MustParseAddr
	plan := api.Plan{
		Added: []string{"udp/203.0.113.11:53"}, Removed: []string{"udp/[2001:db8::1]:53"}, Unchanged: 2,
		Changed: []api.VIPPlan{{
			VIP: "tcp/203.0.113.10:80", Settings: []string{"ring_size: 65537 -> 251"}, RingSize: 251, MovedSlots: 251, MovedShare: 1,
		}, {
			VIP: "tcp/203.0.113.10:0", RingSize: 65537, MovedSlots: 16384, MovedShare: 16384.0 / 65537,
			Backends: []api.BackendPlan{
				{Address: a("198.18.0.11"), Change: "weight", OldWeight: 1, NewWeight: 3, OldSlots: 32769, NewSlots: 49153},
				{Address: a("198.18.0.12"), OldWeight: 1, NewWeight: 1, OldSlots: 32768, NewSlots: 16384},
			},
		}},
		Global:  []string{"log.level: info -> debug"},
		Restart: []string{"conntrack.entries cannot change on reload; restart the daemon to change it"},
	}
	d.fake.update(func(f *fakeController) { f.plan = plan })
	d.run(t, "apply", "--dry-run", "-f", path).checkGolden(t, "apply_dry_run.golden")
	if got := d.fake.lastCall(); got != "Plan" || string(d.fake.config) != testConfig {
		t.Errorf("daemon call %q with %q; want Plan with the file", got, d.fake.config)
	}
	checkJSON(t, d.run(t, "apply", "--dry-run", "-f", path, "-o", "json"), plan)
	for _, c := range d.fake.calls {
		if c == "Apply" {
			t.Errorf("a dry run called Apply (calls: %q)", d.fake.calls)
		}
	}
}

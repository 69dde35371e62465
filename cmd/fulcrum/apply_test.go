package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

const testConfig = "interfaces:\n  - name: eth0\nvips:\n  - address: 203.0.113.10\n    port: 80\n"

func writeConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fulcrum.yaml")
	if err := os.WriteFile(path, []byte(testConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestApply(t *testing.T) {
	d := startDaemon(t)
	path := writeConfig(t)
	d.run(t, "apply", "-f", path).expect(t, 0, []string{
		"applied " + path + ": 1 added, 1 changed, 1 removed, 3 unchanged\n",
		"  + udp/203.0.113.11:53\n",
		"  ~ tcp/203.0.113.10:80\n",
		"  - udp/[2001:db8::1]:53\n",
	})
	if string(d.fake.config) != testConfig {
		t.Errorf("daemon got config %q, want the file's %q", d.fake.config, testConfig)
	}
}

func TestApplyJSON(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "apply", "--file", writeConfig(t), "-o", "json")
	r.expect(t, 0, nil)
	var res api.ApplyResult
	decodeJSON(t, r.stdout, &res)
	if res.Unchanged != 3 || len(res.Added) != 1 {
		t.Errorf("decoded %+v", res)
	}
}

func TestApplyRefused(t *testing.T) {
	d := startDaemon(t)
	d.fake.err = fmt.Errorf("vips[0].backends[0].weight: 70000 is over the maximum 65535 (line 6): %w", api.ErrInvalid)
	d.run(t, "apply", "-f", writeConfig(t)).expect(t, 1, nil, "fulcrum: vips[0].backends[0].weight: 70000 is over the maximum 65535 (line 6): invalid request")
}

func TestApplyArguments(t *testing.T) {
	runCLI(t, "apply").expect(t, 2, nil, "fulcrum: apply: missing -f FILE: want the config file to apply (- for standard input)")
	runCLI(t, "apply", "fulcrum.yaml").expect(t, 2, nil, `fulcrum: apply: unexpected argument "fulcrum.yaml"`)
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	runCLI(t, "apply", "-f", missing).expect(t, 1, nil, "fulcrum: read config: open "+missing+": no such file or directory")
}

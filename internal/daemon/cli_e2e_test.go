package daemon_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// TestCLIAgainstDaemon runs every CLI command against a real daemon (the
// cmd/fulcrum tests cover them in depth against a fake controller), with
// the errors a user meets.
func TestCLIAgainstDaemon(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(h.config())
	h.startDaemon()
	b := h.topo.Backends
	web := "tcp/" + vip4.String() + ":9000"
	extra := "udp/" + vip4.String() + ":5353"
	good := filepath.Join(t.TempDir(), "good.yaml")
	if err := exec.Command("cp", h.cfgPath, good).Run(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		ok   bool
		want []string
	}{
		{[]string{"status"}, true, []string{"instance e2e", "eth0", "vips:", "5 (15 backends)"}},
		{[]string{"vip", "list"}, true, []string{web, "dsr", "maglev"}},
		{[]string{"backend", "list", web}, true, []string{b[0].IPv4.String(), b[2].IPv4.String()}},
		{[]string{"stats"}, true, []string{"tx_dsr", web}},
		{[]string{"explain", "198.19.1.2", vip4.String(), "tcp", "40000", "9000"}, true, []string{"reaches", "ring slot"}},
		{[]string{"version"}, true, []string{"fulcrum"}},
		{[]string{"vrrp"}, true, []string{"disabled"}},
		{[]string{"vip", "add", extra, "--backend", b[0].IPv4.String()}, true, nil},
		{[]string{"vip", "add", extra, "--backend", b[0].IPv4.String()}, false, []string{"already exists"}},
		{[]string{"backend", "add", extra, b[1].IPv4.String(), "--weight", "3"}, true, nil},
		{[]string{"backend", "weight", extra, b[1].IPv4.String(), "2"}, true, nil},
		{[]string{"backend", "drain", extra, b[1].IPv4.String()}, true, []string{"draining"}},
		{[]string{"backend", "weight", extra, b[1].IPv4.String(), "70000"}, false, []string{"70000"}},
		{[]string{"backend", "add", extra, "banana"}, false, []string{"banana"}},
		{[]string{"backend", "remove", extra, b[1].IPv4.String()}, true, nil},
		{[]string{"backend", "remove", extra, b[1].IPv4.String()}, false, []string{"not found"}},
		{[]string{"vip", "remove", extra}, true, nil},
		{[]string{"vip", "remove", extra}, false, []string{"not found"}},
		{[]string{"explain", "198.19.1.2", "203.0.113.99", "tcp", "1", "80"}, false, []string{"no vip"}},
		{[]string{"apply", "-f", good}, true, []string{"unchanged"}},
		{[]string{"vrrp", "handover"}, false, []string{"not configured"}},
	}
	for _, c := range cases {
		out, err := h.cli(c.args...)
		if (err == nil) != c.ok {
			t.Errorf("fulcrum %s: err %v, want ok=%v\n%s", strings.Join(c.args, " "), err, c.ok, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("fulcrum %s: output lacks %q:\n%s", strings.Join(c.args, " "), w, out)
			}
		}
	}
	out, err := h.cli("-o", "json", "vip", "list")
	var vips []api.VIP
	if err != nil || json.Unmarshal([]byte(out), &vips) != nil || len(vips) != 5 {
		t.Errorf("vip list -o json: %v, %d vips\n%s", err, len(vips), out)
	}
	// No daemon at the socket: a clear error.
	raw, err := exec.Command(h.bin, "--socket", filepath.Join(t.TempDir(), "none.sock"), "status").CombinedOutput()
	if err == nil || !strings.Contains(string(raw), "cannot reach the fulcrum daemon") {
		t.Errorf("status without a daemon: err %v\n%s", err, raw)
	}
}

package daemon_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestXDPModeAuto starts the daemon with eth0 (a veth: native XDP) and lo
// (no native XDP on this kernel: internal/datapath TestAttachAutoFallsBack
// checks that premise), both in the default mode, auto. eth0 must get
// native and lo generic, the log must warn about lo alone and name the
// driver's refusal, and status must report each mode as the kernel has it.
func TestXDPModeAuto(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(strings.Replace(h.config(), "interfaces:\n  - name: eth0\n", "interfaces:\n  - name: eth0\n  - name: lo\n", 1))
	h.startDaemon()

	st, err := h.client.Status(bg())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range st.Interfaces {
		got = append(got, i.Name+" "+i.XDPMode)
	}
	if want := []string{"eth0 native", "lo generic"}; !slices.Equal(got, want) {
		t.Errorf("status interfaces: got %q, want %q", got, want)
	}
	log := h.log()
	warn := regexp.MustCompile(`level=WARN msg="xdp_mode auto: the driver refused native XDP, attached in generic mode[^"]*" interface=(\S+) error="[^"]*operation not supported[^"]*"`)
	m := warn.FindAllStringSubmatch(log, -1)
	if len(m) != 1 || m[0][1] != "lo" {
		t.Errorf("want one fallback warning, for lo, naming the refusal; got %q in the log:\n%s", m, log)
	}
	if !strings.Contains(log, `msg=attached interface=lo ifindex=1 mode=generic`) || !strings.Contains(log, `msg=attached interface=eth0`) {
		t.Errorf("the log does not say how each interface was attached:\n%s", log)
	}
	if out, err := h.cli("status"); err != nil || !strings.Contains(out, "lo (ifindex 1, generic XDP)") {
		t.Errorf("fulcrum status does not show lo in generic mode (%v):\n%s", err, out)
	}
}

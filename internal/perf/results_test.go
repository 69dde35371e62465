package perf

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// sampleResults are packet-rate figures for every configuration, frame kind
// and CPU count, as measurePackets records them.
func sampleResults() *Results {
	res := &Results{Kernel: "test", CPUs: 2, Command: "make bench"}
	for _, cpus := range []int{1, 2} {
		for _, frame := range []string{FrameUDP, FrameTCP} {
			for i, c := range PacketConfigs {
				v := float64(cpus) * 10 / float64(i+1)
				f := newFigure(SectionPackets, packetName(c, frame, cpus), "Mpps", []float64{v, v * 0.9, v * 1.1})
				f.Config, f.Frame, f.CPUs = c, frame, cpus
				f.Ratio = 1 / float64(i+1)
				res.add(f)
			}
		}
	}
	f := newFigure(SectionConnections, PathDirect, "k conn/s", []float64{15})
	f.Ratio = 1
	res.add(f)
	res.add(newFigure(SectionControl, "maglev build M=65537, 1000 backends", "ns/op", []float64{1.8e6}))
	return res
}

// TestPrintTable checks the lines scripts read: the output ends with one
// `e2e CONFIG mpps=N x_ceiling=R` line per configuration, from the UDP,
// 1 vCPU figures.
func TestPrintTable(t *testing.T) {
	var buf bytes.Buffer
	sampleResults().PrintTable(&buf)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	tail := lines[len(lines)-len(E2EConfigs):]
	want := []string{
		"e2e ceiling mpps=10.00 x_ceiling=1.00",
		"e2e dsr mpps=3.33 x_ceiling=0.33",
		"e2e ipip mpps=2.00 x_ceiling=0.20",
		"e2e nftables mpps=1.67 x_ceiling=0.17",
	}
	re := regexp.MustCompile(`^e2e (ceiling|dsr|ipip|nftables) mpps=[0-9.]+ x_ceiling=[0-9.]+$`)
	for i, l := range tail {
		if l != want[i] || !re.MatchString(l) {
			t.Errorf("line %d from the end: got %q, want %q\nwhole output:\n%s", len(tail)-i, l, want[i], buf.String())
		}
	}
}

func TestWriteJSONAndChart(t *testing.T) {
	dir := t.TempDir()
	res := sampleResults()
	path, err := res.WriteJSON(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Figures) != len(res.Figures) {
		t.Fatalf("results.json holds %d figures, want %d", len(back.Figures), len(res.Figures))
	}
	for _, f := range back.Figures {
		if f.Unit == "" || f.Command == "" || len(f.Runs) == 0 {
			t.Errorf("figure %q lacks a unit, command or runs: %+v", f.Name, f)
		}
	}
	png1, err := res.WriteChart(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(png1) != "rates.png" {
		t.Errorf("chart written to %s, want rates.png", png1)
	}
	fh, err := os.Open(png1)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := png.Decode(fh); err != nil {
		t.Errorf("rates.png: %v", err)
	}
}

// TestDaemonConfig checks that the daemon's configuration of the memory
// figure is one the daemon accepts, with the size asked for.
func TestDaemonConfig(t *testing.T) {
	cfg, err := config.Parse([]byte(daemonConfig("/run/fcbench-x", "/tmp/x.sock", 300, 20)))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.VIPs) != 300 {
		t.Fatalf("got %d VIPs, want 300", len(cfg.VIPs))
	}
	seen := make(map[string]bool)
	for i, v := range cfg.VIPs {
		if len(v.Backends) != 20 {
			t.Fatalf("vip %d: got %d backends, want 20", i, len(v.Backends))
		}
		if v.Backends[19].MAC == nil {
			t.Fatalf("vip %d: backend without a MAC", i)
		}
		ref := daemonVIP(i)
		if v.Address != ref.Address || v.Port != ref.Port {
			t.Fatalf("vip %d: got %s:%d, want %s:%d", i, v.Address, v.Port, ref.Address, ref.Port)
		}
		k := ref.String()
		if seen[k] {
			t.Fatalf("vip %d: %s twice", i, k)
		}
		seen[k] = true
	}
}

// TestScaleVIPs checks that the VIPs the scale run creates are distinct
// and inside the VIP range, as ct_walk addresses them.
func TestScaleVIPs(t *testing.T) {
	seen := make(map[string]bool)
	for v := range 4096 {
		vip := scaleVIP(v)
		if !vip.Addr.Is4() || vip.Addr.As4()[2] != 113 || vip.Addr.As4()[3] == 0 || vip.Addr.As4()[3] == 255 {
			t.Fatalf("vip %d: %s outside 203.0.113.1-254", v, vip)
		}
		if seen[vip.String()] {
			t.Fatalf("vip %d: %s twice", v, vip)
		}
		seen[vip.String()] = true
	}
}

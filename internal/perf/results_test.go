package perf

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
				if c == ConfigDSR1M {
					f.ConnTable = &ConnTable{Entries: 1 << 20, Capacity: 1 << 20, Hits: 3e6}
					f.Note = f.ConnTable.String()
				}
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
		"e2e dsr-1m mpps=2.50 x_ceiling=0.25",
		"e2e ipip mpps=1.67 x_ceiling=0.17",
		"e2e nftables mpps=1.43 x_ceiling=0.14",
		"e2e kfwd mpps=1.25 x_ceiling=0.12",
	}
	if len(tail) != len(want) {
		t.Fatalf("%d e2e configurations, want %d", len(tail), len(want))
	}
	re := regexp.MustCompile(`^e2e (ceiling|dsr|dsr-1m|ipip|nftables|kfwd) mpps=[0-9.]+ x_ceiling=[0-9.]+$`)
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
	for i, f := range back.Figures {
		if f.Unit == "" || f.Command == "" || len(f.Runs) == 0 {
			t.Errorf("figure %q lacks a unit, command or runs: %+v", f.Name, f)
		}
		if want := res.Figures[i].ConnTable; (want == nil) != (f.ConnTable == nil) || want != nil && *want != *f.ConnTable {
			t.Errorf("figure %q: connection table %+v back from results.json, want %+v", f.Name, f.ConnTable, want)
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

// TestPrintTableNewRows checks the table rows of dsr-1m and kfwd, both
// frame kinds and CPU counts, and dsr-1m's connection table note.
func TestPrintTableNewRows(t *testing.T) {
	var buf bytes.Buffer
	sampleResults().PrintTable(&buf)
	out := buf.String()
	for _, want := range []string{
		"  dsr-1m     udp      2.50 [2.25–2.75]             0.25   5.00 [4.50–5.50]             0.25\n",
		"  dsr-1m     tcp-ack  2.50 [2.25–2.75]             0.25   5.00 [4.50–5.50]             0.25\n",
		"  kfwd       udp      1.25 [1.12–1.38]             0.12   2.50 [2.25–2.75]             0.12\n",
		"  kfwd       tcp-ack  1.25 [1.12–1.38]             0.12   2.50 [2.25–2.75]             0.12\n",
		"  dsr-1m udp 1cpu: connection table 1048576 of 1048576 entries (full); 100.00% of lookups hit, 0 missed (steady, no entry lost)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks the line %q; whole output:\n%s", want, out)
		}
	}
}

// TestPacketNote checks how the runs of a configuration are summed up:
// dsr-1m's connection table over its runs (the fewest entries, the
// lookups added up), and no backend spread for kfwd, which forwards to
// one destination.
func TestPacketNote(t *testing.T) {
	var a, b rigRun
	a.sent, a.delivered, a.perKey[11], a.perKey[12] = 100, 100, 50, 50
	b.sent, b.delivered, b.perKey[11], b.perKey[12] = 100, 100, 50, 50
	a.table = &ConnTable{Entries: 1 << 20, Capacity: 1 << 20, Hits: 100}
	b.table = &ConnTable{Entries: 1<<20 - 5, Capacity: 1 << 20, Hits: 90, Misses: 10}
	note, spread, table := packetNote(ConfigDSR1M, []rigRun{a, b}, 2)
	wantTable := ConnTable{Entries: 1<<20 - 5, Capacity: 1 << 20, Hits: 190, Misses: 10}
	if table == nil || *table != wantTable {
		t.Errorf("dsr-1m: table %+v, want %+v", table, wantTable)
	}
	wantNote := "connection table 1048571 of 1048576 entries (5 free); 95.00% of lookups hit, 10 missed (evicting or expiring)"
	if note != wantNote {
		t.Errorf("dsr-1m: note %q, want %q", note, wantNote)
	}
	if spread == nil || spread.Received != 2 {
		t.Errorf("dsr-1m: spread %+v, want both backends receiving", spread)
	}

	var k rigRun
	k.sent, k.delivered, k.perKey[11] = 100, 100, 100
	note, spread, table = packetNote(ConfigKfwd, []rigRun{k}, 8)
	if note != "" || spread != nil || table != nil {
		t.Errorf("kfwd: note %q, spread %+v, table %+v; want none (one destination, no table)", note, spread, table)
	}
}

// TestPacketConfigs checks -perf.configs: the ceiling always comes first,
// the rest keep PacketConfigs's order, and an unknown name is refused by
// name.
func TestPacketConfigs(t *testing.T) {
	got, err := PacketOptions{Configs: []string{ConfigKfwd, ConfigDSR1M}}.configs()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{ConfigCeiling, ConfigDSR1M, ConfigKfwd}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got, err := (PacketOptions{}).configs(); err != nil || !slices.Equal(got, PacketConfigs) {
		t.Errorf("no configurations asked: got %v, %v; want all", got, err)
	}
	if _, err := (PacketOptions{Configs: []string{ConfigDSR, "dsr-2m"}}).configs(); err == nil || !strings.Contains(err.Error(), `"dsr-2m"`) {
		t.Errorf("unknown configuration: got error %v, want one naming \"dsr-2m\"", err)
	}
}

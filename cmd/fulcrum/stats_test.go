package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestStatsTable(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "stats")
	r.expect(t, 0, []string{"rates over 1s", "VIP / BACKEND", "PACKET RATE", "VERDICT"})
	lines := strings.Split(r.stdout, "\n")
	wantRows := [][]string{
		{"tcp/203.0.113.10:80", "1.2M", "987.7 MB", "1.2k pps", "3.4 MB/s"},
		{"198.18.0.11", "999", "12.3 kB", "0.5 pps", "950 B/s"},
		{"drop_malformed", "3"},
		{"pass", "42"},
		{"tx_dsr", "1.2M"},
	}
	for _, want := range wantRows {
		found := false
		for _, l := range lines {
			if cellsEqual(l, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no row %q in:\n%s", want, r.stdout)
		}
	}
	// Verdicts are sorted by name.
	if a, b := strings.Index(r.stdout, "drop_malformed"), strings.Index(r.stdout, "tx_dsr"); a > b {
		t.Errorf("verdicts not sorted:\n%s", r.stdout)
	}
}

// cellsEqual reports whether a table line holds exactly the given cells,
// cells being separated by two or more spaces.
func cellsEqual(line string, cells []string) bool {
	var got []string
	for _, c := range strings.Split(strings.TrimSpace(line), "  ") {
		if c = strings.TrimSpace(c); c != "" {
			got = append(got, c)
		}
	}
	return strings.Join(got, "|") == strings.Join(cells, "|")
}

func TestStatsJSON(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "stats", "-o", "json")
	r.expect(t, 0, []string{`"packets_per_second": 1234`})
	var st api.Stats
	decodeJSON(t, r.stdout, &st)
	if st.Verdicts["tx_dsr"] != 1234567 || len(st.VIPs) != 1 || st.VIPs[0].Counter.Bytes != 987654321 {
		t.Errorf("decoded %+v", st)
	}
}

func TestStatsNoVIPs(t *testing.T) {
	var buf bytes.Buffer
	printStats(&buf, api.Stats{})
	if !strings.Contains(buf.String(), "(no VIPs)") || strings.Contains(buf.String(), "VERDICT") {
		t.Errorf("empty stats:\n%s", buf.String())
	}
}

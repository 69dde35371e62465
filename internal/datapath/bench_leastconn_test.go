package datapath

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/datapath/testprogs"
)

// leastConnPaths adds to the full datapath (newFullDatapath) the VIPs of
// the least-conn benchmark, and returns its paths: a new flow (a SYN, each
// repeat from a fresh source) to a least-conn VIP of 3 backends, of
// LeastConnExactMax (the exact scan's worst case), and of 1000 (two
// choices); and, to compare with, a SYN to a Maglev VIP of 1000 (the one
// of 3 is BenchmarkFastpath's newflow-syn).
func leastConnPaths(b *testing.B, full *Datapath, tp *testprogs.TestprogsObjects) []benchPath {
	b.Helper()
	vips := []struct {
		name string
		addr string
		cfg  VIPConfig
		set  []Backend
	}{
		{"newflow-least-conn", "203.0.113.90", VIPConfig{Mode: ModeDSR, LeastConn: true}, backends4},
		{fmt.Sprintf("newflow-least-conn-%d", LeastConnExactMax), "203.0.113.91", VIPConfig{Mode: ModeDSR, LeastConn: true}, manyBackends(LeastConnExactMax)},
		{"newflow-least-conn-1000", "203.0.113.92", VIPConfig{Mode: ModeDSR, LeastConn: true}, manyBackends(1000)},
		{"newflow-maglev-1000", "203.0.113.93", VIPConfig{Mode: ModeDSR}, manyBackends(1000)},
	}
	var out []benchPath
	for _, v := range vips {
		if err := full.AddVIP(VIP{Addr: netip.MustParseAddr(v.addr), Port: 80, Proto: TCP}, v.cfg, v.set); err != nil {
			b.Fatal(err)
		}
		p := pkt(client4, v.addr, TCP, 40001, 80)
		p.SYN = true
		out = append(out, benchPath{name: v.name, prog: tp.BenchNewflow, frame: p.Build(), proof: StatCtSYN, proven: true, d: full, target: full.Program()})
	}
	return out
}

// printLeastConnRatios prints each least-conn path over the Maglev new flow
// of the same pool size (newflow-syn: 3 backends), per round (the paths of a round ran back to back)
// and the median of the rounds:
//
//	fastpath least-conn-ratio PATH x_maglev=R [lo-hi] kernel_x_maglev=Q [lo-hi]
func printLeastConnRatios(b *testing.B, results, kernel map[string][]float64) {
	for _, c := range [][2]string{
		{"newflow-least-conn", "newflow-syn"},
		{fmt.Sprintf("newflow-least-conn-%d", LeastConnExactMax), "newflow-syn"},
		{"newflow-least-conn-1000", "newflow-maglev-1000"},
	} {
		m, lo, hi := roundRatio(results[c[0]], results[c[1]])
		km, klo, khi := roundRatio(kernel[c[0]], kernel[c[1]])
		fmt.Printf("fastpath least-conn-ratio %s x_maglev=%.2f [%.2f-%.2f] kernel_x_maglev=%.2f [%.2f-%.2f]\n", c[0], m, lo, hi, km, klo, khi)
		b.ReportMetric(km, c[0]+"-kernel-x-maglev")
	}
}

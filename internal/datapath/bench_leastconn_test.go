package datapath

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/datapath/testprogs"
)

// leastConnPaths adds to the full datapath (newFullDatapath) the VIPs of
// the least-conn benchmark, and returns its paths: a new flow (a SYN, each
// repeat from a fresh source) to a least-conn VIP of 3 backends, of
// LeastConnExactMax (the exact scan's worst case), and of 1000 (two
// choices); and, to compare with, a SYN to Maglev VIPs of 3 and of 1000.
func leastConnPaths(b *testing.B, full *Datapath, tp *testprogs.TestprogsObjects) []benchPath {
	b.Helper()
	vips := []struct {
		name string
		addr string
		cfg  VIPConfig
		set  []Backend
	}{
		{"newflow-maglev-3", vipWeb4.Addr.String(), VIPConfig{Mode: ModeDSR}, nil},
		{"newflow-least-conn", "203.0.113.90", VIPConfig{Mode: ModeDSR, LeastConn: true}, backends4},
		{fmt.Sprintf("newflow-least-conn-%d", LeastConnExactMax), "203.0.113.91", VIPConfig{Mode: ModeDSR, LeastConn: true}, manyBackends(LeastConnExactMax)},
		{"newflow-least-conn-1000", "203.0.113.92", VIPConfig{Mode: ModeDSR, LeastConn: true}, manyBackends(1000)},
		{"newflow-maglev-1000", "203.0.113.93", VIPConfig{Mode: ModeDSR}, manyBackends(1000)},
	}
	var out []benchPath
	for _, v := range vips {
		if v.set != nil {
			if err := full.AddVIP(VIP{Addr: netip.MustParseAddr(v.addr), Port: 80, Proto: TCP}, v.cfg, v.set); err != nil {
				b.Fatal(err)
			}
		}
		p := pkt(client4, v.addr, TCP, 40001, 80)
		p.SYN = true
		out = append(out, benchPath{name: v.name, prog: tp.BenchNewflow, frame: p.Build(), proof: StatCtSYN, proven: true, d: full, target: full.Program()})
	}
	return out
}

// printLeastConnRatios prints each least-conn path over the Maglev new flow
// of the same pool size, per round (the paths of a round ran back to back)
// and the median of the rounds:
//
//	fastpath least-conn-ratio PATH x_maglev=R [lo-hi] kernel_x_maglev=Q [lo-hi]
func printLeastConnRatios(b *testing.B, results, kernel map[string][]float64) {
	ratio := func(x, y []float64) (med, lo, hi float64) {
		r := make([]float64, len(x))
		for i := range x {
			r[i] = x[i] / y[i]
		}
		return median(r), slices.Min(r), slices.Max(r)
	}
	for _, c := range [][2]string{
		{"newflow-least-conn", "newflow-maglev-3"},
		{fmt.Sprintf("newflow-least-conn-%d", LeastConnExactMax), "newflow-maglev-3"},
		{"newflow-least-conn-1000", "newflow-maglev-1000"},
	} {
		m, lo, hi := ratio(results[c[0]], results[c[1]])
		km, klo, khi := ratio(kernel[c[0]], kernel[c[1]])
		fmt.Printf("fastpath least-conn-ratio %s x_maglev=%.2f [%.2f-%.2f] kernel_x_maglev=%.2f [%.2f-%.2f]\n", c[0], m, lo, hi, km, klo, khi)
		b.ReportMetric(km, c[0]+"-kernel-x-maglev")
	}
}

package datapath

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath/testprogs"
)

// leastSchedulers are the schedulers of the least-conn benchmark: each
// gets a VIP of 3 backends, of LeastConnExactMax (the exact scan's worst
// case) and of 1000 (two choices), from the given address on. Least-time's
// backends are measured (backend_cost written, distinct times), so that
// its comparisons multiply by them, as they do in service.
var leastSchedulers = []struct {
	name  string
	first byte // the last octet of the first VIP's address (three in a row; bench_pools_test.go takes .97 and .98)
	cfg   VIPConfig
}{
	{"least-conn", 90, VIPConfig{Mode: ModeDSR, LeastConn: true}},
	{"least-time", 94, VIPConfig{Mode: ModeDSR, LeastTime: true}},
}

// leastConnPaths adds to the full datapath (newFullDatapath) the VIPs of
// the least-conn and least-time benchmark, and returns its paths: a new
// flow (a SYN, each repeat from a fresh source) to a VIP of each
// scheduler and size; and, to compare with, a SYN to a Maglev VIP of 1000
// (the one of 3 is BenchmarkFastpath's newflow-syn).
func leastConnPaths(b *testing.B, full *Datapath, tp *testprogs.TestprogsObjects) []benchPath {
	b.Helper()
	type vip struct {
		name string
		addr string
		cfg  VIPConfig
		set  []Backend
	}
	vips := []vip{{"newflow-maglev-1000", "203.0.113.93", VIPConfig{Mode: ModeDSR}, manyBackends(1000)}}
	for _, s := range leastSchedulers {
		for i, set := range [][]Backend{backends4, manyBackends(LeastConnExactMax), manyBackends(1000)} {
			vips = append(vips, vip{leastPathName(s.name, i), fmt.Sprintf("203.0.113.%d", int(s.first)+i), s.cfg, set})
		}
	}
	var out []benchPath
	for _, v := range vips {
		key := VIP{Addr: netip.MustParseAddr(v.addr), Port: 80, Proto: TCP}
		if err := full.AddVIP(key, v.cfg, v.set); err != nil {
			b.Fatal(err)
		}
		if v.cfg.LeastTime {
			for i, be := range v.set {
				if err := full.SetBackendCost(key, be.Addr, time.Duration(100+i%50)*time.Microsecond); err != nil {
					b.Fatal(err)
				}
			}
		}
		p := pkt(client4, v.addr, TCP, 40001, 80)
		p.SYN = true
		out = append(out, benchPath{name: v.name, prog: tp.BenchNewflow, frame: p.Build(), proof: StatCtSYN, proven: true, d: full, target: full.Program()})
	}
	return out
}

// leastPathName names scheduler sched's path of size i (0: 3 backends, 1:
// LeastConnExactMax, 2: 1000): newflow-least-conn, -16, -1000.
func leastPathName(sched string, i int) string {
	return [...]string{"newflow-" + sched, fmt.Sprintf("newflow-%s-%d", sched, LeastConnExactMax), "newflow-" + sched + "-1000"}[i]
}

// printLeastConnRatios prints each least-conn and least-time path over
// the Maglev new flow of the same pool size (newflow-syn: 3 backends), per
// round (the paths of a round ran back to back) and the median of the
// rounds:
//
//	fastpath least-conn-ratio PATH x_maglev=R [lo-hi] kernel_x_maglev=Q [lo-hi]
//	fastpath least-time-ratio PATH ...
func printLeastConnRatios(b *testing.B, results, kernel map[string][]float64) {
	for _, s := range leastSchedulers {
		for i, maglev := range []string{"newflow-syn", "newflow-syn", "newflow-maglev-1000"} {
			path := leastPathName(s.name, i)
			m, lo, hi := roundRatio(results[path], results[maglev])
			km, klo, khi := roundRatio(kernel[path], kernel[maglev])
			fmt.Printf("fastpath %s-ratio %s x_maglev=%.2f [%.2f-%.2f] kernel_x_maglev=%.2f [%.2f-%.2f]\n", s.name, path, m, lo, hi, km, klo, khi)
			b.ReportMetric(km, path+"-kernel-x-maglev")
		}
	}
}

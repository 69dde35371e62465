package datapath

import (
	"bytes"
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/datapath/testprogs"
)

var (
	benchRounds = flag.Int("fastpath.rounds", 5, "rounds of BenchmarkFastpath; the median is reported")
	benchRepeat = flag.Int("fastpath.repeat", 2_000_000, "BPF_PROG_RUN repeats per path and round")
)

// benchPath is one measured path: a program, a frame, and the counter that
// must move once per repeat to prove every repeat took that path.
type benchPath struct {
	name  string
	prog  *ebpf.Program
	frame []byte
	proof Stat // zero-valued paths (floor) have no proof counter
	// proven is false for programs outside the balancer.
	proven bool
	// tx is the verdict counter every repeat must move.
	tx Stat
	// d is the datapath whose counters prove the path.
	d *Datapath
	// env, if set, runs the path in its namespace with its interface as
	// the ingress (ipip needs a FIB).
	env *ipipEnv
	// target is what the wrapper programs tail-call.
	target *ebpf.Program
}

// BenchmarkFastpath measures ns per packet through BPF_PROG_RUN for the
// floor (a MAC swap + XDP_TX), an established TCP flow, the bypass (pure
// Maglev) path and a new flow with insert, interleaved over several rounds
// in one process, and prints each median as a ratio to the floor:
//
//	fastpath PATH ns/pkt=N x_floor=R
//
// Every repeat of a balancer path is checked against the verdict counters:
// the path's counter must move exactly as much as all verdicts together.
func BenchmarkFastpath(b *testing.B) {
	d := newTestDatapath(b)
	if err := d.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR}, backends4); err != nil {
		b.Fatal(err)
	}
	if err := d.AddVIP(vipDNS4, VIPConfig{Mode: ModeDSR, NoConntrack: true}, backends4); err != nil {
		b.Fatal(err)
	}
	var tp testprogs.TestprogsObjects
	if err := testprogs.LoadTestprogsObjects(&tp, nil); err != nil {
		b.Fatal(err)
	}
	defer tp.Close()

	established := pkt(client4, "203.0.113.10", TCP, 40000, 80).Build()
	// One packet creates the connection entry the benchmark then hits.
	if v, _ := runProg(b, d.Program(), bytes.Clone(established)); v != xdpTX {
		b.Fatalf("priming packet: verdict %s", verdictNames[v])
	}
	hash := pkt(client4, "203.0.113.10", UDP, 40000, 53).Build()
	newflow := pkt(client4, "203.0.113.10", TCP, 40001, 80).Build()

	// ipip: an established TCP flow to a 4in4 VIP, in a namespace whose
	// FIB knows the next hop; bench_ipip strips the previous repeat's
	// outer header, so every repeat encapsulates.
	ie := newIPIPEnv(b)
	ipip := pkt(client4, "203.0.113.80", TCP, 40000, 80).Build()
	if v, _ := ie.run(b, bytes.Clone(ipip)); v != xdpTX {
		b.Fatalf("priming ipip packet: verdict %s", verdictNames[v])
	}

	paths := []benchPath{
		{name: "floor", prog: tp.BenchFloor, frame: established},
		{name: "established", prog: d.Program(), frame: established, proof: StatCtHit, proven: true},
		{name: "hash", prog: d.Program(), frame: hash, proof: StatCtBypass, proven: true},
		// bench_newflow writes a fresh source address into every repeat,
		// then tail-calls the balancer: each repeat misses and inserts.
		{name: "newflow", prog: tp.BenchNewflow, frame: newflow, proof: StatCtMiss, proven: true, target: d.Program()},
		{name: "ipip", prog: tp.BenchIpip, frame: ipip, proof: StatCtHit, proven: true, tx: StatTxIPIP, d: ie.d, env: ie, target: ie.d.Program()},
		// bench_tail tail-calls the floor: what the wrappers add.
		{name: "wrapper", prog: tp.BenchTail, frame: established, target: tp.BenchFloor},
	}
	results := make(map[string][]float64)
	for b.Loop() {
		for round := 0; round < *benchRounds; round++ {
			for _, p := range paths {
				if p.target != nil {
					if err := tp.BenchTarget.Put(uint32(0), p.target); err != nil {
						b.Fatal(err)
					}
				}
				if p.d == nil {
					p.d = d
				}
				if p.tx == 0 {
					p.tx = StatTxDSR
				}
				ns, err := measure(p, *benchRepeat)
				if err != nil {
					b.Fatalf("%s: %v", p.name, err)
				}
				results[p.name] = append(results[p.name], ns)
			}
		}
	}
	floor := median(results["floor"])
	fmt.Printf("fastpath: BPF_PROG_RUN, %d repeats per run, median of %d rounds (min-max in brackets)\n", *benchRepeat, *benchRounds)
	for _, p := range paths {
		r := results[p.name]
		fmt.Printf("  %-12s %7.2f ns/pkt [%.2f-%.2f]\n", p.name, median(r), slices.Min(r), slices.Max(r))
	}
	fmt.Printf("  (newflow and ipip include a wrapper: its tail call and packet rewrite)\n")
	for _, p := range paths {
		if p.name == "wrapper" {
			continue
		}
		m := median(results[p.name])
		fmt.Printf("fastpath %s ns/pkt=%.2f x_floor=%.2f\n", p.name, m, m/floor)
		b.ReportMetric(m, p.name+"-ns/pkt")
	}
}

// measure runs one path repeat times and returns ns per packet, after
// checking that every repeat took the path.
func measure(p benchPath, repeat int) (float64, error) {
	d := p.d
	before, err := d.Counters()
	if err != nil {
		return 0, err
	}
	opts := ebpf.RunOptions{Data: p.frame, Repeat: uint32(repeat)}
	var ret uint32
	var elapsed time.Duration
	run := func() error {
		start := time.Now()
		var err error
		ret, err = p.prog.Run(&opts)
		elapsed = time.Since(start)
		return err
	}
	if p.env != nil {
		opts.Context = xdpMD{DataEnd: uint32(len(p.frame)), IngressIfindex: uint32(p.env.ifindex)}
		err = p.env.lb.Do(run)
	} else {
		err = run()
	}
	if err != nil {
		return 0, err
	}
	if ret != xdpTX {
		return 0, fmt.Errorf("verdict %s, want XDP_TX", verdictNames[ret])
	}
	if !p.proven {
		return float64(elapsed.Nanoseconds()) / float64(repeat), nil
	}
	after, err := d.Counters()
	if err != nil {
		return 0, err
	}
	var verdicts uint64
	for _, s := range AllStats() {
		if s.IsVerdict() {
			verdicts += after.Stat(s) - before.Stat(s)
		}
	}
	proof := after.Stat(p.proof) - before.Stat(p.proof)
	// The kernel may run a program more often than asked when the
	// syscall is interrupted, never less.
	if verdicts < uint64(repeat) || proof != verdicts || after.Stat(p.tx)-before.Stat(p.tx) != verdicts {
		return 0, fmt.Errorf("%d repeats: %d verdicts, %d %s, %d %s: not every repeat took the path (counters moved: %s)",
			repeat, verdicts, proof, p.proof, after.Stat(p.tx)-before.Stat(p.tx), p.tx, formatStats(statsDelta(before, after)))
	}
	return float64(elapsed.Nanoseconds()) / float64(verdicts), nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

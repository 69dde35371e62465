package datapath

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

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
	// verdict is the XDP action every repeat must return; 0 means XDP_TX.
	verdict uint32
	// sync runs the path with connection sync on (SetSync): new entries
	// and state changes go to the event ring, which a reader drains.
	sync bool
}

// BenchmarkFastpath measures ns per packet through BPF_PROG_RUN for the
// floor (a MAC swap + XDP_TX), an established TCP flow, the bypass (pure
// Maglev) path, a new flow with insert into a full default-sized table, and
// a TCP ACK to the host's own address, an established flow to a VIP with
// 256 source ranges and a packet of a client outside them, new flows by SYN
// to a Maglev and to a round-robin VIP and an established flow of the
// latter, interleaved over several rounds in one
// process, and prints each median as a ratio to the floor, wall clock first,
// then the kernel's own per-repeat figure (BPF_PROG_RUN's duration, which
// leaves out the syscall's fixed cost):
//
//	fastpath PATH ns/pkt=N x_floor=R kernel_ns/pkt=K kernel_x_floor=Q
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
	if err := d.AddVIP(vipAll4, VIPConfig{Mode: ModeDSR, SourceRanges: rangesForBench(b)}, backends4); err != nil {
		b.Fatal(err)
	}
	rr := VIPConfig{Mode: ModeDSR, RoundRobin: true}
	if err := d.AddVIP(vipRR4, rr, backends4); err != nil {
		b.Fatal(err)
	}
	// A VIP measuring response times passively: its SYNs read the clock.
	rt := VIPConfig{Mode: ModeDSR, ResponseTime: true}
	if err := d.AddVIP(vipRT4, rt, backends4); err != nil {
		b.Fatal(err)
	}
	var tp testprogs.TestprogsObjects
	if err := testprogs.LoadTestprogsObjects(&tp, nil); err != nil {
		b.Fatal(err)
	}
	defer tp.Close()

	established := pkt(client4, "203.0.113.10", TCP, 40000, 80).Build()
	// The same to a VIP with 256 source ranges: one trie lookup more. And
	// a client outside them, dropped.
	ranged := pkt(client4, vipAll4.Addr.String(), TCP, 40000, 80).Build()
	refused := pkt("198.19.2.2", vipAll4.Addr.String(), TCP, 40000, 80).Build()
	// An established flow of a round-robin VIP, whose entry its SYN made.
	rrSYN := pkt(client4, vipRR4.Addr.String(), TCP, 40000, 80)
	rrSYN.SYN = true
	rrEstablished := pkt(client4, vipRR4.Addr.String(), TCP, 40000, 80).Build()
	// An established flow of the measuring VIP: its SYN, then its first
	// ACK (the sample), then the benchmark's ACKs.
	rtSYN := pkt(client4, vipRT4.Addr.String(), TCP, 40000, 80)
	rtSYN.SYN = true
	rtEstablished := pkt(client4, vipRT4.Addr.String(), TCP, 40000, 80).Build()
	// One packet creates the connection entry the benchmark then hits.
	for _, f := range [][]byte{established, ranged, rrSYN.Build(), rtSYN.Build(), rtEstablished} {
		if v, _ := runProg(b, d.Program(), bytes.Clone(f)); v != xdpTX {
			b.Fatalf("priming packet: verdict %s", verdictNames[v])
		}
	}
	hash := pkt(client4, "203.0.113.10", UDP, 40000, 53).Build()
	newflow := pkt(client4, "203.0.113.10", TCP, 40001, 80).Build()
	// A TCP ACK to an address of the host itself (SSH, BGP, a health
	// reply): no VIP, so it must reach the stack as cheaply as possible.
	host := pkt(client4, "192.0.2.1", TCP, 40000, 22).Build()

	// newflow and host run against a datapath with the default table size
	// whose IPv4 table holds as many live entries as it can: what a busy
	// balancer has, and no longer a table that fits in the cache.
	full := newFullDatapath(b)
	if err := full.AddVIP(vipRR4, rr, backends4); err != nil {
		b.Fatal(err)
	}
	if err := full.AddVIP(vipRT4, rt, backends4); err != nil {
		b.Fatal(err)
	}
	// New flows by SYN, so that the round-robin VIP takes its sequence:
	// one to the Maglev VIP for comparison.
	synTo := func(v VIP) []byte {
		p := pkt(client4, v.Addr.String(), TCP, 40001, v.Port)
		p.SYN = true
		return p.Build()
	}

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
		{name: "established-ranges", prog: d.Program(), frame: ranged, proof: StatCtHit, proven: true},
		{name: "refused", prog: d.Program(), frame: refused, proof: StatDropSourceRange, proven: true, tx: StatDropSourceRange, verdict: xdpDrop},
		{name: "hash", prog: d.Program(), frame: hash, proof: StatCtBypass, proven: true},
		// bench_newflow writes a fresh source address into every repeat,
		// then tail-calls the balancer: each repeat misses and inserts.
		{name: "newflow", prog: tp.BenchNewflow, frame: newflow, proof: StatCtMiss, proven: true, d: full, target: full.Program()},
		{name: "newflow-syn", prog: tp.BenchNewflow, frame: synTo(vipWeb4), proof: StatCtSYN, proven: true, d: full, target: full.Program()},
		{name: "newflow-round-robin", prog: tp.BenchNewflow, frame: synTo(vipRR4), proof: StatSchedRR, proven: true, d: full, target: full.Program()},
		{name: "established-round-robin", prog: d.Program(), frame: rrEstablished, proof: StatCtHit, proven: true},
		// Passive response times: a SYN reads the clock and stores its
		// time; an established packet pays a state test only.
		{name: "newflow-syn-rt", prog: tp.BenchNewflow, frame: synTo(vipRT4), proof: StatCtSYN, proven: true, d: full, target: full.Program()},
		{name: "established-rt", prog: d.Program(), frame: rtEstablished, proof: StatCtHit, proven: true},
		{name: "host", prog: full.Program(), frame: host, proof: StatPassNoVIP, proven: true, tx: StatPassNoVIP, d: full, verdict: xdpPass},
		{name: "ipip", prog: tp.BenchIpip, frame: ipip, proof: StatCtHit, proven: true, tx: StatTxIPIP, d: ie.d, env: ie, target: ie.d.Program()},
		// bench_tail tail-calls the floor: what the wrappers add.
		{name: "wrapper", prog: tp.BenchTail, frame: established, target: tp.BenchFloor},
		// The same two paths with connection sync on: established pays
		// the flag test (no state changes), newflow writes an event to
		// the ring for every repeat while a reader drains it.
		{name: "established-sync", prog: d.Program(), frame: established, proof: StatCtHit, proven: true, sync: true},
		{name: "newflow-sync", prog: tp.BenchNewflow, frame: newflow, proof: StatCtMiss, proven: true, d: full, target: full.Program(), sync: true},
	}
	paths = append(paths, leastConnPaths(b, full, &tp)...)
	paths = append(paths, poolPaths(b, full, &tp)...)
	for _, dp := range []*Datapath{d, full} {
		drainEvents(b, dp)
	}
	results := make(map[string][]float64)
	kernel := make(map[string][]float64)
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
				if p.verdict == 0 {
					p.verdict = xdpTX
				}
				if err := p.d.SetSync(p.sync); err != nil {
					b.Fatal(err)
				}
				ns, kns, err := measure(p, *benchRepeat)
				if err != nil {
					b.Fatalf("%s: %v", p.name, err)
				}
				results[p.name] = append(results[p.name], ns)
				kernel[p.name] = append(kernel[p.name], kns)
			}
		}
	}
	checkPoolPaths(b, full, uint64(*benchRounds)*uint64(*benchRepeat)*uint64(b.N))
	floor, kfloor := median(results["floor"]), median(kernel["floor"])
	fmt.Printf("fastpath: BPF_PROG_RUN, %d repeats per run, median of %d rounds (min-max in brackets); wall clock, then the kernel's duration\n", *benchRepeat, *benchRounds)
	for _, p := range paths {
		r, k := results[p.name], kernel[p.name]
		fmt.Printf("  %-23s %7.2f ns/pkt [%.2f-%.2f]  kernel %4.0f ns/pkt [%.0f-%.0f]\n", p.name, median(r), slices.Min(r), slices.Max(r),
			median(k), slices.Min(k), slices.Max(k))
	}
	fmt.Printf("  (newflow and ipip include a wrapper: its tail call and packet rewrite; the kernel reports whole ns)\n")
	for _, p := range paths {
		if p.name == "wrapper" {
			continue
		}
		m, k := median(results[p.name]), median(kernel[p.name])
		fmt.Printf("fastpath %s ns/pkt=%.2f x_floor=%.2f kernel_ns/pkt=%.0f kernel_x_floor=%.2f\n", p.name, m, m/floor, k, k/kfloor)
		b.ReportMetric(m, p.name+"-ns/pkt")
	}
	// Sync on over sync off, per round (the paths of a round ran back to
	// back, so a round's ratio is the least disturbed by the busy
	// machine), and the median of the rounds.
	c, err := full.Counters()
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("fastpath sync: newflow events lost to a full ring %d of %d (the reader drains it beside the benchmark)\n",
		c.Stat(StatCtExportFull), uint64(*benchRounds)*uint64(*benchRepeat)*uint64(b.N))
	// The kernel's figure is the program's own time; the wall clock's
	// also has what the reader, on a 2-CPU machine, takes from the
	// benchmark's CPU (a thread woken every poll, the Go runtime).
	for _, name := range []string{"established", "newflow"} {
		m, lo, hi := roundRatio(results[name+"-sync"], results[name])
		km, klo, khi := roundRatio(kernel[name+"-sync"], kernel[name])
		fmt.Printf("fastpath sync-ratio %s x_sync_off=%.2f [%.2f-%.2f] kernel_x_sync_off=%.2f [%.2f-%.2f]\n", name, m, lo, hi, km, klo, khi)
		b.ReportMetric(m, name+"-sync-ratio")
		b.ReportMetric(km, name+"-sync-kernel-ratio")
	}
	printLeastConnRatios(b, results, kernel)
}

// roundRatio returns the median, minimum and maximum over the rounds of
// x[i] / y[i]: two paths' figures of one round (run back to back).
func roundRatio(x, y []float64) (med, lo, hi float64) {
	r := make([]float64, len(x))
	for i := range x {
		r[i] = x[i] / y[i]
	}
	return median(r), slices.Min(r), slices.Max(r)
}

// drainEvents reads d's connection events, as the daemon does, until the
// benchmark ends.
func drainEvents(b *testing.B, d *Datapath) {
	r, err := d.ConnEvents()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := r.Read(); err != nil {
				return // closed
			}
		}
	}()
	b.Cleanup(func() {
		r.Close()
		<-done
	})
}

// measure runs one path repeat times and returns ns per packet by the wall
// clock and by the kernel's own timer, after checking that every repeat took
// the path.
func measure(p benchPath, repeat int) (float64, float64, error) {
	d := p.d
	before, err := d.Counters()
	if err != nil {
		return 0, 0, err
	}
	var ctx *xdpMD
	var ret uint32
	var elapsed, kernel time.Duration
	run := func() error {
		start := time.Now()
		var err error
		ret, kernel, err = progRun(p.prog, p.frame, ctx, repeat)
		elapsed = time.Since(start)
		return err
	}
	if p.env != nil {
		ctx = &xdpMD{DataEnd: uint32(len(p.frame)), IngressIfindex: uint32(p.env.ifindex)}
		err = p.env.lb.Do(run)
	} else {
		err = run()
	}
	if err != nil {
		return 0, 0, err
	}
	if ret != p.verdict {
		return 0, 0, fmt.Errorf("verdict %s, want %s", verdictNames[ret], verdictNames[p.verdict])
	}
	if !p.proven {
		return float64(elapsed.Nanoseconds()) / float64(repeat), float64(kernel.Nanoseconds()), nil
	}
	after, err := d.Counters()
	if err != nil {
		return 0, 0, err
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
		return 0, 0, fmt.Errorf("%d repeats: %d verdicts, %d %s, %d %s: not every repeat took the path (counters moved: %s)",
			repeat, verdicts, proof, p.proof, after.Stat(p.tx)-before.Stat(p.tx), p.tx, formatStats(statsDelta(before, after)))
	}
	return float64(elapsed.Nanoseconds()) / float64(verdicts), float64(kernel.Nanoseconds()), nil
}

// progRunAttr is the BPF_PROG_TEST_RUN member of union bpf_attr. The
// benchmark issues the call itself because cilium/ebpf returns the kernel's
// duration only from Program.Benchmark, which takes no context, and ipip
// needs one (its ingress interface).
type progRunAttr struct {
	progFD, retval           uint32
	dataSizeIn, dataSizeOut  uint32
	dataIn, dataOut          uint64
	repeat, duration         uint32
	ctxSizeIn, ctxSizeOut    uint32
	ctxIn, ctxOut            uint64
	flags, cpu, batchSize, _ uint32
}

// progRun runs prog repeat times on frame and returns its verdict and the
// kernel's mean duration of one repeat (whole nanoseconds). An interrupted
// call is run again in full, as cilium/ebpf does.
func progRun(prog *ebpf.Program, frame []byte, ctx *xdpMD, repeat int) (uint32, time.Duration, error) {
	data := bytes.Clone(frame)
	attr := progRunAttr{
		progFD:     uint32(prog.FD()),
		dataSizeIn: uint32(len(data)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&data[0]))),
		repeat:     uint32(repeat),
	}
	if ctx != nil {
		attr.ctxSizeIn = uint32(unsafe.Sizeof(*ctx))
		attr.ctxIn = uint64(uintptr(unsafe.Pointer(ctx)))
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		runtime.KeepAlive(data)
		runtime.KeepAlive(ctx)
		if errno == 0 {
			return attr.retval, time.Duration(attr.duration), nil
		}
		if !errors.Is(errno, unix.EINTR) {
			return 0, 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
		}
	}
}

// newFullDatapath loads a datapath with the default connection-table size,
// the fixture VIPs, and an IPv4 table whose every way holds a live entry of
// vipWeb4 (fillTable).
func newFullDatapath(b *testing.B) *Datapath {
	b.Helper()
	d, err := Load(Options{})
	if err != nil {
		b.Fatalf("Load: %v", err)
	}
	b.Cleanup(func() { d.Close() })
	if err := d.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR}, backends4); err != nil {
		b.Fatal(err)
	}
	if _, err := fillTable(d, vipWeb4, 8080); err != nil {
		b.Fatal(err)
	}
	return d
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

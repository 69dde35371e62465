package perf

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

var (
	flagOut          = flag.String("perf.out", "", "directory for results.json and rates.png (default: bench/out in the module)")
	flagRuns         = flag.Int("perf.runs", 5, "runs of every figure; the median is reported")
	flagSections     = flag.String("perf.sections", strings.Join(AllSections, ","), "comma-separated sections to run: "+strings.Join(AllSections, ", "))
	flagConfigs      = flag.String("perf.configs", "", "comma-separated packet-rate configurations to measure (default all; the ceiling always): "+strings.Join(PacketConfigs, ", "))
	flagDuration     = flag.Duration("perf.duration", time.Second, "length of one packet-rate run")
	flagConnDuration = flag.Duration("perf.conn-duration", 2*time.Second, "length of one connection-rate run")
	flagCtlVIPs      = flag.Int("perf.control-vips", 1000, "VIPs of the large control-plane daemon")
	flagCtlBackends  = flag.Int("perf.control-backends", 100, "backends per VIP of the control-plane daemons")
	flagFulcrum      = flag.String("perf.fulcrum", "", "fulcrum binary the control-plane figures run (default: built from the module)")
)

// suiteCommand is how `make bench` runs the suite.
const suiteCommand = "go test -count=1 -timeout 30m -run '^$' -bench '^BenchmarkSuite$' -benchtime 1x ./internal/perf/"

// BenchmarkSuite runs the whole benchmark suite once, prints its table and
// writes results.json and rates.png. It is what `make bench` runs after
// the fast-path microbenchmarks; see docs/performance.md.
func BenchmarkSuite(b *testing.B) {
	require.BPF(b)
	require.Netns(b)
	opts := DefaultOptions()
	opts.Runs = *flagRuns
	opts.Sections = strings.Split(*flagSections, ",")
	opts.Packets.Duration = *flagDuration
	if *flagConfigs != "" {
		opts.Packets.Configs = strings.Split(*flagConfigs, ",")
	}
	opts.Conns.Duration = *flagConnDuration
	opts.Control.VIPs, opts.Control.Backends = *flagCtlVIPs, *flagCtlBackends
	opts.Control.Fulcrum = *flagFulcrum
	opts.Command = fmt.Sprintf("%s -perf.runs %d -perf.sections %s", suiteCommand, opts.Runs, *flagSections)
	if *flagConfigs != "" {
		opts.Command += " -perf.configs " + *flagConfigs
	}
	opts.Log = os.Stderr
	out := *flagOut
	if out == "" {
		root, err := moduleRoot()
		if err != nil {
			b.Fatal(err)
		}
		out = filepath.Join(root, "bench", "out")
	}
	// An interrupt ends the suite cleanly: every section removes its
	// namespaces and processes on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var res *Results
	for b.Loop() {
		res = Run(ctx, opts)
	}
	// The table comes last, so that it ends with the e2e lines.
	if path, err := res.WriteJSON(out); err != nil {
		b.Error(err)
	} else {
		fmt.Fprintf(os.Stderr, "perf: wrote %s\n", path)
	}
	if res.find(SectionPackets, packetName(ConfigCeiling, FrameUDP, 1)) != nil {
		if path, err := res.WriteChart(out); err != nil {
			b.Error(err)
		} else {
			fmt.Fprintf(os.Stderr, "perf: wrote %s\n", path)
		}
	}
	res.PrintTable(os.Stdout)
	if len(res.Errors) > 0 {
		b.Fatalf("%d part(s) of the suite failed:\n%s", len(res.Errors), strings.Join(res.Errors, "\n"))
	}
}

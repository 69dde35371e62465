package perf

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The suite's sections, as Options.Sections names them.
const (
	RunPackets     = "packets"
	RunConnections = "connections"
	RunControl     = "control"
	RunScale       = "scale"
)

// AllSections lists every section in the order the suite runs them.
var AllSections = []string{RunPackets, RunConnections, RunControl, RunScale}

// Options configure a suite run.
type Options struct {
	// Runs of every measured figure (the median is reported).
	Runs int
	// Sections to run; empty means AllSections.
	Sections []string
	Packets  PacketOptions
	Conns    ConnOptions
	Control  ControlOptions
	Scale    ScaleOptions
	// Command is recorded with every figure: how to reproduce it.
	Command string
	// Log receives progress messages; nil discards them.
	Log io.Writer
}

// DefaultOptions is what `make bench` runs: about five minutes on two
// vCPUs.
func DefaultOptions() Options {
	cpus := []int{1}
	if runtime.NumCPU() >= 2 {
		cpus = append(cpus, 2)
	}
	return Options{
		Runs: 5,
		Packets: PacketOptions{
			Duration: time.Second,
			Backends: 8,
			CPUs:     cpus,
			Frames:   []string{FrameUDP, FrameTCP},
		},
		Conns: ConnOptions{
			Duration: 2 * time.Second,
			Backends: 4,
			Clients:  32,
		},
		Control: ControlOptions{
			MaglevBackends: []int{10, 100, 1000, 10000},
			VIPs:           1000,
			Backends:       100,
		},
		Scale: ScaleOptions{
			VIPs:     4096,
			Backends: 64,
			RingSize: 4099,
			Flows:    1_000_000,
			Repeat:   1_000_000,
		},
	}
}

// Run runs the suite's sections one after the other. A section that fails
// is recorded in Results.Errors and the others still run; every namespace,
// process and BPF object a section creates is gone when it returns.
func Run(ctx context.Context, opts Options) *Results {
	res := &Results{
		Started: time.Now(),
		Kernel:  kernelRelease(),
		CPUs:    runtime.NumCPU(),
		Command: opts.Command,
	}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, "perf: "+format+"\n", args...)
		}
	}
	sections := opts.Sections
	if len(sections) == 0 {
		sections = AllSections
	}
	opts.Packets.Runs, opts.Conns.Runs, opts.Control.Runs, opts.Scale.Runs = opts.Runs, opts.Runs, opts.Runs, opts.Runs
	steps := []struct {
		section, what string
		needs         []string
		run           func() error
	}{
		{RunPackets, "packet rate: " + strings.Join(packetConfigs(opts.Packets), ", "), []string{"nft", "ethtool"}, func() error {
			return measurePackets(ctx, opts.Packets, res)
		}},
		{RunConnections, "connection rate: direct, haproxy, fulcrum dsr", []string{"haproxy"}, func() error {
			return measureConnections(ctx, opts.Conns, res)
		}},
		{RunControl, "control plane: maglev builds", nil, func() error {
			return measureMaglev(opts.Control, res)
		}},
		{RunControl, "control plane: daemon memory and API latency", []string{"go"}, func() error {
			return measureDaemon(ctx, opts.Control, res)
		}},
		{RunScale, "scale: VIPs, backends and connection entries", nil, func() error {
			return measureScale(ctx, opts.Scale, res)
		}},
	}
	for _, s := range steps {
		if !slices.Contains(sections, s.section) {
			continue
		}
		if err := ctx.Err(); err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", s.what, err))
			continue
		}
		if missing := missingTools(s.needs); len(missing) > 0 {
			res.Errors = append(res.Errors, fmt.Sprintf("%s: not run, %v not installed", s.what, missing))
			continue
		}
		logf("%s ...", s.what)
		start := time.Now()
		if err := s.run(); err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", s.what, err))
			logf("%s: FAILED after %v: %v", s.what, time.Since(start).Round(time.Second), err)
			continue
		}
		logf("%s: done in %v", s.what, time.Since(start).Round(time.Second))
	}
	res.Finished = time.Now()
	return res
}

// packetConfigs names the configurations the packet-rate section will
// measure, or those asked for if some is unknown (the section then fails
// naming it).
func packetConfigs(o PacketOptions) []string {
	if c, err := o.configs(); err == nil {
		return c
	}
	return o.Configs
}

func missingTools(tools []string) []string {
	var out []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			out = append(out, t)
		}
	}
	return out
}

package perf

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/fulcrum-lb/fulcrum/testenv"
)

// PacketOptions shape the packet-rate measurement.
type PacketOptions struct {
	Runs     int           // per configuration, frame kind and CPU count
	Duration time.Duration // of one run
	Backends int
	// CPUs lists the CPU counts to measure (1, and 2 if the machine has
	// them).
	CPUs []int
	// Frames lists the frame kinds (FrameUDP, FrameTCP).
	Frames []string
	// Configs lists the configurations to measure, of PacketConfigs;
	// empty means all. The ceiling is always measured, since every other
	// figure is a ratio to it.
	Configs []string
}

// configs returns the configurations to measure, in PacketConfigs's order,
// or an error naming one that does not exist.
func (o PacketOptions) configs() ([]string, error) {
	if len(o.Configs) == 0 {
		return PacketConfigs, nil
	}
	for _, c := range o.Configs {
		if !slices.Contains(PacketConfigs, c) {
			return nil, fmt.Errorf("unknown packet-rate configuration %q (known: %s)", c, strings.Join(PacketConfigs, ", "))
		}
	}
	var out []string
	for _, c := range PacketConfigs {
		if c == ConfigCeiling || slices.Contains(o.Configs, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// measurePackets builds the packet-rate rig and measures every
// configuration, interleaved round by round so that a noisy moment hits all
// of them alike.
func measurePackets(ctx context.Context, opts PacketOptions, res *Results) error {
	configs, err := opts.configs()
	if err != nil {
		return err
	}
	env, err := testenv.Open("")
	if err != nil {
		return err
	}
	defer env.Close()
	queues := slices.Max(opts.CPUs)
	r, err := newPacketRig(ctx, env, queues, opts.Backends)
	if err != nil {
		return fmt.Errorf("build the packet-rate rig: %w", err)
	}
	defer r.Close()

	type key struct {
		config, frame string
		cpus          int
	}
	runs := make(map[key][]rigRun)
	for _, ncpu := range opts.CPUs {
		if ncpu > runtime.NumCPU() {
			res.Notes = append(res.Notes, fmt.Sprintf("packet rate on %d vCPUs skipped: the machine has %d", ncpu, runtime.NumCPU()))
			continue
		}
		cpus := make([]int, ncpu)
		for i := range cpus {
			cpus[i] = i
		}
		for _, frame := range opts.Frames {
			for round := 0; round < opts.Runs; round++ {
				for _, c := range configs {
					if err := ctx.Err(); err != nil {
						return err
					}
					if err := r.selectConfig(ctx, c); err != nil {
						return err
					}
					rr, err := r.run(frame, cpus, opts.Duration)
					if err != nil {
						return fmt.Errorf("%s %s on %d cpus: %w", c, frame, ncpu, err)
					}
					if rr.delivered == 0 {
						return fmt.Errorf("%s %s on %d cpus: nothing reached the sink (%d frames sent); in0: %s; sink0: %s",
							c, frame, ncpu, rr.sent, ethtoolStats(ctx, r.lb, "in0"), ethtoolStats(ctx, r.sink, "sink0"))
					}
					k := key{c, frame, ncpu}
					runs[k] = append(runs[k], rr)
				}
			}
		}
	}

	for _, ncpu := range opts.CPUs {
		for _, frame := range opts.Frames {
			var ceiling float64
			for _, c := range configs {
				rs := runs[key{c, frame, ncpu}]
				if len(rs) == 0 {
					continue
				}
				var mpps []float64
				for _, rr := range rs {
					mpps = append(mpps, rr.mpps())
				}
				f := newFigure(SectionPackets, packetName(c, frame, ncpu), "Mpps", mpps)
				f.Config, f.Frame, f.CPUs = c, frame, ncpu
				if c == ConfigCeiling {
					ceiling = f.Median
				}
				if ceiling > 0 {
					f.Ratio = f.Median / ceiling
					f.RatioTo = packetName(ConfigCeiling, frame, ncpu)
				}
				f.Note, f.Spread, f.ConnTable = packetNote(c, rs, opts.Backends)
				res.add(f)
			}
		}
	}
	return nil
}

// packetNote summarises the runs' deliveries: the share of frames sent
// that reached the sink if some were lost, the connection table of
// dsr-1m, and (but for the configurations with one destination) how evenly
// the backends got them.
func packetNote(config string, rs []rigRun, backends int) (string, *Spread, *ConnTable) {
	var sent, delivered uint64
	var table *ConnTable
	per := make([]uint64, backends)
	for _, rr := range rs {
		sent += rr.sent
		delivered += rr.delivered
		for i, n := range rr.backendCounts(backends) {
			per[i] += n
		}
		if t := rr.table; t != nil {
			if table == nil {
				table = &ConnTable{Entries: t.Entries, Capacity: t.Capacity}
			}
			table.Entries = min(table.Entries, t.Entries)
			table.Hits += t.Hits
			table.Misses += t.Misses
		}
	}
	var notes []string
	if sent > 0 && float64(delivered) < 0.99*float64(sent) {
		notes = append(notes, fmt.Sprintf("%.1f%% of the frames sent were delivered", 100*float64(delivered)/float64(sent)))
	}
	if table != nil {
		notes = append(notes, table.String())
	}
	if singleDestination(config) {
		return strings.Join(notes, "; "), nil, table
	}
	sp := &Spread{Backends: backends}
	var total uint64
	lo, hi := ^uint64(0), uint64(0)
	for _, n := range per {
		if n > 0 {
			sp.Received++
		}
		total += n
		lo, hi = min(lo, n), max(hi, n)
	}
	if total > 0 {
		mean := float64(total) / float64(backends)
		sp.MinPct, sp.MaxPct = 100*float64(lo)/mean, 100*float64(hi)/mean
	}
	if sp.Received < backends {
		notes = append(notes, fmt.Sprintf("only %d of %d backends received frames", sp.Received, backends))
	}
	if total < delivered*99/100 {
		notes = append(notes, fmt.Sprintf("%d frames reached no backend", delivered-total))
	}
	return strings.Join(notes, "; "), sp, table
}

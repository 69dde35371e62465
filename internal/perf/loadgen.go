package perf

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/testenv"
)

// LoadGen keeps CPUs busy pushing frames into a topology, for tests that
// need a data path under full load (the VRRP failover test): it is the
// packet-rate rig's live-frame generator (gen_frames in bpf/perf.c) without
// the rig. Every frame is one template with the source port varied over a
// set of flows, transmitted out of an interface with XDP_TX in
// BPF_PROG_RUN's live-frame mode; everything it causes downstream (the
// peer's NAPI, a bridge, an XDP program behind it) runs in softirq on the
// generating CPU.
type LoadGen struct {
	objs    perfObjects
	sinks   []link.Link
	sent    atomic.Uint64
	longest atomic.Int64 // nanoseconds
}

// LoadFrameLen is the length of every generated frame; a template must not
// be longer (it is padded with zeros to it).
const LoadFrameLen = genFrameLen

// NewLoadGen loads the generator with a template frame (Ethernet + IPv4
// without options + UDP or TCP, checksums correct) whose source port is
// replaced by sportBase + cpu*flows + (i mod flows) in frame i; flows must
// be a power of two.
func NewLoadGen(frame []byte, sportBase, flows uint16) (*LoadGen, error) {
	if len(frame) > genFrameLen {
		return nil, fmt.Errorf("loadgen: template of %d bytes, at most %d", len(frame), genFrameLen)
	}
	if flows == 0 || flows&(flows-1) != 0 {
		return nil, fmt.Errorf("loadgen: %d flows, want a power of two", flows)
	}
	g := &LoadGen{}
	if err := loadPerfObjects(&g.objs, nil); err != nil {
		return nil, fmt.Errorf("loadgen: load programs: %w", err)
	}
	var plan perfGenPlan
	copy(plan.Frame[:], frame)
	plan.SportBase, plan.Flows = sportBase, flows
	if err := g.objs.GenConfig.Put(uint32(0), plan); err != nil {
		g.objs.Close()
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	return g, nil
}

// Close detaches the sinks and releases the programs and maps.
func (g *LoadGen) Close() error {
	var errs []error
	for _, l := range g.sinks {
		errs = append(errs, l.Close())
	}
	return errors.Join(append(errs, g.objs.Close())...)
}

// Sink attaches the rig's sink (an XDP program that counts IPv4 frames and
// drops them; ARP and IPv6 go on to the stack) to iface in host's
// namespace until Close. On a test bed where the backends share the CPUs
// with the balancer, it stands in for backends on machines of their own:
// without it each load frame would also cost a trip up a backend's stack.
func (g *LoadGen) Sink(host *testenv.Host, iface string) error {
	return host.Do(func() error {
		l, err := host.Link(iface)
		if err != nil {
			return err
		}
		x, err := link.AttachXDP(link.XDPOptions{Program: g.objs.SinkCount, Interface: l.Attrs().Index})
		if err != nil {
			return fmt.Errorf("loadgen: attach the sink to %s in %s: %w", iface, host.Role(), err)
		}
		g.sinks = append(g.sinks, x)
		return nil
	})
}

// Sunk is the number of frames the sinks have counted and dropped.
func (g *LoadGen) Sunk() (uint64, error) {
	counts, err := readSinkCounts(&g.objs)
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range counts {
		n += v
	}
	return n, nil
}

// Sent is the number of frames generated so far.
func (g *LoadGen) Sent() uint64 { return g.sent.Load() }

// Longest is the longest BPF_PROG_RUN call so far: how long Run may
// overrun its context.
func (g *LoadGen) Longest() time.Duration { return time.Duration(g.longest.Load()) }

// Run generates from iface in host's namespace on each of cpus (one thread
// pinned to each) until ctx is done, and returns the first error.
//
// Each BPF_PROG_RUN call costs a fixed 20-30 ms of switching the XDP
// dispatcher (see packetRig.run), during which the CPU is not loaded, so
// calls are sized to last about chunk each; Run returns up to chunk after
// ctx is done.
func (g *LoadGen) Run(ctx context.Context, host *testenv.Host, iface string, cpus []int, chunk time.Duration) error {
	var plan perfGenPlan
	if err := g.objs.GenConfig.Lookup(uint32(0), &plan); err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	frame := plan.Frame
	var (
		wg   sync.WaitGroup
		errs = make([]error, len(cpus))
	)
	for i, cpu := range cpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = host.Do(func() error {
				l, err := host.Link(iface)
				if err != nil {
					return err
				}
				// The ifindex is resolved in the calling thread's
				// namespace: this one.
				ifindex := l.Attrs().Index
				// Do's goroutine is locked to its thread, as
				// pinThread needs.
				restore, err := pinThread(cpu)
				if err != nil {
					return err
				}
				defer restore()
				n := uint32(1 << 14) // a first short call measures the rate
				for ctx.Err() == nil {
					t0 := time.Now()
					if err := liveFrames(g.objs.GenFrames, frame[:], n, ifindex); err != nil {
						if errors.Is(err, unix.EINTR) {
							continue
						}
						return fmt.Errorf("loadgen: live-frame BPF_PROG_RUN on cpu %d: %w", cpu, err)
					}
					g.sent.Add(uint64(n))
					took := time.Since(t0)
					if ns := int64(took); ns > g.longest.Load() {
						g.longest.Store(ns)
					}
					// Grow slowly: a short call overestimates the
					// rate a long one sustains.
					rate := float64(n) / took.Seconds()
					n = uint32(min(max(rate*chunk.Seconds(), 1<<12), 1.25*float64(n), 1<<30))
				}
				return nil
			})
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

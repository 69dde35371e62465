package perf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

// ScaleOptions shape the scale measurement.
type ScaleOptions struct {
	Runs int
	// VIPs × Backends are loaded with rings of RingSize slots.
	VIPs, Backends int
	RingSize       uint32
	// Flows connection entries are inserted by running packets.
	Flows int
	// Repeat is the BPF_PROG_RUN repeat count of one per-packet run.
	Repeat int
}

// The scale VIPs: VIP v is 203.0.113.(1 + v mod 250), TCP port
// 2000 + v / 250; ct_walk derives the same from walk_plan.
const (
	scaleVIPAddrs = 250
	scalePortBase = 2000
)

var (
	scaleVIPBase = netip.MustParseAddr("203.0.113.1")
	// scaleSrcBase is the first client address of ct_walk's flows.
	scaleSrcBase = netip.MustParseAddr("198.18.64.0")
)

func scaleVIP(v int) datapath.VIP {
	a := scaleVIPBase.As4()
	a[3] += byte(v % scaleVIPAddrs)
	return datapath.VIP{Addr: netip.AddrFrom4(a), Port: uint16(scalePortBase + v/scaleVIPAddrs), Proto: datapath.TCP}
}

func scaleBackends(n int) []datapath.Backend {
	bs := make([]datapath.Backend, n)
	for j := range bs {
		bs[j] = datapath.Backend{
			Addr:   netip.AddrFrom4([4]byte{198, 18, 8, byte(1 + j)}),
			MAC:    net.HardwareAddr{0x02, 0xfc, 0x08, 0, 0, byte(1 + j)},
			Weight: 1,
		}
	}
	return bs
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// scaleRig is a datapath with n VIPs and the rig's ct_walk in front of it.
type scaleRig struct {
	d    *datapath.Datapath
	objs *perfObjects
	vips int
}

func newScaleRig(objs *perfObjects, opts ScaleOptions, vips int) (*scaleRig, time.Duration, error) {
	start := time.Now()
	// The connection table is sized at four times the flows, as
	// docs/datapath.md advises: flows land in its 4-way buckets at random,
	// and a table no bigger than the flows would evict a fifth of them.
	d, err := datapath.Load(datapath.Options{ConntrackEntries: uint32(scaleTableFactor * opts.Flows)})
	if err != nil {
		return nil, 0, err
	}
	bs := scaleBackends(opts.Backends)
	// One batch, as the daemon's reconciler writes a new configuration:
	// the rings are swapped in with one map update.
	changes := make([]datapath.VIPChange, vips)
	for v := range changes {
		changes[v] = datapath.VIPChange{VIP: scaleVIP(v), Config: datapath.VIPConfig{Mode: datapath.ModeDSR, RingSize: opts.RingSize}, Backends: bs}
	}
	for v, err := range d.SetVIPs(changes) {
		if err != nil {
			d.Close()
			return nil, 0, fmt.Errorf("add vip %d: %w", v, err)
		}
	}
	loaded := time.Since(start)
	r := &scaleRig{d: d, objs: objs, vips: vips}
	if err := objs.WalkTarget.Put(uint32(0), d.Program()); err != nil {
		r.Close()
		return nil, 0, fmt.Errorf("walk target: %w", err)
	}
	return r, loaded, nil
}

// Close releases the datapath; the walk target is cleared first, since it
// would keep the balancer, and with it every map, alive.
func (r *scaleRig) Close() error {
	err := r.objs.WalkTarget.Delete(uint32(0))
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		err = nil
	}
	return errors.Join(err, r.d.Close())
}

// walkFrame is the frame ct_walk rewrites: a bare TCP ACK.
func walkFrame(dst datapath.VIP) []byte {
	return testpacket.Packet{
		SrcMAC: net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 1}, DstMAC: net.HardwareAddr{0x02, 0, 0, 0, 0xbb, 1},
		Src: rigClient, Dst: dst.Addr, Proto: layers.IPProtocolTCP,
		Sport: 40000, Dport: dst.Port, ACK: true,
	}.Build()
}

// plan points ct_walk at flowsPerCPU flows per CPU over the rig's VIPs and
// restarts every CPU's walk.
func (r *scaleRig) plan(flowsPerCPU int) error {
	p := perfWalkPlan{
		SrcBase:   addr4(scaleSrcBase),
		VipBase:   addr4(scaleVIPBase),
		Flows:     uint32(flowsPerCPU),
		Vips:      uint32(r.vips),
		VipAddrs:  scaleVIPAddrs,
		DportBase: scalePortBase,
	}
	if err := r.objs.WalkConfig.Put(uint32(0), p); err != nil {
		return err
	}
	zeros := make([]uint64, ebpfPossibleCPUs())
	return r.objs.WalkSeq.Put(uint32(0), zeros)
}

func ebpfPossibleCPUs() int {
	n, err := ebpf.PossibleCPU()
	if err != nil {
		return runtime.NumCPU()
	}
	return n
}

// fill inserts flowsPerCPU connection entries from each CPU by running
// ct_walk, and returns how long it took.
func (r *scaleRig) fill(flowsPerCPU, cpus int) (time.Duration, error) {
	if err := r.plan(flowsPerCPU); err != nil {
		return 0, err
	}
	frame := walkFrame(scaleVIP(0))
	var total time.Duration
	for cpu := range cpus {
		before, err := r.d.Counters()
		if err != nil {
			return 0, err
		}
		var elapsed time.Duration
		if err := onCPU(cpu, func() error {
			start := time.Now()
			_, err := r.objs.CtWalk.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(flowsPerCPU)})
			elapsed = time.Since(start)
			return err
		}); err != nil {
			return 0, err
		}
		total += elapsed
		after, err := r.d.Counters()
		if err != nil {
			return 0, err
		}
		if miss := after.Stat(datapath.StatCtMiss) - before.Stat(datapath.StatCtMiss); miss < uint64(flowsPerCPU) {
			return 0, fmt.Errorf("cpu %d: %d of %d flows were new (ct_miss); counters moved: %v", cpu, miss, flowsPerCPU, statsMoved(before, after))
		}
	}
	return total, nil
}

// onCPU runs fn on a thread pinned to cpu.
func onCPU(cpu int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restore, err := pinThread(cpu)
		if err != nil {
			// The thread's affinity may be half changed: let it die.
			errc <- err
			return
		}
		err = fn()
		restore()
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// countEntries counts the entries of the connection tables (ctOccupancy).
func (r *scaleRig) countEntries() (int, error) { return ctOccupancy(r.d) }

// scaleTableFactor is the connection table's size over the flows.
const scaleTableFactor = 4

// walkMissShare bounds the share of a walk's packets that may miss: the
// flows of a bucket that drew more than its 4 ways (at a load of one flow
// per bucket, P[Poisson(1) >= 4] = 1.9 % of them) evict each other in turn.
const walkMissShare = 0.03

// nsPerPacket runs prog on frame repeat times and returns ns per packet,
// after checking with the balancer's counters that every repeat was
// forwarded in dsr mode and a connection-table hit, but for a share of at
// most missShare.
func (r *scaleRig) nsPerPacket(prog *ebpf.Program, frame []byte, repeat int, missShare float64) (float64, error) {
	before, err := r.d.Counters()
	if err != nil {
		return 0, err
	}
	var elapsed time.Duration
	if err := onCPU(0, func() error {
		start := time.Now()
		_, err := prog.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(repeat)})
		elapsed = time.Since(start)
		return err
	}); err != nil {
		return 0, err
	}
	after, err := r.d.Counters()
	if err != nil {
		return 0, err
	}
	var verdicts uint64
	for _, s := range datapath.AllStats() {
		if s.IsVerdict() {
			verdicts += after.Stat(s) - before.Stat(s)
		}
	}
	hits := after.Stat(datapath.StatCtHit) - before.Stat(datapath.StatCtHit)
	tx := after.Stat(datapath.StatTxDSR) - before.Stat(datapath.StatTxDSR)
	if verdicts < uint64(repeat) || float64(verdicts-min(hits, verdicts)) > missShare*float64(verdicts) || tx != verdicts {
		return 0, fmt.Errorf("%d repeats: %d verdicts, %d ct_hit, %d tx_dsr: not every repeat took the established path, but for %.0f %% of them (moved: %v)",
			repeat, verdicts, hits, tx, 100*missShare, statsMoved(before, after))
	}
	return float64(elapsed.Nanoseconds()) / float64(verdicts), nil
}

// established measures one established flow to VIP v, repeated.
func (r *scaleRig) established(v, repeat int) (float64, error) {
	frame := walkFrame(scaleVIP(v))
	// One packet creates the entry the runs then hit.
	if _, err := r.d.Program().Run(&ebpf.RunOptions{Data: frame}); err != nil {
		return 0, err
	}
	return r.nsPerPacket(r.d.Program(), frame, repeat, 0)
}

// walk measures established flows taken in turn from this CPU's share of
// the table, through ct_walk.
func (r *scaleRig) walk(repeat int) (float64, error) {
	return r.nsPerPacket(r.objs.CtWalk, walkFrame(scaleVIP(0)), repeat, walkMissShare)
}

func statsMoved(before, after datapath.Counters) map[string]uint64 {
	out := make(map[string]uint64)
	for _, s := range datapath.AllStats() {
		if d := after.Stat(s) - before.Stat(s); d != 0 {
			out[s.String()] = d
		}
	}
	return out
}

// measureScale loads a datapath with 1 VIP and one with opts.VIPs, each
// with opts.Flows connection entries, and compares the per-packet cost of
// the established path; it reports the large one's memory and load times.
func measureScale(ctx context.Context, opts ScaleOptions, res *Results) error {
	var objs perfObjects
	if err := loadPerfObjects(&objs, nil); err != nil {
		return err
	}
	defer objs.Close()
	cpus := min(runtime.NumCPU(), ebpfPossibleCPUs())
	flowsPerCPU := opts.Flows / cpus

	// Per-packet figures: name -> runs, in order, and each large figure's
	// 1-VIP reference.
	runs := make(map[string][]float64)
	var order []string
	ref := make(map[string]string)
	record := func(name, refName string, v float64) {
		if _, ok := runs[name]; !ok {
			order = append(order, name)
			if refName != name {
				ref[name] = refName
			}
		}
		runs[name] = append(runs[name], v)
	}
	name := func(vips, vip int, kind string) string {
		if vips == 1 {
			return fmt.Sprintf("established, 1 VIP, %s", kind)
		}
		if vip < 0 {
			return fmt.Sprintf("established, %d VIPs, %s", vips, kind)
		}
		return fmt.Sprintf("established, %d VIPs (VIP #%d), %s", vips, vip+1, kind)
	}

	for _, vips := range []int{1, opts.VIPs} {
		if err := ctx.Err(); err != nil {
			return err
		}
		runtime.GC()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		r, loaded, err := newScaleRig(&objs, opts, vips)
		if err != nil {
			return fmt.Errorf("%d VIPs: %w", vips, err)
		}
		err = func() error {
			defer r.Close()
			label := fmt.Sprintf("%d VIPs × %d backends", vips, opts.Backends)
			if vips > 1 {
				runtime.GC()
				var m1 runtime.MemStats
				runtime.ReadMemStats(&m1)
				f := newFigure(SectionScale, "load "+label, "s", []float64{loaded.Seconds()})
				f.Note = fmt.Sprintf("datapath.SetVIPs in-process (one batch), rings of M=%d (not the default 65537, to keep the run short); Go heap held: %.1f MiB",
					opts.RingSize, mib(m1.HeapAlloc-min(m0.HeapAlloc, m1.HeapAlloc)))
				res.add(f)
			}
			targets := []int{0}
			if vips > 1 {
				targets = append(targets, vips-1)
			}
			kindEmpty := "1 flow, empty table"
			for range opts.Runs {
				for _, v := range targets {
					ns, err := r.established(v, opts.Repeat)
					if err != nil {
						return err
					}
					record(name(vips, v, kindEmpty), name(1, 0, kindEmpty), ns)
				}
			}
			took, err := r.fill(flowsPerCPU, cpus)
			if err != nil {
				return err
			}
			n, err := r.countEntries()
			if err != nil {
				return err
			}
			if vips > 1 {
				f := newFigure(SectionScale, fmt.Sprintf("insert %d connection entries by running packets", flowsPerCPU*cpus), "s", []float64{took.Seconds()})
				f.Note = fmt.Sprintf("ct_walk + balancer under BPF_PROG_RUN, %d new flows per CPU, %.0f ns each; %d entries in the connection table afterwards",
					flowsPerCPU, float64(took.Nanoseconds())/float64(flowsPerCPU*cpus), n)
				res.add(f)
				mm, err := measureMapMemory(r.d.Program())
				if err != nil {
					return err
				}
				f = newFigure(SectionScale, fmt.Sprintf("BPF map memory, %s, %d connection entries", label, n), "MiB", []float64{mib(mm.Total)})
				f.Note = fmt.Sprintf("%d rings; %s", mm.Inner, mm.summary(5))
				res.add(f)
			}
			kindFull := fmt.Sprintf("1 flow, %d entries", opts.Flows)
			kindWalk := fmt.Sprintf("%d flows in turn (ct_walk), %d entries (table of %d, up to %.0f %% misses)", flowsPerCPU, opts.Flows, scaleTableFactor*opts.Flows, 100*walkMissShare)
			for range opts.Runs {
				for _, v := range targets {
					ns, err := r.established(v, opts.Repeat)
					if err != nil {
						return err
					}
					record(name(vips, v, kindFull), name(1, 0, kindFull), ns)
				}
				ns, err := r.walk(opts.Repeat)
				if err != nil {
					return err
				}
				record(name(vips, -1, kindWalk), name(1, 0, kindWalk), ns)
			}
			return nil
		}()
		if err != nil {
			return fmt.Errorf("%d VIPs: %w", vips, err)
		}
	}
	for _, n := range order {
		f := newFigure(SectionScale, n, "ns/pkt", runs[n])
		if rn, ok := ref[n]; ok {
			if rf := res.find(SectionScale, rn); rf != nil && rf.Median > 0 {
				f.Ratio, f.RatioTo = f.Median/rf.Median, "1 VIP"
			}
		}
		res.add(f)
	}
	return nil
}

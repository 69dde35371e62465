package perf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// The packet-rate configurations, in the order they run.
const (
	ConfigCeiling   = "ceiling"
	ConfigCeilingTX = "ceiling-tx"
	ConfigDSR       = "dsr"
	// ConfigDSRNoCT is dsr with the VIPs' connection table bypassed
	// (no_conntrack): the ring on every packet. Beside dsr it shows what
	// the connection table costs per packet; it is a diagnostic row, not
	// one of the configurations.
	ConfigDSRNoCT  = "dsr-no-ct"
	ConfigIPIP     = "ipip"
	ConfigNftables = "nftables"
)

// PacketConfigs lists the packet-rate configurations; the ceiling first,
// since every other figure is a ratio to it.
var PacketConfigs = []string{ConfigCeiling, ConfigCeilingTX, ConfigDSR, ConfigDSRNoCT, ConfigIPIP, ConfigNftables}

// E2EConfigs are the configurations of the `e2e CONFIG mpps=N
// x_ceiling=R` lines. ceiling-tx is a reference for the one-armed
// configurations, not one of them.
var E2EConfigs = []string{ConfigCeiling, ConfigDSR, ConfigIPIP, ConfigNftables}

// Frame kinds the generator sends.
const (
	FrameUDP = "udp"
	FrameTCP = "tcp-ack"
)

// The packet-rate rig's addressing (see docs/performance.md):
//
//	gen  gen0 ═══ in0  lb  out0 ═══ sink0  sink
//	           198.18.3.0/24    198.18.2.0/24
//
// Clients (the generator's frames) come from 198.19.1.2 to the VIP
// 203.0.113.10 port 80. Each configuration leaves the LB by its natural
// egress:
//   - ceiling: devmap redirect out of out0 to the sink;
//   - ceiling-tx: the same MAC rewrite, then XDP_TX back out of in0: the
//     ceiling of the one-armed configurations below;
//   - dsr: XDP_TX back out of in0 (one L2 segment), to backends
//     198.18.0.(10+i) with MAC 02:fc:02:00:00:(10+i);
//   - dsr-no-ct: the same with the connection table bypassed;
//   - ipip: XDP_TX back out of in0, where the FIB sends the backends
//     198.18.4.(10+i): via the router 198.18.3.2 (gen0, a permanent
//     neighbour). The balancer's FIB lookup is an output lookup bound to
//     the ingress interface, so Fulcrum's ipip is one-armed;
//   - nftables: the kernel forwards out of out0 to backends
//     198.18.2.(10+i), permanent neighbours with MAC 02:fc:03:00:00:(10+i).
//
// The sink counts on both sink0 and gen0.
var (
	rigClient      = netip.MustParseAddr("198.19.1.2")
	rigVIP         = netip.MustParseAddr("203.0.113.10")
	rigInNet       = netip.MustParsePrefix("198.18.3.1/24")
	rigRouter      = netip.MustParseAddr("198.18.3.2")
	rigOutNet      = netip.MustParsePrefix("198.18.2.1/24")
	rigRemoteNet   = netip.MustParsePrefix("198.18.4.0/24")
	rigEncapSource = netip.MustParsePrefix("198.18.1.0/24")
)

const (
	rigVIPPort = 80
	// rigSportBase is the first source port of the generator's flows.
	rigSportBase = 1024
	// rigFlows is the number of flows per CPU (a power of two, >= 10000).
	rigFlows = 16384
	// calibrationFrames is the size of the call that first estimates a
	// configuration's rate.
	calibrationFrames = 1 << 16
)

// dsrBackend is backend i (from 1) of the dsr VIP.
func dsrBackend(i int) datapath.Backend {
	return datapath.Backend{
		Addr:   netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}),
		MAC:    net.HardwareAddr{0x02, 0xfc, 0x02, 0, 0, byte(10 + i)},
		Weight: 1,
	}
}

// remoteBackend is backend i (from 1) of the ipip VIP: an address behind
// the router on in0's segment.
func remoteBackend(i int) datapath.Backend {
	return datapath.Backend{Addr: netip.AddrFrom4([4]byte{198, 18, 4, byte(10 + i)}), Weight: 1}
}

// routedBackend is backend i (from 1) of the nftables balancer: a
// neighbour on out0.
func routedBackend(i int) datapath.Backend {
	return datapath.Backend{
		Addr:   netip.AddrFrom4([4]byte{198, 18, 2, byte(10 + i)}),
		MAC:    net.HardwareAddr{0x02, 0xfc, 0x03, 0, 0, byte(10 + i)},
		Weight: 1,
	}
}

// packetRig is the generator ─ LB ─ sink topology with every
// configuration loaded; selectConfig attaches one of them to the LB's ingress.
type packetRig struct {
	gen, lb, sink *testenv.Host
	genIfindex    int // gen0, in namespace gen
	inIfindex     int // in0, in namespace lb
	outIfindex    int // out0, in namespace lb
	genMAC, inMAC net.HardwareAddr
	outMAC        net.HardwareAddr

	objs               perfObjects
	sinkLinks          []link.Link
	dsr, dsrNoCT, ipip *datapath.Datapath
	pass               *ebpf.Program

	// detach undoes the current selection.
	detach  func() error
	current string
	// rates holds the last rate seen per configuration, frame kind and
	// CPU count, in frames per second per CPU: it sizes the next run.
	rates map[string]float64
}

// newPacketRig builds the topology in env with veths of the given number
// of queues and loads every configuration. The caller closes the rig
// (which leaves the namespaces to env).
func newPacketRig(ctx context.Context, env *testenv.Env, queues, backends int) (_ *packetRig, err error) {
	r := &packetRig{rates: make(map[string]float64)}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if r.gen, err = env.NewNamespace("gen"); err != nil {
		return nil, err
	}
	if r.lb, err = env.NewNamespace("lb"); err != nil {
		return nil, err
	}
	if r.sink, err = env.NewNamespace("sink"); err != nil {
		return nil, err
	}
	// No IPv6: nothing but the generator's frames crosses the rig.
	for _, h := range []*testenv.Host{r.gen, r.lb, r.sink} {
		if err := h.Sysctls(map[string]string{
			"net.ipv6.conf.all.disable_ipv6":     "1",
			"net.ipv6.conf.default.disable_ipv6": "1",
		}); err != nil {
			return nil, err
		}
	}
	if err := testenv.VethPair(r.gen, r.lb, "gen0", "in0", testenv.WithQueues(queues)); err != nil {
		return nil, err
	}
	if err := testenv.VethPair(r.lb, r.sink, "out0", "sink0", testenv.WithQueues(queues)); err != nil {
		return nil, err
	}
	steps := []func() error{
		// nftables forwards in the kernel; ipip's bpf_fib_lookup answers
		// only with forwarding on.
		func() error {
			return r.lb.Sysctls(map[string]string{"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.forwarding": "1"})
		},
		func() error { return r.lb.AddAddr("in0", rigInNet) },
		func() error { return r.lb.AddAddr("out0", rigOutNet) },
	}
	for i := 1; i <= backends; i++ {
		b := routedBackend(i)
		steps = append(steps, func() error { return r.lb.AddNeighbor("out0", b.Addr, b.MAC) })
	}
	// XPS: CPU i transmits on out0's queue i, so the kernel's forwarding
	// path (nftables) keeps each CPU's packets on that CPU's sink queue.
	for q := 0; q < queues; q++ {
		steps = append(steps, func() error {
			_, err := r.lb.Run(ctx, "sh", "-c", fmt.Sprintf("echo %x > /sys/class/net/out0/queues/tx-%d/xps_cpus", 1<<q, q))
			return err
		})
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	var l netLinkInfo
	if l, err = linkInfo(r.gen, "gen0"); err != nil {
		return nil, err
	}
	r.genIfindex, r.genMAC = l.index, l.mac
	if l, err = linkInfo(r.lb, "in0"); err != nil {
		return nil, err
	}
	r.inIfindex, r.inMAC = l.index, l.mac
	if l, err = linkInfo(r.lb, "out0"); err != nil {
		return nil, err
	}
	r.outIfindex, r.outMAC = l.index, l.mac
	if err := r.lb.AddNeighbor("in0", rigRouter, r.genMAC); err != nil {
		return nil, err
	}
	if err := r.lb.AddRoute(rigRemoteNet, rigRouter); err != nil {
		return nil, err
	}
	var sinkIfindex int
	if l, err = linkInfo(r.sink, "sink0"); err != nil {
		return nil, err
	}
	sinkIfindex = l.index

	if err := loadPerfObjects(&r.objs, nil); err != nil {
		return nil, fmt.Errorf("load rig programs: %w", err)
	}
	// The sink counts on sink0 (what leaves out0) and on gen0 (what dsr
	// sends back out of in0).
	for _, at := range []struct {
		h       *testenv.Host
		ifindex int
	}{{r.sink, sinkIfindex}, {r.gen, r.genIfindex}} {
		if err := at.h.Do(func() error {
			l, err := link.AttachXDP(link.XDPOptions{Program: r.objs.SinkCount, Interface: at.ifindex})
			if err != nil {
				return fmt.Errorf("attach sink in %s: %w", at.h.Role(), err)
			}
			r.sinkLinks = append(r.sinkLinks, l)
			return nil
		}); err != nil {
			return nil, err
		}
	}

	// ceiling (and ceiling-tx): to backend 1's MAC, out of out0 (or back
	// out of in0; the source MAC matters to nobody).
	if err := r.objs.CeilingConfig.Put(uint32(0), perfCeilingMacs{Dst: [6]byte(routedBackend(1).MAC), Src: [6]byte(r.outMAC)}); err != nil {
		return nil, err
	}
	if err := r.lb.Do(func() error { return r.objs.CeilingPort.Put(uint32(0), uint32(r.outIfindex)) }); err != nil {
		return nil, fmt.Errorf("devmap: %w", err)
	}

	// Fulcrum: one datapath per mode, each with a UDP and a TCP VIP.
	var dsrs, remote, routed []datapath.Backend
	for i := 1; i <= backends; i++ {
		dsrs = append(dsrs, dsrBackend(i))
		remote = append(remote, remoteBackend(i))
		routed = append(routed, routedBackend(i))
	}
	if r.dsr, err = loadRigDatapath(datapath.VIPConfig{Mode: datapath.ModeDSR}, dsrs, datapath.EncapConfig{}); err != nil {
		return nil, err
	}
	if r.dsrNoCT, err = loadRigDatapath(datapath.VIPConfig{Mode: datapath.ModeDSR, NoConntrack: true}, dsrs, datapath.EncapConfig{}); err != nil {
		return nil, err
	}
	if r.ipip, err = loadRigDatapath(datapath.VIPConfig{Mode: datapath.ModeIPIP}, remote, datapath.EncapConfig{SourceV4: rigEncapSource}); err != nil {
		return nil, err
	}

	// nftables: DNAT with numgen over the routed backends, as
	// kube-proxy's nftables mode does.
	if r.pass, err = env.PassProgram(); err != nil {
		return nil, err
	}
	nftFile, err := writeNftRules(routed)
	if err != nil {
		return nil, err
	}
	defer os.Remove(nftFile)
	if _, err := r.lb.Run(ctx, "nft", "-f", nftFile); err != nil {
		return nil, err
	}
	return r, nil
}

// loadRigDatapath loads a balancer with a UDP and a TCP VIP on port 80 of
// rigVIP, configured by cfg, over backends.
func loadRigDatapath(cfg datapath.VIPConfig, backends []datapath.Backend, encap datapath.EncapConfig) (*datapath.Datapath, error) {
	d, err := datapath.Load(datapath.Options{ConntrackEntries: 1 << 18})
	if err != nil {
		return nil, fmt.Errorf("load balancer (%s): %w", cfg.Mode, err)
	}
	if encap.SourceV4.IsValid() {
		if err := d.SetEncap(encap); err != nil {
			d.Close()
			return nil, err
		}
	}
	for _, p := range []datapath.Proto{datapath.UDP, datapath.TCP} {
		vip := datapath.VIP{Addr: rigVIP, Port: rigVIPPort, Proto: p}
		if err := d.AddVIP(vip, cfg, backends); err != nil {
			d.Close()
			return nil, fmt.Errorf("add %s vip %s: %w", cfg.Mode, vip, err)
		}
	}
	return d, nil
}

// writeNftRules writes the nftables balancer to a temporary file.
func writeNftRules(backends []datapath.Backend) (string, error) {
	var m []string
	for i, b := range backends {
		m = append(m, fmt.Sprintf("%d : %s", i, b.Addr))
	}
	rules := fmt.Sprintf(`table ip fcbench {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s meta l4proto { tcp, udp } th dport %d dnat to numgen random mod %d map { %s }
	}
}
`, rigVIP, rigVIPPort, len(backends), strings.Join(m, ", "))
	f, err := os.CreateTemp("", "fcbench-*.nft")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.WriteString(rules); err != nil {
		return "", err
	}
	return f.Name(), nil
}

type netLinkInfo struct {
	index int
	mac   net.HardwareAddr
}

func linkInfo(h *testenv.Host, iface string) (netLinkInfo, error) {
	l, err := h.Link(iface)
	if err != nil {
		return netLinkInfo{}, err
	}
	return netLinkInfo{index: l.Attrs().Index, mac: l.Attrs().HardwareAddr}, nil
}

// Close releases what the rig loaded. The namespaces belong to the Env.
func (r *packetRig) Close() error {
	var errs []error
	if r.detach != nil {
		errs = append(errs, r.detach())
		r.detach = nil
	}
	for _, l := range r.sinkLinks {
		errs = append(errs, l.Close())
	}
	r.sinkLinks = nil
	for _, d := range []*datapath.Datapath{r.dsr, r.dsrNoCT, r.ipip} {
		if d != nil {
			errs = append(errs, d.Close())
		}
	}
	r.dsr, r.dsrNoCT, r.ipip = nil, nil, nil
	errs = append(errs, r.objs.Close())
	return errors.Join(errs...)
}

// sinkModes says how the sink tells each configuration's backends apart:
// by destination MAC for an L2 rewrite, by destination address where the
// packet was encapsulated or rewritten.
var sinkModes = map[string]perfSinkKey{
	ConfigCeiling:   perfSinkKeySINK_BY_MAC,
	ConfigCeilingTX: perfSinkKeySINK_BY_MAC,
	ConfigDSR:       perfSinkKeySINK_BY_MAC,
	ConfigDSRNoCT:   perfSinkKeySINK_BY_MAC,
	ConfigIPIP:      perfSinkKeySINK_BY_IP,
	ConfigNftables:  perfSinkKeySINK_BY_IP,
}

// selectConfig attaches configuration name to the LB's ingress in0,
// replacing the current one.
func (r *packetRig) selectConfig(name string) error {
	if r.current == name {
		return nil
	}
	if r.detach != nil {
		if err := r.detach(); err != nil {
			return fmt.Errorf("detach %s: %w", r.current, err)
		}
		r.detach, r.current = nil, ""
	}
	mode, ok := sinkModes[name]
	if !ok {
		return fmt.Errorf("unknown configuration %q", name)
	}
	if err := r.objs.SinkMode.Put(uint32(0), uint32(mode)); err != nil {
		return err
	}
	attachProg := func(p *ebpf.Program) error {
		return r.lb.Do(func() error {
			l, err := link.AttachXDP(link.XDPOptions{Program: p, Interface: r.inIfindex})
			if err != nil {
				return err
			}
			r.detach = l.Close
			return nil
		})
	}
	attachFulcrum := func(d *datapath.Datapath) error {
		return r.lb.Do(func() error {
			if err := d.Attach(r.inIfindex, datapath.AttachNative); err != nil {
				return err
			}
			r.detach = d.Detach
			return nil
		})
	}
	var err error
	switch name {
	case ConfigCeiling:
		err = attachProg(r.objs.CeilingFwd)
	case ConfigCeilingTX:
		err = attachProg(r.objs.CeilingTx)
	case ConfigDSR:
		err = attachFulcrum(r.dsr)
	case ConfigDSRNoCT:
		err = attachFulcrum(r.dsrNoCT)
	case ConfigIPIP:
		err = attachFulcrum(r.ipip)
	case ConfigNftables:
		// The kernel forwards; in0 needs an XDP program only so that the
		// generator's XDP frames are accepted.
		err = attachProg(r.pass)
	}
	if err != nil {
		return fmt.Errorf("attach %s to in0: %w", name, err)
	}
	r.current = name
	return nil
}

// frame returns the generator's template for a frame kind: 64 bytes from
// the client to the VIP, addressed to in0.
func (r *packetRig) frame(kind string) []byte {
	p := testpacket.Packet{
		SrcMAC: r.genMAC, DstMAC: r.inMAC,
		Src: rigClient, Dst: rigVIP,
		Sport: rigSportBase, Dport: rigVIPPort,
	}
	switch kind {
	case FrameUDP:
		p.Proto = layers.IPProtocolUDP
		p.Payload = make([]byte, genFrameLen-14-20-8)
	default:
		p.Proto = layers.IPProtocolTCP
		p.ACK = true
	}
	f := p.Build()
	// A bare ACK is 54 bytes: pad it to a minimum Ethernet frame.
	for len(f) < genFrameLen {
		f = append(f, 0)
	}
	return f
}

// genFrameLen is GEN_FRAME_LEN of bpf/perf.c, the size of perfGenPlan.Frame.
const genFrameLen = len(perfGenPlan{}.Frame)

// rigRun is what one run of the generator delivered.
type rigRun struct {
	sent, delivered uint64
	wall            time.Duration
	// perKey is the sink's count per key byte (backend MAC or address).
	perKey [256]uint64
}

func (r rigRun) mpps() float64 {
	return float64(r.delivered) / r.wall.Seconds() / 1e6
}

// backendCounts returns what each backend (1..n) received: keys 10+i.
func (r rigRun) backendCounts(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = r.perKey[11+i]
	}
	return out
}

// run generates frames of kind on each of cpus for about d and returns
// what reached the sink.
//
// Each CPU makes one live-frame BPF_PROG_RUN call per run, sized from the
// rate last seen: a call costs a fixed 20-30 ms on top of its frames (the
// kernel points the XDP dispatcher at the program and back, each switch
// waiting for an RCU grace period), which many short calls would add to
// the figure as idle time.
func (r *packetRig) run(kind string, cpus []int, d time.Duration) (rigRun, error) {
	key := fmt.Sprintf("%s/%s/%d", r.current, kind, len(cpus))
	rate, ok := r.rates[key]
	if !ok {
		cal, err := r.generate(kind, cpus, calibrationFrames)
		if err != nil {
			return rigRun{}, err
		}
		rate = float64(cal.sent) / cal.wall.Seconds() / float64(len(cpus))
	}
	n := uint32(min(max(rate*d.Seconds(), 1<<12), 1<<30))
	out, err := r.generate(kind, cpus, n)
	if err != nil {
		return rigRun{}, err
	}
	r.rates[key] = float64(out.sent) / out.wall.Seconds() / float64(len(cpus))
	return out, nil
}

// liveFrames has the generator make n frames from the template frame on
// the calling thread's CPU, in live-frame mode (BPF_F_TEST_XDP_LIVE_FRAMES),
// as if received on ifindex. The context's data_end must be the frame's
// length, or the kernel refuses the run.
func liveFrames(objs *perfObjects, frame []byte, n uint32, ifindex int) error {
	_, err := objs.GenFrames.Run(&ebpf.RunOptions{
		Data:    frame,
		Repeat:  n,
		Flags:   unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		Context: perfXdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)},
	})
	return err
}

// generate makes n frames of kind on each of cpus, one BPF_PROG_RUN call
// per CPU, all starting together, and returns what reached the sink.
func (r *packetRig) generate(kind string, cpus []int, n uint32) (rigRun, error) {
	var plan perfGenPlan
	frame := r.frame(kind)
	copy(plan.Frame[:], frame)
	plan.SportBase = rigSportBase
	plan.Flows = rigFlows
	if err := r.objs.GenConfig.Put(uint32(0), plan); err != nil {
		return rigRun{}, err
	}
	before, err := r.sinkCounts()
	if err != nil {
		return rigRun{}, err
	}
	sentBefore, err := sumPerCPU(r.objs.GenSeq, 0)
	if err != nil {
		return rigRun{}, err
	}

	var (
		wg         sync.WaitGroup
		ready      sync.WaitGroup
		start      = make(chan struct{})
		mu         sync.Mutex
		first, end time.Time
		errs       = make([]error, len(cpus))
	)
	for i, cpu := range cpus {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			markReady := func() { once.Do(ready.Done) }
			defer markReady() // also when Do fails before fn runs
			errs[i] = r.gen.Do(func() error {
				restore, err := pinThread(cpu)
				markReady()
				if err != nil {
					return err
				}
				defer restore()
				<-start
				t0 := time.Now()
				if err := liveFrames(&r.objs, frame, n, r.genIfindex); err != nil {
					return fmt.Errorf("live-frame BPF_PROG_RUN on cpu %d: %w", cpu, err)
				}
				t1 := time.Now()
				mu.Lock()
				if first.IsZero() || t0.Before(first) {
					first = t0
				}
				if t1.After(end) {
					end = t1
				}
				mu.Unlock()
				return nil
			})
		}()
	}
	ready.Wait()
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return rigRun{}, err
	}
	// Everything runs in softirq on the generating CPU, so the frames are
	// through when the calls return; a short pause covers stragglers.
	time.Sleep(20 * time.Millisecond)
	after, err := r.sinkCounts()
	if err != nil {
		return rigRun{}, err
	}
	sentAfter, err := sumPerCPU(r.objs.GenSeq, 0)
	if err != nil {
		return rigRun{}, err
	}
	out := rigRun{sent: sentAfter - sentBefore, wall: end.Sub(first)}
	for k := range after {
		out.perKey[k] = after[k] - before[k]
		out.delivered += out.perKey[k]
	}
	return out, nil
}

// sinkCounts reads the sink's per-key counters, summed over CPUs.
func (r *packetRig) sinkCounts() ([256]uint64, error) { return readSinkCounts(&r.objs) }

// readSinkCounts reads sink_count's per-key counters in objs, summed over
// CPUs: the rig's and LoadGen's.
func readSinkCounts(objs *perfObjects) ([256]uint64, error) {
	var out [256]uint64
	for k := range out {
		v, err := sumPerCPU(objs.SinkCounts, uint32(k))
		if err != nil {
			return out, err
		}
		out[k] = v
	}
	return out, nil
}

// sumPerCPU returns a per-CPU uint64 array element summed over CPUs.
func sumPerCPU(m *ebpf.Map, key uint32) (uint64, error) {
	var vs []uint64
	if err := m.Lookup(key, &vs); err != nil {
		return 0, fmt.Errorf("read %s[%d]: %w", m, key, err)
	}
	var sum uint64
	for _, v := range vs {
		sum += v
	}
	return sum, nil
}

// pinThread pins the calling OS thread to cpu and returns a function that
// restores its previous affinity. The caller must be locked to its thread.
func pinThread(cpu int) (func(), error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return func() {}, fmt.Errorf("sched_getaffinity: %w", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return func() {}, fmt.Errorf("pin to cpu %d: %w", cpu, err)
	}
	return func() { _ = unix.SchedSetaffinity(0, &old) }, nil
}

// ethtoolStats returns `ethtool -S` of an interface, for diagnostics.
func ethtoolStats(ctx context.Context, h *testenv.Host, iface string) string {
	out, err := h.Run(ctx, "ethtool", "-S", iface)
	if err != nil {
		return err.Error()
	}
	return out
}

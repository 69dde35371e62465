package perf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
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
	ConfigDSRNoCT = "dsr-no-ct"
	// ConfigDSR1M is dsr with a million live flows: the generator cycles
	// through rigWideFlows client tuples, which fill a connection table
	// of the default size, so lookups miss the CPU caches as they do in
	// production.
	ConfigDSR1M    = "dsr-1m"
	ConfigIPIP     = "ipip"
	ConfigNftables = "nftables"
	// ConfigKfwd is the kernel's own IPv4 forwarding: no XDP program, no
	// nftables rules, a route to the VIP. A peer, as nftables is.
	ConfigKfwd = "kfwd"
)

// PacketConfigs lists the packet-rate configurations; the ceiling first,
// since every other figure is a ratio to it.
var PacketConfigs = []string{ConfigCeiling, ConfigCeilingTX, ConfigDSR, ConfigDSR1M, ConfigDSRNoCT, ConfigIPIP, ConfigNftables, ConfigKfwd}

// E2EConfigs are the configurations of the `e2e CONFIG mpps=N
// x_ceiling=R` lines. ceiling-tx is a reference for the one-armed
// configurations, not one of them.
var E2EConfigs = []string{ConfigCeiling, ConfigDSR, ConfigDSR1M, ConfigIPIP, ConfigNftables, ConfigKfwd}

// singleDestination reports whether a configuration sends every frame to
// one destination (backend 1) instead of balancing.
func singleDestination(config string) bool {
	return config == ConfigCeiling || config == ConfigCeilingTX || config == ConfigKfwd
}

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
//   - dsr-1m: dsr over rigWideFlows flows (source addresses
//     198.19.1.2-65 too) in a connection table of the default size;
//   - ipip: XDP_TX back out of in0, where the FIB sends the backends
//     198.18.4.(10+i): via the router 198.18.3.2 (gen0, a permanent
//     neighbour). The balancer's FIB lookup is an output lookup bound to
//     the ingress interface, so Fulcrum's ipip is one-armed;
//   - nftables: the kernel forwards out of out0 to backends
//     198.18.2.(10+i), permanent neighbours with MAC 02:fc:03:00:00:(10+i);
//   - kfwd: the kernel forwards to the VIP itself, routed via backend 1
//     of nftables (the route is there for every configuration; nftables
//     rewrites the destination before routing, the others never route).
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
	// rigWideFlows is dsr-1m's number of flows, over all CPUs (a power
	// of two): as many as the default connection table holds.
	rigWideFlows = datapath.DefaultConntrackEntries
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
	cpus          int // the CPUs 0..cpus-1 generate; the veths' queues
	inIfindex     int // in0, in namespace lb
	outIfindex    int // out0, in namespace lb
	genMAC, inMAC net.HardwareAddr
	outMAC        net.HardwareAddr

	objs               perfObjects
	sinkLinks          []link.Link
	dsr, dsrNoCT, ipip *datapath.Datapath
	pass               *ebpf.Program
	// dsr1m is reloaded with an empty table for each frame kind, and
	// filled (refill); wide says with what.
	dsr1m       *datapath.Datapath
	dsrBackends []datapath.Backend
	wide        ConnTable // with no lookups counted
	wideKind    string
	// nftFile holds the nftables configuration's rules, loaded only while
	// it is selected: kfwd must not pay for conntrack and NAT hooks.
	nftFile string

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
	r := &packetRig{rates: make(map[string]float64), cpus: min(queues, runtime.NumCPU())}
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
	if backends < 1 {
		return nil, fmt.Errorf("the rig needs at least 1 backend, not %d", backends)
	}
	if err := r.lb.AddRoute(netip.PrefixFrom(rigVIP, 32), routedBackend(1).Addr); err != nil {
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
	var remote, routed []datapath.Backend
	for i := 1; i <= backends; i++ {
		r.dsrBackends = append(r.dsrBackends, dsrBackend(i))
		remote = append(remote, remoteBackend(i))
		routed = append(routed, routedBackend(i))
	}
	dsr := datapath.VIPConfig{Mode: datapath.ModeDSR}
	if r.dsr, err = loadRigDatapath(dsr, r.dsrBackends, datapath.EncapConfig{}, rigConntrackEntries); err != nil {
		return nil, err
	}
	if r.dsr1m, err = loadRigDatapath(dsr, r.dsrBackends, datapath.EncapConfig{}, rigWideFlows); err != nil {
		return nil, err
	}
	if r.dsrNoCT, err = loadRigDatapath(datapath.VIPConfig{Mode: datapath.ModeDSR, NoConntrack: true}, r.dsrBackends, datapath.EncapConfig{}, rigConntrackEntries); err != nil {
		return nil, err
	}
	if r.ipip, err = loadRigDatapath(datapath.VIPConfig{Mode: datapath.ModeIPIP}, remote, datapath.EncapConfig{SourceV4: rigEncapSource}, rigConntrackEntries); err != nil {
		return nil, err
	}

	// nftables: DNAT with numgen over the routed backends, as
	// kube-proxy's nftables mode does.
	if r.pass, err = env.PassProgram(); err != nil {
		return nil, err
	}
	if r.nftFile, err = writeNftRules(routed); err != nil {
		return nil, err
	}
	return r, nil
}

// rigConntrackEntries is the connection table size of the rig's
// balancers but dsr-1m's.
const rigConntrackEntries = 1 << 18

// loadRigDatapath loads a balancer with a UDP and a TCP VIP on port 80 of
// rigVIP, configured by cfg, over backends, with a connection table of
// ctEntries.
func loadRigDatapath(cfg datapath.VIPConfig, backends []datapath.Backend, encap datapath.EncapConfig, ctEntries uint32) (*datapath.Datapath, error) {
	d, err := datapath.Load(datapath.Options{ConntrackEntries: ctEntries})
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

// nftTable is the nftables configuration's table.
const nftTable = "fcbench"

// writeNftRules writes the nftables balancer to a temporary file.
func writeNftRules(backends []datapath.Backend) (string, error) {
	var m []string
	for i, b := range backends {
		m = append(m, fmt.Sprintf("%d : %s", i, b.Addr))
	}
	rules := fmt.Sprintf(`table ip `+nftTable+` {
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
	for _, d := range []*datapath.Datapath{r.dsr, r.dsr1m, r.dsrNoCT, r.ipip} {
		if d != nil {
			errs = append(errs, d.Close())
		}
	}
	r.dsr, r.dsr1m, r.dsrNoCT, r.ipip = nil, nil, nil, nil
	if r.nftFile != "" {
		errs = append(errs, os.Remove(r.nftFile))
		r.nftFile = ""
	}
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
	ConfigDSR1M:     perfSinkKeySINK_BY_MAC,
	ConfigDSRNoCT:   perfSinkKeySINK_BY_MAC,
	ConfigIPIP:      perfSinkKeySINK_BY_IP,
	ConfigNftables:  perfSinkKeySINK_BY_IP,
	// kfwd keeps the VIP as destination; its next hop is backend 1's MAC.
	ConfigKfwd: perfSinkKeySINK_BY_MAC,
}

// selectConfig attaches configuration name to the LB's ingress in0,
// replacing the current one.
func (r *packetRig) selectConfig(ctx context.Context, name string) error {
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
	var err error
	switch name {
	case ConfigCeiling:
		err = attachProg(r.objs.CeilingFwd)
	case ConfigCeilingTX:
		err = attachProg(r.objs.CeilingTx)
	case ConfigDSR:
		err = r.attachDatapath(r.dsr)
	case ConfigDSR1M:
		err = r.attachDatapath(r.dsr1m)
	case ConfigDSRNoCT:
		err = r.attachDatapath(r.dsrNoCT)
	case ConfigIPIP:
		err = r.attachDatapath(r.ipip)
	case ConfigNftables:
		// The kernel forwards; in0 needs an XDP program only so that the
		// generator's XDP frames are accepted.
		if _, err := r.lb.Run(ctx, "nft", "-f", r.nftFile); err != nil {
			return err
		}
		if err = attachProg(r.pass); err != nil {
			_, _ = r.lb.Run(ctx, "nft", "delete", "table", "ip", nftTable)
			break
		}
		detachPass := r.detach
		r.detach = func() error {
			_, err := r.lb.Run(ctx, "nft", "delete", "table", "ip", nftTable)
			return errors.Join(detachPass(), err)
		}
	case ConfigKfwd:
		// No XDP program: GRO on in0 is what else makes veth run its
		// NAPI, which takes the generator's XDP frames and hands them to
		// the stack as skbs. A NIC has GRO on by default.
		if _, err = r.lb.Run(ctx, "ethtool", "-K", "in0", "gro", "on"); err == nil {
			r.detach = func() error {
				_, err := r.lb.Run(ctx, "ethtool", "-K", "in0", "gro", "off")
				return err
			}
		}
	}
	if err != nil {
		return fmt.Errorf("attach %s to in0: %w", name, err)
	}
	r.current = name
	return nil
}

// attachDatapath attaches d to in0 in native mode.
func (r *packetRig) attachDatapath(d *datapath.Datapath) error {
	return r.lb.Do(func() error {
		if err := d.Attach(r.inIfindex, datapath.AttachNative); err != nil {
			return err
		}
		r.detach = d.Detach
		return nil
	})
}

// frame returns the generator's template for a frame kind: 64 bytes from
// the client to the VIP, addressed to in0.
func (r *packetRig) frame(kind string) []byte {
	return clientFrame(kind, r.genMAC, r.inMAC, rigClient, rigSportBase)
}

// clientFrame returns a 64-byte frame of kind from src:sport to the VIP.
func clientFrame(kind string, srcMAC, dstMAC net.HardwareAddr, src netip.Addr, sport uint16) []byte {
	p := testpacket.Packet{
		SrcMAC: srcMAC, DstMAC: dstMAC,
		Src: src, Dst: rigVIP,
		Sport: sport, Dport: rigVIPPort,
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
	// table is dsr-1m's connection table: its fill before the run, and
	// the run's lookups.
	table *ConnTable
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
	if r.current == ConfigDSR1M && r.wideKind != kind {
		if err := r.refill(kind); err != nil {
			return rigRun{}, fmt.Errorf("fill the connection table of %s: %w", ConfigDSR1M, err)
		}
	}
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
	var before datapath.Counters
	if r.current == ConfigDSR1M {
		var err error
		if before, err = r.dsr1m.Counters(); err != nil {
			return rigRun{}, err
		}
	}
	out, err := r.generate(kind, cpus, n)
	if err != nil {
		return rigRun{}, err
	}
	r.rates[key] = float64(out.sent) / out.wall.Seconds() / float64(len(cpus))
	if r.current == ConfigDSR1M {
		after, err := r.dsr1m.Counters()
		if err != nil {
			return rigRun{}, err
		}
		t := r.wide
		t.Hits, t.Misses = lookups(before, after)
		out.table = &t
	}
	return out, nil
}

// lookups returns the connection-table hits between two snapshots of a
// balancer's counters, and the lookups that found no live entry.
func lookups(before, after datapath.Counters) (hits, misses uint64) {
	delta := func(s datapath.Stat) uint64 { return after.Stat(s) - before.Stat(s) }
	return delta(datapath.StatCtHit), delta(datapath.StatCtMiss) + delta(datapath.StatCtExpired) + delta(datapath.StatCtStale)
}

// refill gives dsr-1m a new, empty connection table and fills it with the
// rigWideFlows flows of frame kind, generated once each from every CPU of
// the rig (each CPU its share), so that the runs that follow, from one CPU
// or all, find the flows in a table as full as they make it: a bucketed
// table of as many ways as flows keeps some 80% of them (a bucket holds
// four), and the others evict each other as they come round, counted as
// the runs' misses. A new table, because the flows of the other kind would
// otherwise take half of it.
func (r *packetRig) refill(kind string) error {
	if r.detach != nil {
		if err := r.detach(); err != nil {
			return err
		}
		r.detach = nil
	}
	if err := r.dsr1m.Close(); err != nil {
		return err
	}
	r.dsr1m = nil
	d, err := loadRigDatapath(datapath.VIPConfig{Mode: datapath.ModeDSR}, r.dsrBackends, datapath.EncapConfig{}, rigWideFlows)
	if err != nil {
		return err
	}
	r.dsr1m = d
	if err := r.attachDatapath(d); err != nil {
		return err
	}
	all := make([]int, r.cpus)
	for i := range all {
		all[i] = i
	}
	if _, err := r.generate(kind, all, rigWideFlows/uint32(len(all))); err != nil {
		return err
	}
	// What the table kept is counted, not assumed: the runs' figures say
	// how full it was.
	t := ConnTable{Capacity: rigWideFlows}
	if t.Entries, err = ctOccupancy(d); err != nil {
		return err
	}
	r.wide, r.wideKind = t, kind
	return nil
}

// ctOccupancy counts the entries of a balancer's connection tables (a
// walk of their buckets and tuple records, datapath.TableEntries); the
// rig's flows are IPv4, so they are the IPv4 table's.
func ctOccupancy(d *datapath.Datapath) (int, error) {
	n := 0
	for _, err := range d.TableEntries() {
		if err != nil {
			return n, fmt.Errorf("count the connection table's entries: %w", err)
		}
		n++
	}
	return n, nil
}

// liveFrames has the generator gen make n frames from the template frame on
// the calling thread's CPU, in live-frame mode (BPF_F_TEST_XDP_LIVE_FRAMES),
// as if received on ifindex. The context's data_end must be the frame's
// length, or the kernel refuses the run.
func liveFrames(gen *ebpf.Program, frame []byte, n uint32, ifindex int) error {
	_, err := gen.Run(&ebpf.RunOptions{
		Data:    frame,
		Repeat:  n,
		Flags:   unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		Context: perfXdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)},
	})
	return err
}

// generate makes n frames of kind on each of cpus, one BPF_PROG_RUN call
// per CPU, all starting together, and returns what reached the sink.
// cpus must be 0..len(cpus)-1, len(cpus) a power of two: for dsr-1m the
// CPUs share the rigWideFlows flows out between them.
func (r *packetRig) generate(kind string, cpus []int, n uint32) (rigRun, error) {
	var plan perfGenPlan
	frame := r.frame(kind)
	copy(plan.Frame[:], frame)
	plan.SportBase = rigSportBase
	plan.Flows = rigFlows
	gen := r.objs.GenFrames
	if r.current == ConfigDSR1M {
		if !firstCPUs(cpus) {
			return rigRun{}, fmt.Errorf("%s generates from CPUs 0 to 2^k-1, not %v", ConfigDSR1M, cpus)
		}
		// Only dsr-1m pays gen_flows's second address rewrite; every
		// other configuration is a ratio to the ceiling's generator.
		gen = r.objs.GenFlows
		plan.WideFlows = rigWideFlows / uint32(len(cpus))
	}
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
				if err := liveFrames(gen, frame, n, r.genIfindex); err != nil {
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

// firstCPUs reports whether cpus are 0, 1, ... and a power of two of
// them.
func firstCPUs(cpus []int) bool {
	for i, c := range cpus {
		if c != i {
			return false
		}
	}
	n := len(cpus)
	return n > 0 && n&(n-1) == 0
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

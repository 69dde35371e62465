package perf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// ControlOptions shape the control-plane measurement.
type ControlOptions struct {
	Runs int
	// MaglevBackends are the backend counts of the Maglev build figures.
	MaglevBackends []int
	// VIPs and Backends size the daemon whose memory is measured.
	VIPs, Backends int
	// Fulcrum is the fulcrum binary; empty builds one from the module.
	Fulcrum string
}

// measureMaglev times maglev.Build for M = 65537 and each backend count.
func measureMaglev(opts ControlOptions, res *Results) error {
	for _, n := range opts.MaglevBackends {
		bs := make([]maglev.Backend, n)
		for i := range bs {
			a := netip.AddrFrom4([4]byte{198, 18, byte(16 + i/256), byte(i)})
			bs[i] = maglev.Backend{Name: a.String(), ID: uint32(i), Weight: 1}
		}
		var nsPerOp []float64
		var allocs, bytesPerOp float64
		for range opts.Runs {
			ns, a, b, err := timeBuild(bs, maglev.DefaultSize)
			if err != nil {
				return err
			}
			nsPerOp = append(nsPerOp, ns)
			allocs, bytesPerOp = a, b
		}
		f := newFigure(SectionControl, fmt.Sprintf("maglev build M=%d, %d backends", maglev.DefaultSize, n), "ns/op", nsPerOp)
		f.Note = fmt.Sprintf("%.0f allocs/op, %.0f KiB/op", allocs, bytesPerOp/1024)
		if n == 1000 {
			verdict := "met"
			if f.Median >= 5e6 {
				verdict = "missed"
			}
			f.Note += fmt.Sprintf("; target under 5 ms: %s", verdict)
		}
		res.add(f)
	}
	return nil
}

// timeBuild runs maglev.Build for at least 300 ms (and 3 times) and
// returns ns, allocations and bytes per build, as testing.B would.
func timeBuild(bs []maglev.Backend, m uint32) (ns, allocs, bytes float64, err error) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	n := 0
	for n < 3 || time.Since(start) < 300*time.Millisecond {
		if _, err := maglev.Build(bs, m); err != nil {
			return 0, 0, 0, err
		}
		n++
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	return float64(elapsed.Nanoseconds()) / float64(n),
		float64(after.Mallocs-before.Mallocs) / float64(n),
		float64(after.TotalAlloc-before.TotalAlloc) / float64(n), nil
}

// daemonVIP is VIP v of the daemon's configuration: 250 addresses, then
// the next port.
func daemonVIP(v int) api.VIPRef {
	return api.VIPRef{Protocol: "tcp", Address: netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + v%250)}), Port: uint16(1000 + v/250)}
}

// daemonBackend is backend j of every VIP of the daemon: 198.18.8.0/21.
func daemonBackend(j int) (netip.Addr, net.HardwareAddr) {
	return netip.AddrFrom4([4]byte{198, 18, byte(8 + j/250), byte(1 + j%250)}),
		net.HardwareAddr{0x02, 0xfc, 0x08, 0, byte(j >> 8), byte(j)}
}

// latencyBackend is the backend the latency runs add and remove.
func latencyBackend(run int) (netip.Addr, net.HardwareAddr) {
	return netip.AddrFrom4([4]byte{198, 18, 15, byte(1 + run)}), net.HardwareAddr{0x02, 0xfc, 0x0f, 0, 0, byte(1 + run)}
}

// daemonConfig renders a configuration of vips × backends: the backend
// list is written once and shared through a YAML anchor.
func daemonConfig(bpffs, socket string, vips, backends int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "instance: bench\nbpffs: %s\ninterfaces:\n  - name: eth0\napi:\n  socket: %s\nmetrics:\n  address: \"off\"\nlog:\n  level: warn\nvips:\n", bpffs, socket)
	for v := range vips {
		ref := daemonVIP(v)
		fmt.Fprintf(&sb, "  - address: %s\n    port: %d\n    protocol: tcp\n    backends:", ref.Address, ref.Port)
		if v > 0 {
			sb.WriteString(" *backends\n")
			continue
		}
		sb.WriteString(" &backends\n")
		for j := range backends {
			a, mac := daemonBackend(j)
			fmt.Fprintf(&sb, "      - {address: %s, mac: \"%s\"}\n", a, mac)
		}
	}
	return sb.String()
}

// moduleRoot finds the directory of go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// buildCommand builds the command in package pkg (relative to the module
// root, e.g. "./cmd/fulcrum") into dir and returns the binary's path.
func buildCommand(ctx context.Context, dir, pkg string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// measureDaemon runs a fulcrum daemon (a real process) in a namespace,
// first with one VIP of opts.Backends backends, then, through the API's
// apply, with opts.VIPs of them. It measures start-up and apply times, the
// time from an API call to the change being live in the fast path (with 1
// VIP and with all), the daemon's memory and the memory of its maps. Last,
// daemons started afresh from a file of opts.VIPs VIPs measure the start-up
// of a large configuration.
func measureDaemon(ctx context.Context, opts ControlOptions, res *Results) (err error) {
	tmp, err := os.MkdirTemp("", "fcbench-daemon-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := opts.Fulcrum
	if bin == "" {
		if bin, err = buildCommand(ctx, tmp, "./cmd/fulcrum"); err != nil {
			return err
		}
	}
	env, err := testenv.Open("")
	if err != nil {
		return err
	}
	defer env.Close()
	cp, err := env.NewNamespace("cp")
	if err != nil {
		return err
	}
	wire, err := env.NewNamespace("wire")
	if err != nil {
		return err
	}
	if err := testenv.VethPair(cp, wire, "eth0", "eth0"); err != nil {
		return err
	}
	eth0, err := linkInfo(cp, "eth0")
	if err != nil {
		return err
	}
	// The pins live on a bpffs of their own, outside /sys (which `ip
	// netns exec` remounts).
	bpffs := filepath.Join("/run", "fcbench-"+env.Prefix)
	if err := datapath.EnsureBPFFS(bpffs); err != nil {
		return err
	}
	pins := datapath.PinDir(bpffs, "bench")
	defer func() {
		datapath.RemovePins(pins)
		unix.Unmount(bpffs, unix.MNT_DETACH)
		os.Remove(bpffs)
	}()
	d := benchDaemon{host: cp, bin: bin, tmp: tmp, bpffs: bpffs}
	if err := d.writeConfig(1, opts.Backends); err != nil {
		return err
	}
	ready, err := d.start(ctx, 1)
	if err != nil {
		return err
	}
	defer d.stop()
	small := fmt.Sprintf("1 VIP × %d backends", opts.Backends)
	f := newFigure(SectionControl, "daemon start-up to API ready, "+small, "s", []float64{ready.Seconds()})
	f.Note = "process start, BPF load and attach, the ring built, written into the ring arena and published"
	res.add(f)

	prog, err := pinnedProgram(pins, eth0.index)
	if err != nil {
		return err
	}
	defer prog.Close()
	latency := func(label, key string) error {
		add, remove, err := measureAPILatency(ctx, d.client, prog, opts)
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		f := newFigure(SectionControl, "API add backend → live ring, daemon with "+label, "ms", add)
		f.Key = key
		f.Note = fmt.Sprintf("from the API request until a BPF_PROG_RUN of a packet shows the new backend; M=%d", maglev.DefaultSize)
		res.add(f)
		res.add(newFigure(SectionControl, "API remove backend → live ring, daemon with "+label, "ms", remove))
		return nil
	}
	if err := latency(small, "api-live-1vip"); err != nil {
		return err
	}

	big := fmt.Sprintf("%d VIPs × %d backends", opts.VIPs, opts.Backends)
	if err := measureApply(ctx, &d, opts, res); err != nil {
		return err
	}

	pid := d.cmd.Process.Pid
	rss, err := procStatus(pid, "VmRSS")
	if err != nil {
		return err
	}
	hwm, _ := procStatus(pid, "VmHWM")
	f = newFigure(SectionControl, "daemon RSS, "+big, "MiB", []float64{mib(rss)})
	f.Note = fmt.Sprintf("peak (VmHWM) %.1f MiB", mib(hwm))
	res.add(f)

	mm, err := measureMapMemory(prog)
	if err != nil {
		return err
	}
	f = newFigure(SectionControl, "BPF map memory, "+big, "MiB", []float64{mib(mm.Total)})
	f.Note = fmt.Sprintf("default connection table (%d entries), default rings (M=%d); %s", datapath.DefaultConntrackEntries, maglev.DefaultSize, mm.summary(4))
	res.add(f)
	if err := latency(big, "api-live-"+vipsKey(opts.VIPs)); err != nil {
		return err
	}
	prog.Close()
	return measureStartup(ctx, &d, pins, opts, res)
}

// applyRuns bounds the runs of the large apply.
const applyRuns = 3

// measureApply applies, through the API, the file of opts.VIPs VIPs to the
// daemon, which has one of them, and then the file of one VIP again, a few
// times: the first adds opts.VIPs-1 VIPs, the second removes them. It
// leaves the daemon with opts.VIPs VIPs.
func measureApply(ctx context.Context, d *benchDaemon, opts ControlOptions, res *Results) error {
	big := fmt.Sprintf("%d VIPs × %d backends", opts.VIPs, opts.Backends)
	var cpu []float64 // the daemon's, of each large apply
	apply := func(vips int) (api.ApplyResult, float64, error) {
		actx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		cpu0, err := procCPU(d.cmd.Process.Pid)
		if err != nil {
			return api.ApplyResult{}, 0, err
		}
		start := time.Now()
		ar, err := d.client.Apply(actx, []byte(daemonConfig(d.bpffs, d.socket(), vips, opts.Backends)))
		if err != nil {
			return ar, 0, fmt.Errorf("apply %d VIPs × %d backends: %w\n%s", vips, opts.Backends, err, d.logTail())
		}
		wall := time.Since(start).Seconds()
		cpu1, err := procCPU(d.cmd.Process.Pid)
		if err != nil {
			return ar, 0, err
		}
		if vips == opts.VIPs {
			cpu = append(cpu, (cpu1 - cpu0).Seconds())
		}
		return ar, wall, nil
	}
	var added, removed []float64
	var last api.ApplyResult
	runs := min(opts.Runs, applyRuns)
	for run := range runs {
		ar, s, err := apply(opts.VIPs)
		if err != nil {
			return err
		}
		added, last = append(added, s), ar
		if run == runs-1 {
			break
		}
		if _, s, err = apply(1); err != nil {
			return err
		}
		removed = append(removed, s)
	}
	f := newFigure(SectionControl, "API apply of "+big, "s", added)
	f.Key = "apply-" + vipsKey(opts.VIPs)
	f.Note = fmt.Sprintf("%d VIPs added, each ring built (M=%d), written into the ring arena and published; the daemon's CPU time (user+system) %.2f s, median of %v",
		len(last.Added), maglev.DefaultSize, median(cpu), roundAll(cpu))
	res.add(f)
	if len(removed) > 0 {
		f = newFigure(SectionControl, fmt.Sprintf("API apply of 1 VIP × %d backends to the daemon with %s", opts.Backends, big), "s", removed)
		f.Note = fmt.Sprintf("%d VIPs removed", opts.VIPs-1)
		res.add(f)
	}
	return nil
}

// roundAll rounds each of xs to 2 decimals, for a note.
func roundAll(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = math.Round(x*100) / 100
	}
	return out
}

// vipsKey names a VIP count in a figure's key: "1000vip".
func vipsKey(n int) string { return fmt.Sprintf("%dvip", n) }

// startupRuns bounds the runs of the large start-up: each one stops a
// daemon and removes its pins.
const startupRuns = 3

// measureStartup stops d and starts daemons from a file of opts.VIPs VIPs
// on a fresh pin directory each time (a first start, which builds and
// writes every ring, not a restart that adopts them), timing each until its
// API reports every VIP.
func measureStartup(ctx context.Context, d *benchDaemon, pins string, opts ControlOptions, res *Results) error {
	if err := d.writeConfig(opts.VIPs, opts.Backends); err != nil {
		return err
	}
	var runs, cpu []float64
	for range min(opts.Runs, startupRuns) {
		d.stop()
		if err := datapath.RemovePins(pins); err != nil {
			return err
		}
		ready, err := d.start(ctx, opts.VIPs)
		if err != nil {
			return err
		}
		runs = append(runs, ready.Seconds())
		c, err := procCPU(d.cmd.Process.Pid)
		if err != nil {
			return err
		}
		cpu = append(cpu, c.Seconds())
	}
	f := newFigure(SectionControl, fmt.Sprintf("daemon start-up to API ready, %d VIPs × %d backends", opts.VIPs, opts.Backends), "s", runs)
	f.Key = "startup-" + vipsKey(opts.VIPs)
	f.Note = fmt.Sprintf("from the config file, on fresh pins: process start, config parse, BPF load and attach, every ring built, written into the ring arena and published; the daemon's CPU time (user+system) until ready %.2f s, median of %v",
		median(cpu), roundAll(cpu))
	res.add(f)
	return nil
}

// benchDaemon is a fulcrum daemon process that the control-plane figures
// run in a namespace, with its config file, log and API socket in tmp.
type benchDaemon struct {
	host            *testenv.Host
	bin, tmp, bpffs string
	cmd             *exec.Cmd
	exited          chan error
	client          *api.Client
}

func (d *benchDaemon) socket() string  { return filepath.Join(d.tmp, "fulcrum.sock") }
func (d *benchDaemon) config() string  { return filepath.Join(d.tmp, "fulcrum.yaml") }
func (d *benchDaemon) logPath() string { return filepath.Join(d.tmp, "daemon.log") }

// writeConfig writes a config file of vips × backends.
func (d *benchDaemon) writeConfig(vips, backends int) error {
	return os.WriteFile(d.config(), []byte(daemonConfig(d.bpffs, d.socket(), vips, backends)), 0o600)
}

// start starts the daemon and returns how long it took until its API
// reported vips VIPs.
func (d *benchDaemon) start(ctx context.Context, vips int) (time.Duration, error) {
	started := time.Now()
	cmd, err := d.host.Start(ctx, "sh", "-c", fmt.Sprintf("exec %s daemon --config %s >%s 2>&1", d.bin, d.config(), d.logPath()))
	if err != nil {
		return 0, err
	}
	d.cmd, d.exited = cmd, make(chan error, 1)
	go func() { d.exited <- cmd.Wait() }()
	d.client = api.NewClient(d.socket())
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := d.client.Status(sctx)
		cancel()
		if err == nil && st.VIPs == vips {
			return time.Since(started), nil
		}
		select {
		case e := <-d.exited:
			d.cmd = nil
			return 0, fmt.Errorf("daemon exited: %v\n%s", e, d.logTail())
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(started) > time.Minute {
			return 0, fmt.Errorf("daemon not ready after a minute (last status: %+v, %v)\n%s", st, err, d.logTail())
		}
	}
}

// stop ends the daemon, if it runs: SIGTERM, then SIGKILL after 5 s.
func (d *benchDaemon) stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
}

// logTail returns the end of the daemon's log.
func (d *benchDaemon) logTail() string {
	b, _ := os.ReadFile(d.logPath())
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// pinnedProgram returns the program behind the daemon's pinned XDP link.
func pinnedProgram(pins string, ifindex int) (*ebpf.Program, error) {
	l, err := link.LoadPinnedLink(filepath.Join(pins, fmt.Sprintf("xdp_link_ifindex_%d", ifindex)), nil)
	if err != nil {
		return nil, fmt.Errorf("daemon's xdp link: %w", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return nil, err
	}
	return ebpf.NewProgramFromID(info.Program)
}

// measureAPILatency adds a backend to VIP 0 through the API and polls the
// fast path with a packet that the new ring gives to it, then removes it
// again; it returns both latencies of each run in ms.
func measureAPILatency(ctx context.Context, client *api.Client, prog *ebpf.Program, opts ControlOptions) (add, remove []float64, err error) {
	ref := daemonVIP(0)
	base := make([]maglev.Backend, opts.Backends)
	for j := range base {
		a, _ := daemonBackend(j)
		base[j] = maglev.Backend{Name: a.String(), ID: uint32(j), Weight: 1}
	}
	for run := range opts.Runs {
		addr, mac := latencyBackend(run)
		frame, err := frameToNewBackend(base, addr, ref)
		if err != nil {
			return nil, nil, err
		}
		isNew := func() (bool, error) {
			out := make([]byte, len(frame)+256)
			ropts := ebpf.RunOptions{Data: frame, DataOut: out}
			if _, err := prog.Run(&ropts); err != nil {
				return false, err
			}
			return bytes.Equal(ropts.DataOut[:6], mac), nil
		}
		if now, err := isNew(); err != nil || now {
			return nil, nil, fmt.Errorf("before adding %s: the probe reaches it already (%v)", addr, err)
		}
		ms, err := timeUntil(ctx, func() error {
			return client.AddBackend(ctx, ref, api.Backend{Address: addr, Weight: 1, MAC: mac.String()})
		}, isNew, true)
		if err != nil {
			return nil, nil, fmt.Errorf("add backend %s: %w", addr, err)
		}
		add = append(add, ms)
		ms, err = timeUntil(ctx, func() error { return client.RemoveBackend(ctx, ref, addr) }, isNew, false)
		if err != nil {
			return nil, nil, fmt.Errorf("remove backend %s: %w", addr, err)
		}
		remove = append(remove, ms)
	}
	return add, remove, nil
}

// frameToNewBackend returns a TCP SYN to the VIP (a SYN always takes the
// ring) whose flow the ring over base + addr gives to addr, computed with
// the Go Maglev and flow hash.
func frameToNewBackend(base []maglev.Backend, addr netip.Addr, ref api.VIPRef) ([]byte, error) {
	bs := append(base[:len(base):len(base)], maglev.Backend{Name: addr.String(), ID: uint32(len(base)), Weight: 1})
	table, err := maglev.Build(bs, maglev.DefaultSize)
	if err != nil {
		return nil, err
	}
	for sport := uint16(1024); sport < 65535; sport++ {
		h := flowhash.Flow(rigClient, ref.Address, sport, ref.Port, uint8(datapath.TCP))
		if table[flowhash.Slot(h, maglev.DefaultSize)] == uint32(len(base)) {
			return testpacket.Packet{
				SrcMAC: net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 1}, DstMAC: net.HardwareAddr{0x02, 0, 0, 0, 0xbb, 1},
				Src: rigClient, Dst: ref.Address, Proto: layers.IPProtocolTCP,
				Sport: sport, Dport: ref.Port, SYN: true,
			}.Build(), nil
		}
	}
	return nil, fmt.Errorf("no source port reaches %s", addr)
}

// timeUntil calls do and returns the ms from just before the call until
// cond first returns want, polling it from another goroutine meanwhile.
func timeUntil(ctx context.Context, do func() error, cond func() (bool, error), want bool) (float64, error) {
	var seen atomic.Int64
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		deadline := start.Add(30 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			got, err := cond()
			if err != nil {
				done <- err
				return
			}
			if got == want {
				seen.Store(int64(time.Since(start)))
				done <- nil
				return
			}
		}
		done <- errors.New("the fast path did not change within 30s")
	}()
	callErr := do()
	pollErr := <-done
	if callErr != nil {
		return 0, callErr
	}
	if pollErr != nil {
		return 0, pollErr
	}
	return float64(seen.Load()) / 1e6, nil
}

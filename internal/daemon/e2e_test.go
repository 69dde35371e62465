package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// harness is a topology with fcbackend on every backend and a fulcrum
// daemon (a real process) on lb1.
type harness struct {
	t       testing.TB
	topo    *testenv.Topology
	lb      *testenv.Host // where the daemon runs
	dir     string        // bpffs mount (pins only: bpffs holds no files)
	logPath string
	bin     string // fulcrum binary
	cfgPath string
	socket  string
	daemon  *exec.Cmd
	wrap    []string // a command the daemon runs under, in lb1 (say, unshare)
	client  *api.Client
	names   map[netip.Addr]string // backend address -> name
	// instance names the daemon's pins (waitRing); "" is config's "e2e".
	instance string
	// servers are the fcbackend processes, by backend index.
	servers    []*exec.Cmd
	backendBin string
	// serverArgs are more fcbackend arguments, by backend index (say,
	// -delay).
	serverArgs map[int][]string
}

var (
	vip4 = netip.MustParseAddr("203.0.113.10")
	vip6 = netip.MustParseAddr("2001:db8:ffff::10")
)

func buildBinaries(t testing.TB, dir string) (fulcrum, backend string) {
	t.Helper()
	fulcrum, backend = filepath.Join(dir, "fulcrum"), filepath.Join(dir, "fcbackend")
	for out, pkg := range map[string]string{fulcrum: "./cmd/fulcrum", backend: "./testenv/cmd/fcbackend"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = "../.."
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	return fulcrum, backend
}

func newHarness(t testing.TB, opts ...func(*testenv.Options)) *harness {
	require.BPF(t)
	require.Netns(t)
	require.Tool(t, "ip") // the daemon and backends run through `ip netns exec`
	require.Tool(t, "ss") // startServer waits for fcbackend's listener
	o := testenv.Options{Backends: 3, VIPs: []netip.Addr{vip4, vip6}}
	for _, f := range opts {
		f(&o)
	}
	topo := testenv.NewCanonical(t, o)
	// A bpffs outside /sys: `ip netns exec` remounts /sys, and a mount made
	// inside it would vanish with the daemon's mount namespace.
	dir := filepath.Join("/run", "fulcrum-test-"+topo.Prefix)
	if err := datapath.EnsureBPFFS(dir); err != nil {
		t.Fatal(err)
	}
	// The Env unmounts it with the namespaces, also after a killed run.
	if err := topo.Env.OwnMount(dir); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, topo: topo, lb: topo.LB1, dir: dir, names: make(map[netip.Addr]string)}
	h.bin, _ = buildBinaries(t, t.TempDir())
	h.backendBin = filepath.Join(filepath.Dir(h.bin), "fcbackend")
	h.servers = make([]*exec.Cmd, len(topo.Backends))
	for i, b := range topo.Backends {
		name := fmt.Sprintf("backend%d", i+1)
		h.names[b.IPv4], h.names[b.IPv6] = name, name
		h.startServer(i)
	}
	h.socket = filepath.Join(t.TempDir(), "fulcrum.sock")
	h.logPath = filepath.Join(t.TempDir(), "daemon.log")
	h.cfgPath = filepath.Join(t.TempDir(), "fulcrum.yaml")
	h.client = api.NewClient(h.socket)
	return h
}

// startServer starts fcbackend on backend i, with extra arguments (e.g.
// -hold 2s).
func (h *harness) startServer(i int, extra ...string) {
	b := h.topo.Backends[i]
	name := fmt.Sprintf("backend%d", i+1)
	// On the VIPs for traffic, on its own addresses for health checks.
	args := append([]string{"-name", name, "-addr", vip4.String(), "-addr", vip6.String(),
		"-addr", b.IPv4.String(), "-addr", b.IPv6.String()}, h.serverArgs[i]...)
	cmd, err := b.Start(context.Background(), h.backendBin, append(args, extra...)...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.servers[i] = cmd
	// Wait until it listens, so a health check does not race its start.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := b.Run(context.Background(), "ss", "-Hltn", "sport", "=", ":9000")
		if err == nil && strings.Contains(out, "9000") {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("fcbackend on %s does not listen", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopServer kills fcbackend on backend i.
func (h *harness) stopServer(i int) {
	cmd := h.servers[i]
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
}

// config renders the daemon's configuration; weights per backend index.
func (h *harness) config(weights ...int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "instance: e2e\nbpffs: %s\ninterfaces:\n  - name: eth0\napi:\n  socket: %s\nmetrics:\n  address: 127.0.0.1:9542\nconntrack:\n  entries: 65536\nvips:\n", h.dir, h.socket)
	for _, v := range []struct {
		addr  netip.Addr
		port  int
		proto string
	}{{vip4, 80, "tcp"}, {vip4, 9000, "tcp"}, {vip4, 53, "udp"}, {vip6, 80, "tcp"}, {vip6, 9000, "tcp"}} {
		fmt.Fprintf(&sb, "  - address: %s\n    port: %d\n    protocol: %s\n    backends:\n", v.addr, v.port, v.proto)
		for i, b := range h.topo.Backends {
			if i < len(weights) && weights[i] < 0 {
				continue // left out
			}
			a := b.IPv4
			if v.addr.Is6() {
				a = b.IPv6
			}
			w := 1
			if i < len(weights) {
				w = weights[i]
			}
			// No MAC: the daemon resolves it.
			fmt.Fprintf(&sb, "      - address: %s\n        weight: %d\n", a, w)
		}
	}
	return sb.String()
}

func (h *harness) writeConfig(s string) {
	if err := os.WriteFile(h.cfgPath, []byte(s), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// startDaemon starts `fulcrum daemon` in lb1 and waits for its API.
func (h *harness) startDaemon() {
	t := h.t
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, h.wrap...), h.bin, "daemon", "--config", h.cfgPath)
	cmd := h.lb.Command(context.Background(), argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.daemon = cmd
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := h.client.Status(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon API not up after 15s: %v\ndaemon log:\n%s", err, h.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *harness) log() string {
	b, _ := os.ReadFile(h.logPath)
	return string(b)
}

// cli runs the fulcrum CLI (in the root namespace: the API is a file).
func (h *harness) cli(args ...string) (string, error) {
	cmd := exec.Command(h.bin, append([]string{"--socket", h.socket}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// conn is one long-lived TCP connection from the client to the echo VIP.
type conn struct {
	c       net.Conn
	r       *bufio.Reader
	backend string
}

func (h *harness) dial(addr netip.Addr, port uint16) (*conn, error) {
	return h.dialFrom(netip.Addr{}, addr, port)
}

// dialFrom is dial from the client's source address src (the kernel's
// choice when src is the zero Addr).
func (h *harness) dialFrom(src, addr netip.Addr, port uint16) (*conn, error) {
	var c net.Conn
	err := h.topo.Client.Do(func() error {
		d := net.Dialer{Timeout: 3 * time.Second}
		if src.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		var err error
		c, err = d.Dial("tcp", netip.AddrPortFrom(addr, port).String())
		return err
	})
	if err != nil {
		return nil, err
	}
	cn := &conn{c: c, r: bufio.NewReader(c)}
	name, err := cn.exchange("hello")
	if err != nil {
		c.Close()
		return nil, err
	}
	cn.backend = name
	return cn, nil
}

func (c *conn) exchange(msg string) (string, error) {
	c.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(c.c, msg); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	name, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	if rest != msg {
		return "", fmt.Errorf("echo %q, want %q", rest, msg)
	}
	return name, nil
}

// openConns opens n connections and checks each landed where the daemon's
// explain says a SYN of that flow goes.
func (h *harness) openConns(n int, addr netip.Addr) []*conn {
	return h.openConnsFrom(n, netip.Addr{}, addr)
}

// openConnsFrom is openConns from the client's source address src (the
// kernel's choice when src is the zero Addr).
func (h *harness) openConnsFrom(n int, src, addr netip.Addr) []*conn {
	t := h.t
	var out []*conn
	for range n {
		c, err := h.dialFrom(src, addr, 9000)
		if err != nil {
			t.Fatalf("connection %d from %s to %s: %v\ndaemon log:\n%s", len(out), src, addr, err, h.log())
		}
		t.Cleanup(func() { c.c.Close() })
		local := netip.MustParseAddrPort(c.c.LocalAddr().String())
		exp, err := h.client.Explain(context.Background(), api.ExplainRequest{
			Src: local.Addr().Unmap(), Dst: addr, Protocol: "tcp", Sport: local.Port(), Dport: 9000, SYN: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.backend, h.names[exp.Backend]; got != want {
			t.Fatalf("flow :%d landed on %s, explain says %s (%+v)", local.Port(), got, want, exp)
		}
		out = append(out, c)
	}
	return out
}

// checkConns requires every connection to still answer from its backend.
func (h *harness) checkConns(conns []*conn, skip string, when string) {
	h.t.Helper()
	for i, c := range conns {
		if c.backend == skip {
			continue
		}
		got, err := c.exchange(fmt.Sprintf("ping-%d", i))
		if err != nil {
			h.t.Fatalf("%s: connection %d (on %s) broke: %v\ndaemon log:\n%s", when, i, c.backend, err, h.log())
		}
		if got != c.backend {
			h.t.Fatalf("%s: connection %d moved from %s to %s", when, i, c.backend, got)
		}
	}
}

func (h *harness) xdpAttached() bool {
	attached := false
	h.lb.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil && l.Attrs().Xdp != nil {
			attached = l.Attrs().Xdp.Attached
		}
		return nil
	})
	return attached
}

// TestDaemon runs the daemon as an operator would: config file with MACs
// left to resolution, long-lived flows, kill -9 and restart, drain, a bad
// reload, a good SIGHUP reload, metrics, detach.
func TestDaemon(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(h.config())
	h.startDaemon()

	st, err := h.client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.VIPs != 5 || st.Backends != 15 || st.Adopted {
		t.Fatalf("status = %+v, want 5 vips, 15 backends, not adopted", st)
	}
	conns := append(h.openConns(80, vip4), h.openConns(30, vip6)...)
	perBackend := map[string]int{}
	for _, c := range conns {
		perBackend[c.backend]++
	}
	t.Logf("connections per backend: %v", perBackend)
	if len(perBackend) != 3 {
		t.Fatalf("90 connections reached %d backends, want all 3: %v", len(perBackend), perBackend)
	}

	// A UDP stream runs through the kill and the restart: not a datagram
	// may be lost.
	stream := h.startProbe(vip4, 2*time.Millisecond)

	// kill -9: traffic keeps flowing, old and new flows alike.
	h.daemon.Process.Signal(syscall.SIGKILL)
	h.daemon.Wait()
	if !h.xdpAttached() {
		t.Fatal("XDP detached when the daemon was killed")
	}
	h.checkConns(conns, "", "daemon killed")
	more, err := h.dial(vip4, 9000)
	if err != nil {
		t.Fatalf("new connection with the daemon dead: %v", err)
	}
	more.c.Close()

	// Restart: adopts the pins, connections keep going, nothing rewritten.
	h.startDaemon()
	st, err = h.client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Adopted {
		t.Fatalf("restarted daemon did not adopt the pinned state: %+v\n%s", st, h.log())
	}
	if strings.Contains(h.log()[strings.LastIndex(h.log(), "adopted pinned"):], "reconciled") {
		t.Fatalf("restart with the same config rewrote VIPs:\n%s", h.log())
	}
	h.checkConns(conns, "", "daemon restarted")
	stream.waitEchoes(time.Now(), 100) // traffic through the new program too
	sent, lost := stream.stopCounts()
	t.Logf("UDP stream through kill -9 and restart: %d datagrams sent, %d lost", sent, lost)
	if sent < 100 || lost != 0 {
		t.Fatalf("UDP stream through kill -9 and restart: %d sent, %d lost; want no loss", sent, lost)
	}

	// Removing and adding a backend through the API moves new flows
	// exactly as an independent Maglev model says.
	b3 := h.topo.Backends[2]
	ref := "tcp/" + vip4.String() + ":9000"
	if out, err := h.cli("backend", "remove", ref, b3.IPv4.String()); err != nil {
		t.Fatalf("fulcrum backend remove: %v\n%s", err, out)
	}
	h.checkModel(h.openConns(30, vip4), h.topo.Backends[:2])
	if out, err := h.cli("backend", "add", ref, b3.IPv4.String()); err != nil {
		t.Fatalf("fulcrum backend add: %v\n%s", err, out)
	}
	h.checkModel(h.openConns(30, vip4), h.topo.Backends)
	// Connections that were on backend3 were re-hashed by its removal and
	// reset by their new backend; the others must all be alive.
	h.checkConns(conns, "backend3", "after remove and add")

	// Drain backend1 through the CLI: its flows stay, new flows avoid it.
	b1 := h.topo.Backends[0]
	if out, err := h.cli("backend", "drain", "tcp/"+vip4.String()+":9000", b1.IPv4.String()); err != nil {
		t.Fatalf("fulcrum backend drain: %v\n%s", err, out)
	}
	h.checkConns(conns, "backend3", "after drain")
	for i, c := range h.openConns(30, vip4) {
		if c.backend == "backend1" {
			t.Fatalf("new connection %d reached the drained backend1", i)
		}
	}

	// A bad file is refused whole and changes nothing.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(h.config(), "weight: 1", "weight: 70000", 1)), 0o600)
	out, err := h.cli("apply", "-f", bad)
	if err == nil || !strings.Contains(out, "weight: 70000 is over the maximum 65535") {
		t.Fatalf("apply of a bad file: err %v, output %q; want a refusal naming the weight", err, out)
	}
	h.checkConns(conns, "backend3", "after a refused apply")
	os.WriteFile(bad, []byte(strings.Replace(h.config(), "entries: 65536", "entries: 65536\n  timeouts: {tcp_fin: 1500ms}", 1)), 0o600)
	out, err = h.cli("apply", "-f", bad)
	if err == nil || !strings.Contains(out, "conntrack.timeouts.tcp_fin: 1.5s is not a whole number of seconds") {
		t.Fatalf("apply of a bad timeout: err %v, output %q; want a refusal naming conntrack.timeouts.tcp_fin", err, out)
	}
	h.checkConns(conns, "backend3", "after a refused timeout")

	// SIGHUP with a bad file: refused, logged, traffic unaffected.
	h.writeConfig(strings.Replace(h.config(), "protocol: udp", "protocol: sctp", 1))
	h.daemon.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(h.log(), "reload refused") {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP with a bad file: no refusal logged\n%s", h.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(h.log(), `\"sctp\" is not supported`) && !strings.Contains(h.log(), `sctp`) {
		t.Fatalf("the refusal does not name the problem:\n%s", h.log())
	}
	h.checkConns(conns, "backend3", "after a refused SIGHUP")

	// SIGHUP with backend3 removed from every VIP: its flows break, the
	// others keep going.
	h.writeConfig(h.config(1, 1, -1))
	h.daemon.Process.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(5 * time.Second)
	for {
		st, err = h.client.Status(context.Background())
		if err == nil && st.Backends == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP reload not applied: %+v %v\n%s", st, err, h.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.checkConns(conns, "backend3", "after reload removing backend3")

	// Metrics are served and follow the maps.
	body := h.scrape()
	// Counters move with traffic: one more exchange on every connection.
	before := metricValue(t, body, `fulcrum_vip_packets_total{vip="tcp/203.0.113.10:9000"}`)
	h.checkConns(conns, "backend3", "for the metrics")
	body = h.scrape()
	if after := metricValue(t, body, `fulcrum_vip_packets_total{vip="tcp/203.0.113.10:9000"}`); after <= before {
		t.Fatalf("fulcrum_vip_packets_total did not move with traffic: %v -> %v", before, after)
	}
	for _, want := range []string{`fulcrum_vip_packets_total{vip="tcp/203.0.113.10:9000"}`, `fulcrum_conntrack_events_total{event="hit"}`, "fulcrum_build_info", "fulcrum_reconcile_duration_seconds_count"} {
		if !strings.Contains(body, want) {
			t.Fatalf("metrics lack %s:\n%s", want, body)
		}
	}

	// JSON stats for scripts.
	out, err = h.cli("-o", "json", "stats")
	if err != nil {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	var stats api.Stats
	if err := json.Unmarshal([]byte(out), &stats); err != nil || stats.Verdicts["tx_dsr"] == 0 {
		t.Fatalf("stats -o json: %v, tx_dsr %d\n%s", err, stats.Verdicts["tx_dsr"], out)
	}

	// Stop, detach: XDP gone, pins gone.
	h.daemon.Process.Signal(syscall.SIGTERM)
	h.daemon.Wait()
	if !h.xdpAttached() {
		t.Fatal("XDP detached on a clean stop; it must stay until 'fulcrum detach'")
	}
	if out, err := exec.Command(h.bin, "detach", "--config", h.cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("fulcrum detach: %v\n%s", err, out)
	}
	// The kernel releases the link a few milliseconds after its last pin
	// goes (measured 4-14 ms here), not within the unlink.
	require.Eventually(t, time.Second, func() error {
		if h.xdpAttached() {
			return errors.New("XDP still attached 1s after fulcrum detach")
		}
		return nil
	})
	if _, err := os.Stat(datapath.PinDir(h.dir, "e2e")); !os.IsNotExist(err) {
		t.Fatalf("pins still there after detach: %v", err)
	}
}

// probe is a UDP flow of numbered datagrams to a VIP, one per interval,
// recording when each was sent and when its echo came back.
type probe struct {
	conn     net.Conn
	interval time.Duration
	done     chan struct{}
	sending  chan struct{} // closed when the sender has sent its last datagram
	wg       sync.WaitGroup
	t        testing.TB

	mu    sync.Mutex
	sent  []time.Time // by sequence number
	reply []time.Time // by sequence number; zero without an echo
}

func (h *harness) startProbe(vip netip.Addr, interval time.Duration) *probe {
	var c net.Conn
	if err := h.topo.Client.Do(func() error {
		var err error
		c, err = net.Dial("udp", netip.AddrPortFrom(vip, 53).String())
		return err
	}); err != nil {
		h.t.Fatal(err)
	}
	p := &probe{conn: c, interval: interval, done: make(chan struct{}), sending: make(chan struct{}), t: h.t}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		defer close(p.sending)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
			p.mu.Lock()
			p.sent = append(p.sent, time.Now())
			p.reply = append(p.reply, time.Time{})
			p.mu.Unlock()
			fmt.Fprintf(c, "%d", i)
		}
	}()
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 256)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			now := time.Now()
			_, seq, _ := strings.Cut(string(buf[:n]), " ")
			var i int
			if _, err := fmt.Sscan(seq, &i); err == nil {
				p.mu.Lock()
				if i >= 0 && i < len(p.reply) && p.reply[i].IsZero() {
					p.reply[i] = now
				}
				p.mu.Unlock()
			}
		}
	}()
	h.t.Cleanup(p.stop)
	return p
}

func (p *probe) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	<-p.sending
	// The last echoes: a flow's datagrams take one path and come back in
	// order, so once the newest is back, every echo still to come is in.
	// If it never comes it was lost; a second is far beyond a round trip
	// here.
	_, _ = require.Poll(time.Second, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if n := len(p.reply); n > 0 && p.reply[n-1].IsZero() {
			return fmt.Errorf("no echo of datagram %d yet", n-1)
		}
		return nil
	})
	p.conn.Close()
	p.wg.Wait()
}

// waitEchoes waits until n echoes have arrived since from: the stream
// flows (again), and any silence that began before from is over.
func (p *probe) waitEchoes(from time.Time, n int) {
	p.t.Helper()
	require.Eventually(p.t, 5*time.Second, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		got := 0
		for _, r := range p.reply {
			if !r.Before(from) {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d echoes since %s, want %d", got, from.Format("15:04:05.000"), n)
		}
		return nil
	})
}

// stopCounts stops the probe and returns how many datagrams it sent and
// how many of them got no echo.
func (p *probe) stopCounts() (sent, lost int) {
	p.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.reply {
		if r.IsZero() {
			lost++
		}
	}
	return len(p.sent), lost
}

// scrape fetches /metrics from the daemon in lb1's namespace.
func (h *harness) scrape() string {
	var mconn net.Conn
	err := h.lb.Do(func() error {
		// Dial here: the socket must be made in lb1's namespace, and
		// net/http would dial on another thread.
		var err error
		mconn, err = net.DialTimeout("tcp", "127.0.0.1:9542", 3*time.Second)
		return err
	})
	if err != nil {
		h.t.Fatalf("scrape metrics: %v\n%s", err, h.log())
	}
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return mconn, nil }}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://127.0.0.1:9542/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue returns the value of one sample in a scrape.
func metricValue(t testing.TB, body, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	t.Fatalf("no sample %s in the scrape", series)
	return 0
}

// checkModel requires every connection (to the v4 echo VIP) to be on the
// backend an independent model gives: Maglev over the backends' addresses
// (M = 65537) and the flow hash. weights are by index into backends; a
// backend without one weighs 1.
func (h *harness) checkModel(conns []*conn, backends []*testenv.Host, weights ...uint32) {
	h.t.Helper()
	table := h.modelRing(backends, weights...)
	for i, c := range conns {
		if want := h.names[modelBackend(table, backends, c)]; c.backend != want {
			h.t.Fatalf("connection %d from %s landed on %s, the Maglev model says %s", i, c.c.LocalAddr(), c.backend, want)
		}
	}
}

// modelRing is the independent model's ring of the v4 echo VIP: Maglev
// over backends' IPv4 addresses with weights (1 where missing), each slot
// an index into backends.
func (h *harness) modelRing(backends []*testenv.Host, weights ...uint32) []uint32 {
	h.t.Helper()
	in := make([]maglev.Backend, len(backends))
	for i, b := range backends {
		in[i] = maglev.Backend{Name: b.IPv4.String(), ID: uint32(i), Weight: 1}
		if i < len(weights) {
			in[i].Weight = weights[i]
		}
	}
	table, err := maglev.Build(in, maglev.DefaultSize)
	if err != nil {
		h.t.Fatal(err)
	}
	return table
}

// modelBackend is the address of the backend that a modelRing sends the
// connection's flow (to the v4 echo VIP) to.
func modelBackend(table []uint32, backends []*testenv.Host, c *conn) netip.Addr {
	local := netip.MustParseAddrPort(c.c.LocalAddr().String())
	slot := flowhash.Slot(flowhash.Flow(local.Addr().Unmap(), vip4, local.Port(), 9000, 6), uint32(len(table)))
	return backends[table[slot]].IPv4
}

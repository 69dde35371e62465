package perf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// The connection-rate paths.
const (
	PathDirect  = "direct"
	PathHAProxy = "haproxy"
	PathDSR     = "fulcrum-dsr"
)

// ConnPaths lists the connection-rate paths; direct first, since the
// others are ratios to it.
var ConnPaths = []string{PathDirect, PathHAProxy, PathDSR}

var connVIP = netip.MustParseAddr("203.0.113.10")

const connPort = 8000

// ConnOptions shape the connection-rate measurement.
type ConnOptions struct {
	Runs     int
	Duration time.Duration // of one run
	Backends int
	// Clients is the number of concurrent client loops.
	Clients int
}

// connRig is the canonical topology (client ─ router ─ switch ─ lb1,
// backends) with echo servers on the backends, HAProxy on lb1 and a Fulcrum
// datapath that can be attached to lb1's eth0.
type connRig struct {
	topo      *testenv.Topology
	listeners []net.Listener
	serveWG   sync.WaitGroup
	dp        *datapath.Datapath
	tmp       string // holds the client binary and HAProxy's configuration
	client    string // the connclient binary
	attached  bool
}

func newConnRig(ctx context.Context, opts ConnOptions) (_ *connRig, err error) {
	tmp, err := os.MkdirTemp("", "fcbench-conn-")
	if err != nil {
		return nil, err
	}
	client, err := buildCommand(ctx, tmp, "./internal/perf/connclient")
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	topo, err := testenv.Build(testenv.Options{Backends: opts.Backends, VIPs: []netip.Addr{connVIP}})
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("build topology: %w", err)
	}
	r := &connRig{topo: topo, tmp: tmp, client: client}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	// Many short connections: the whole ephemeral range, and TIME_WAIT
	// reuse, on the hosts that connect.
	for _, h := range []*testenv.Host{topo.Client, topo.LB1} {
		if err := h.Sysctls(map[string]string{
			"net.ipv4.ip_local_port_range": "1024 65535",
			"net.ipv4.tcp_tw_reuse":        "1",
		}); err != nil {
			return nil, err
		}
	}
	// lb1's own traffic (HAProxy's) leaves through a veth into the
	// bridge: no partial checksums.
	if err := topo.LB1.SetTxChecksum(testenv.MainIface, false); err != nil {
		return nil, err
	}
	for _, b := range topo.Backends {
		var ln net.Listener
		if err := b.Do(func() error {
			var err error
			ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", connPort))
			return err
		}); err != nil {
			return nil, fmt.Errorf("echo server on %s: %w", b.Role(), err)
		}
		r.listeners = append(r.listeners, ln)
		r.serveWG.Add(1)
		go func() {
			defer r.serveWG.Done()
			serveEcho(ln)
		}()
	}

	// HAProxy listens on the VIP, held on lb1's lo.
	if err := topo.LB1.AddAddr("lo", netip.PrefixFrom(connVIP, 32)); err != nil {
		return nil, err
	}
	haproxyCfg := filepath.Join(tmp, "haproxy.cfg")
	if err := os.WriteFile(haproxyCfg, []byte(haproxyConfig(topo.Backends)), 0o600); err != nil {
		return nil, err
	}
	if _, err := topo.LB1.Start(ctx, "haproxy", "-db", "-f", haproxyCfg); err != nil {
		return nil, fmt.Errorf("start haproxy: %w", err)
	}

	var backends []datapath.Backend
	for _, b := range topo.Backends {
		backends = append(backends, datapath.Backend{Addr: b.IPv4, MAC: b.MAC, Weight: 1})
	}
	if r.dp, err = datapath.Load(datapath.Options{ConntrackEntries: 1 << 18}); err != nil {
		return nil, err
	}
	vip := datapath.VIP{Addr: connVIP, Port: connPort, Proto: datapath.TCP}
	if err := r.dp.AddVIP(vip, datapath.VIPConfig{Mode: datapath.ModeDSR}, backends); err != nil {
		return nil, err
	}
	// Every path must answer before anything is measured.
	for _, p := range ConnPaths {
		if err := r.selectPath(p); err != nil {
			return nil, err
		}
		if err := r.probe(ctx, p); err != nil {
			return nil, fmt.Errorf("%s path does not answer: %w", p, err)
		}
	}
	return r, nil
}

func haproxyConfig(backends []*testenv.Host) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `global
	maxconn 8000

defaults
	mode tcp
	timeout connect 2s
	timeout client 10s
	timeout server 10s

frontend fe
	bind %s:%d
	default_backend be

backend be
	balance roundrobin
`, connVIP, connPort)
	for i, b := range backends {
		fmt.Fprintf(&sb, "\tserver b%d %s:%d\n", i+1, b.IPv4, connPort)
	}
	return sb.String()
}

// serveEcho answers each connection with what it reads first, then closes
// it: the server closes first, so the client keeps no TIME_WAIT.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			_, _ = c.Write(buf[:n])
		}()
	}
}

// selectPath attaches or detaches Fulcrum for a path. direct and haproxy
// run without it (direct never passes lb1; HAProxy gets the VIP's packets
// from the stack), fulcrum-dsr with it.
func (r *connRig) selectPath(p string) error {
	want := p == PathDSR
	if want == r.attached {
		return nil
	}
	if want {
		if err := r.topo.LB1.Do(func() error { return r.dp.Attach(r.topo.LB1.Ifindex, datapath.AttachNative) }); err != nil {
			return fmt.Errorf("attach fulcrum: %w", err)
		}
	} else if err := r.dp.Detach(); err != nil {
		return err
	}
	r.attached = want
	return nil
}

// targets returns the addresses the client connects to on a path, in
// turn: the VIP, or each backend.
func (r *connRig) targets(p string) string {
	if p != PathDirect {
		return netip.AddrPortFrom(connVIP, connPort).String()
	}
	var out []string
	for _, b := range r.topo.Backends {
		out = append(out, netip.AddrPortFrom(b.IPv4, connPort).String())
	}
	return strings.Join(out, ",")
}

// connRun is what one run of connclient reports.
type connRun struct {
	OK     uint64 `json:"ok"`
	Failed uint64 `json:"failed"`
	WallNS int64  `json:"wall_ns"`
	Error  string `json:"error"`
}

// client runs connclient in the client namespace.
func (r *connRig) runClient(ctx context.Context, p string, args ...string) (connRun, error) {
	args = append([]string{"-addr", r.targets(p)}, args...)
	out, err := r.topo.Client.Run(ctx, r.client, args...)
	if err != nil {
		return connRun{}, err
	}
	var cr connRun
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &cr); err != nil {
		return connRun{}, fmt.Errorf("connclient said %q: %w", out, err)
	}
	return cr, nil
}

// probe retries one connection to every target of a path until all work.
func (r *connRig) probe(ctx context.Context, p string) error {
	n := len(strings.Split(r.targets(p), ","))
	deadline := time.Now().Add(10 * time.Second)
	for {
		cr, err := r.runClient(ctx, p, "-clients", "1", "-max", strconv.Itoa(n), "-timeout", "1s")
		if err == nil && cr.OK == uint64(n) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%d of %d connections failed: %s", cr.Failed, n, cr.Error)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// run opens connections on path p from clients loops for d.
func (r *connRig) run(ctx context.Context, p string, clients int, d time.Duration) (connRun, error) {
	if err := r.selectPath(p); err != nil {
		return connRun{}, err
	}
	return r.runClient(ctx, p, "-clients", strconv.Itoa(clients), "-duration", d.String())
}

// Close stops the servers and removes the topology (HAProxy dies with it).
func (r *connRig) Close() error {
	var errs []error
	for _, ln := range r.listeners {
		ln.Close()
	}
	r.serveWG.Wait()
	if r.dp != nil {
		errs = append(errs, r.dp.Close())
	}
	errs = append(errs, r.topo.Close())
	os.RemoveAll(r.tmp)
	return errors.Join(errs...)
}

// measureConnections measures connection rates, interleaving the paths
// round by round.
func measureConnections(ctx context.Context, opts ConnOptions, res *Results) error {
	r, err := newConnRig(ctx, opts)
	if err != nil {
		return err
	}
	defer r.Close()
	runs := make(map[string][]connRun)
	for round := 0; round < opts.Runs; round++ {
		for _, p := range ConnPaths {
			if err := ctx.Err(); err != nil {
				return err
			}
			cr, err := r.run(ctx, p, opts.Clients, opts.Duration)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if cr.OK == 0 {
				return fmt.Errorf("%s: no connection completed (%d failed, first error: %s)", p, cr.Failed, cr.Error)
			}
			runs[p] = append(runs[p], cr)
			// Let the last run's connections close before the next.
			time.Sleep(200 * time.Millisecond)
		}
	}
	var direct float64
	for _, p := range ConnPaths {
		var rates []float64
		var ok, failed uint64
		var firstErr string
		for _, cr := range runs[p] {
			rates = append(rates, float64(cr.OK)/time.Duration(cr.WallNS).Seconds()/1e3)
			ok += cr.OK
			failed += cr.Failed
			if firstErr == "" {
				firstErr = cr.Error
			}
		}
		f := newFigure(SectionConnections, p, "k conn/s", rates)
		if p == PathDirect {
			direct = f.Median
		}
		if direct > 0 {
			f.Ratio, f.RatioTo = f.Median/direct, PathDirect
		}
		if failed > 0 {
			f.Note = fmt.Sprintf("%d of %d connections failed, e.g. %s", failed, ok+failed, firstErr)
		}
		res.add(f)
	}
	return nil
}

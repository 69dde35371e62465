// Package daemon is `fulcrum daemon`: it loads the configuration, loads or
// adopts the pinned fast path, attaches it, reconciles the VIPs, and serves
// the control API and the metrics until it is told to stop. Stopping (or
// being killed) leaves the program attached and the maps pinned, so traffic
// keeps flowing; `fulcrum detach` removes them. That holds when the bpffs
// outlives the process (datapath.MountBPFFS); the log says whether it does.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/apiserver"
	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/health"
	"github.com/fulcrum-lb/fulcrum/internal/healthsteer"
	"github.com/fulcrum-lb/fulcrum/internal/metrics"
	"github.com/fulcrum-lb/fulcrum/internal/neighbor"
	"github.com/fulcrum-lb/fulcrum/internal/reconcile"
	"github.com/fulcrum-lb/fulcrum/internal/sdnotify"
	"github.com/fulcrum-lb/fulcrum/internal/version"
	"github.com/fulcrum-lb/fulcrum/internal/vrrp"
	"github.com/fulcrum-lb/fulcrum/internal/vrrpagent"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// Options start a daemon.
type Options struct {
	ConfigPath string
	// LogOutput receives the log; nil means stderr.
	LogOutput io.Writer
	// Ready, if set, is closed once the API serves.
	Ready chan<- struct{}
	// Executable is the fulcrum binary that runs the VRRP agent
	// (`fulcrum vrrp-agent`); empty means this one.
	Executable string
}

// Daemon is a running fulcrum daemon.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	level   *slog.LevelVar
	started time.Time

	// applyMu takes whole configurations (the initial load, SIGHUP, the
	// API's apply) one at a time, so that cfg is always the configuration
	// the reconciler took last.
	applyMu   sync.Mutex
	mu        sync.Mutex // guards cfg, lastApply, lastDur
	cfg       *config.Config
	lastApply time.Time
	lastDur   time.Duration

	dp      *datapath.Datapath
	rec     *reconcile.Reconciler
	chk     *health.Checker
	steer   *steering        // through-datapath probes
	vr      *vrrpagent.Agent // nil without a vrrp section
	bgp     *announcer       // nil without a bgp section (bgp.go)
	sync    *syncer          // nil without a sync section (sync.go)
	metrics *metrics.Metrics
	rates   *rateSampler
	conns   *connCounter // per-backend connection counts (conns.go)
	rt      *rtFolder    // per-backend response times (rtfold.go)
	ifaces  []api.Interface
	progID  ebpf.ProgramID // the balancer program's kernel ID, for tracking

	trackMu sync.Mutex
	sick    []string // why the node is sick for VRRP tracking (tracking.go)
}

// Run runs a daemon until ctx ends or SIGINT/SIGTERM arrives. SIGHUP
// reloads the configuration file.
func Run(ctx context.Context, opts Options) error {
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	log := cfg.Log.NewLogger(opts.LogOutput, level)
	slog.SetDefault(log) // the API's listener logs refused peers there
	d := &Daemon{opts: opts, log: log, level: level, cfg: cfg, started: time.Now()}
	return d.run(ctx)
}

func (d *Daemon) run(ctx context.Context) error {
	cfg := d.cfg
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	bpffs, err := datapath.MountBPFFS(cfg.BPFFS)
	if err != nil {
		return err
	}
	if bpffs.Outlives {
		d.log.Info(bpffs.Note)
	} else {
		d.log.Warn(bpffs.Note)
	}
	pinDir := datapath.PinDir(cfg.BPFFS, cfg.Instance)
	dp, err := datapath.Load(datapath.Options{ConntrackEntries: cfg.Conntrack.Entries, RingSlots: cfg.RingArenaSlots, PinDir: pinDir})
	if err != nil {
		return err
	}
	d.dp = dp
	// Closing keeps the pins: traffic flows on without a daemon.
	defer dp.Close()
	// Tracking compares it with what each interface runs; without it
	// every interface would look detached and the node sick for good.
	if d.progID, err = dp.ProgramID(); err != nil {
		return err
	}
	if dp.Adopted() {
		d.log.Info("adopted pinned fast path", "pins", pinDir, "vips", len(dp.VIPs()))
	}
	d.logPins(dp, pinDir)

	for _, ifc := range cfg.Interfaces {
		link, err := net.InterfaceByName(ifc.Name)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifc.Name, err)
		}
		mode, err := attachMode(ifc.XDPMode)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifc.Name, err)
		}
		if err := dp.Attach(link.Index, mode); err != nil {
			return fmt.Errorf("interface %s: %w", ifc.Name, err)
		}
		// noteAttached sets the mode the kernel reports.
		d.ifaces = append(d.ifaces, api.Interface{Name: ifc.Name, Ifindex: link.Index})
	}

	res, err := neighbor.New()
	if err != nil {
		return err
	}
	defer res.Close()
	d.metrics = metrics.New(d, version.Version, version.Revision())

	// The steering of through-datapath probes is loaded while a VIP
	// checks through the data path; it is detached once the checker's
	// goroutines (below) have ended.
	d.steer = &steering{log: d.log, res: res}
	for _, ifc := range d.ifaces {
		d.steer.ifindexes = append(d.steer.ifindexes, ifc.Ifindex)
	}
	defer d.steer.close()

	var wg sync.WaitGroup
	defer wg.Wait()
	// Whatever makes run return (an error of one part included) ends the
	// others before it waits for them.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 8) // one per sender at most: none blocks

	// Health checks feed the reconciler, and the reconciler gives them
	// their targets; their goroutines start below and end with ctx.
	d.chk = health.New(health.Options{
		Log:      d.log,
		OnChange: func(tr health.Transition) { d.healthChanged(ctx, tr) },
		Observe:  d.metrics.ObserveHealthCheck,
		Steer:    d.steer,
	})
	d.rec = reconcile.New(dp, res, reconcile.Options{
		Log:           d.log,
		Observe:       d.metrics.ObserveReconcile,
		HealthTargets: d.setHealthTargets,
	})
	if _, err := d.setConfig(ctx, cfg); err != nil {
		return err
	}
	if err := d.completeMigration(dp); err != nil {
		return err
	}
	d.noteAttached(dp)
	d.rates = newRateSampler(dp, 2*time.Second)
	go d.rates.run(ctx)
	d.conns = newConnCounter(dp)
	go d.conns.run(ctx)
	d.rt = newRTFolder(dp, d.rec.Desired, d.chk.Statuses)
	go d.rt.run(ctx)

	// The reconciler re-plans when a resolved MAC changes.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := res.Watch(ctx, d.rec.MACChanged); err != nil {
			errc <- err
		}
	}()

	if cfg.VRRP != nil {
		if err := d.startVRRP(ctx, &wg, errc, cfg.VRRP); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.trackNode(ctx)
		}()
	}

	if cfg.BGP != nil {
		if err := d.startBGP(ctx, &wg, cfg.BGP); err != nil {
			return err
		}
	}

	if cfg.Sync != nil {
		if err := d.startSync(ctx, &wg, errc, cfg.Sync); err != nil {
			return err
		}
	} else if err := dp.SetSync(false); err != nil {
		// Pins adopted from a daemon that ran sync and died may have
		// the export on, with nobody to read it.
		return fmt.Errorf("sync: turn the fast path's export off: %w", err)
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.chk.Run(ctx); err != nil {
			errc <- fmt.Errorf("health checks: %w", err)
		}
	}()

	if cfg.Metrics.Address != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Address)
		if err != nil {
			return fmt.Errorf("metrics: listen on %s: %w", cfg.Metrics.Address, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", d.metrics.Handler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		serve(ctx, &wg, srv, ln, errc)
		d.log.Info("metrics", "address", ln.Addr().String())
	}

	ln, err := apiserver.Listen(cfg.API.Socket)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	defer os.Remove(cfg.API.Socket)
	srv := &http.Server{Handler: apiserver.New(&controller{d: d}, d.log), ReadHeaderTimeout: 5 * time.Second}
	serve(ctx, &wg, srv, ln, errc)
	d.log.Info("serving", "api", cfg.API.Socket, "version", version.Version)
	if d.opts.Ready != nil {
		close(d.opts.Ready)
	}
	d.notify(sdnotify.Ready) // attached, reconciled, serving

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			d.notify(sdnotify.Stopping)
			d.log.Info("stopping; "+bpffs.Stop, "pins", pinDir)
			return nil
		case err := <-errc:
			return err
		case <-hup:
			d.notify(sdnotify.Reloading())
			data, err := os.ReadFile(d.opts.ConfigPath)
			if err != nil {
				d.log.Error("reload: read config", "err", err)
				d.notify(sdnotify.Ready) // the reload is over, refused
				continue
			}
			if _, err := d.apply(ctx, data); err != nil {
				d.log.Error("reload refused; the running state is unchanged", "err", err)
			}
			d.notify(sdnotify.Ready) // the reload is over, applied or refused
		}
	}
}

// notify tells systemd the daemon's state (Type=notify); outside systemd
// it does nothing. A failure is logged: the daemon runs on regardless.
func (d *Daemon) notify(state string) {
	if err := sdnotify.Notify(state); err != nil {
		d.log.Warn("systemd notification", "state", state, "err", err)
	}
}

// serve runs srv on ln until ctx ends.
func serve(ctx context.Context, wg *sync.WaitGroup, srv *http.Server, ln net.Listener, errc chan<- error) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
}

// apply takes a new configuration file (SIGHUP or the API): it is parsed
// and checked whole, and handed to setConfig. A refused file changes
// nothing.
func (d *Daemon) apply(ctx context.Context, data []byte) (reconcile.Result, error) {
	cfg, err := config.Parse(data)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	res, err := d.setConfig(ctx, cfg)
	if err != nil {
		return res, classify(err)
	}
	d.log.Info("configuration applied", "added", len(res.Added), "changed", len(res.Changed), "removed", len(res.Removed), "unchanged", res.Unchanged)
	return res, nil
}

// setConfig makes cfg the configuration: the settings that only a restart
// can change must be unchanged, and the reconciler takes cfg's desired
// state whole (VIPs, encapsulation, new-flow limit, forwarding; it points
// the health checks at the new backends itself). It is the one path of a
// whole configuration: the initial load, SIGHUP and the API's apply.
func (d *Daemon) setConfig(ctx context.Context, cfg *config.Config) (reconcile.Result, error) {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.mu.Lock()
	old := d.cfg
	d.mu.Unlock()
	if err := restartOnly(old, cfg); err != nil {
		return reconcile.Result{}, fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	res, err := d.rec.Apply(ctx, reconcile.StateOf(cfg))
	if err != nil {
		return res, err
	}
	d.mu.Lock()
	d.cfg, d.lastApply, d.lastDur = cfg, time.Now(), res.Duration
	d.mu.Unlock()
	d.level.Set(cfg.Log.SlogLevel())
	d.bgpKick() // the path attributes may have changed
	if d.vr != nil {
		d.vr.SetLogLevel(cfg.Log.SlogLevel())
	}
	return res, nil
}

// setHealthTargets points the health checker at the backends of vips, and
// loads the steering program if a check goes through the data path (or
// unloads it if none does any more). The reconciler calls it after every
// change of the desired VIPs.
func (d *Daemon) setHealthTargets(vips []config.VIP) {
	targets := health.Targets(vips)
	through := slices.ContainsFunc(targets, func(t health.Target) bool { return t.Check.ThroughDatapath })
	d.steer.want(through)
	d.chk.Set(targets)
	d.bgpKick()
}

// healthChanged hands a backend's new state to the reconciler, which takes
// a down backend out of its VIP's ring (or drains it) and puts it back.
func (d *Daemon) healthChanged(ctx context.Context, tr health.Transition) {
	if err := d.rec.SetHealth(ctx, tr.VIP, tr.Backend, tr.To); err != nil && ctx.Err() == nil {
		d.log.Error("apply health change", "vip", tr.VIP.String(), "backend", tr.Backend.String(), "state", tr.To.String(), "err", err)
	}
	d.track()
	d.bgpKick()
}

// restartOnly refuses a reload that changes what only a restart can.
func restartOnly(old, cur *config.Config) error {
	var errs []error
	check := func(field string, same bool) {
		if !same {
			errs = append(errs, fmt.Errorf("%s cannot change on reload; restart the daemon to change it", field))
		}
	}
	check("instance", old.Instance == cur.Instance)
	check("bpffs", old.BPFFS == cur.BPFFS)
	check("api.socket", old.API.Socket == cur.API.Socket)
	check("metrics.address", old.Metrics.Address == cur.Metrics.Address)
	check("conntrack.entries", old.Conntrack.Entries == cur.Conntrack.Entries)
	check("ring_arena_slots", old.RingArenaSlots == cur.RingArenaSlots)
	check("log.format", old.Log.Format == cur.Log.Format)
	check("vrrp", reflect.DeepEqual(old.VRRP, cur.VRRP))
	check("sync", reflect.DeepEqual(old.Sync, cur.Sync))
	check("bgp (all but its communities, med and vips)", reflect.DeepEqual(old.BGP.Restartable(), cur.BGP.Restartable()))
	same := len(old.Interfaces) == len(cur.Interfaces)
	for i := 0; same && i < len(old.Interfaces); i++ {
		same = old.Interfaces[i] == cur.Interfaces[i]
	}
	check("interfaces", same)
	return errors.Join(errs...)
}

// Counters implements metrics.Source.
func (d *Daemon) Counters() (datapath.Counters, error) { return d.dp.Counters() }

// BackendHealth implements metrics.Source.
func (d *Daemon) BackendHealth() map[datapath.VIP]map[netip.Addr]string {
	out := make(map[datapath.VIP]map[netip.Addr]string)
	for k, m := range d.rec.HealthOf() {
		s := make(map[netip.Addr]string, len(m))
		for a, h := range m {
			s[a] = h.String()
		}
		out[k] = s
	}
	return out
}

// RingArena implements metrics.ArenaSource.
func (d *Daemon) RingArena() datapath.ArenaStats { return d.dp.RingArena() }

// SteeringCounters implements metrics.Source.
func (d *Daemon) SteeringCounters() (healthsteer.Counters, bool) {
	return d.steer.counters()
}

// VRRPState implements metrics.Source.
func (d *Daemon) VRRPState() string {
	if d.vr == nil {
		return "disabled"
	}
	return d.vr.State().String()
}

// startVRRP runs VRRPv3 for the configured virtual addresses in the VRRP
// agent, a child process whose threads are all real-time (internal/vrrpagent
// says why). The XDP program stays attached whatever the role: the standby
// is hot, and both nodes build identical Maglev tables, so flows survive a
// failover. When ctx ends the agent advertises priority 0 and releases the
// addresses before the daemon exits; if the agent dies, the daemon stops
// with an error.
func (d *Daemon) startVRRP(ctx context.Context, wg *sync.WaitGroup, errc chan<- error, c *config.VRRP) error {
	a, err := vrrpagent.Start(vrrp.Config{
		Interface:        c.Interface,
		VRID:             c.VRID,
		Priority:         c.Priority,
		AdvertInterval:   c.AdvertInterval,
		Preempt:          c.Preempt,
		PreemptDelay:     c.PreemptDelay,
		UnicastPeers:     c.UnicastPeers,
		Family:           c.Family,
		VirtualAddresses: c.VirtualAddresses,
		GratuitousCount:  c.GratuitousCount,
	}, vrrpagent.Options{
		Executable: d.opts.Executable,
		LogOutput:  d.opts.LogOutput,
		Log:        d.cfg.Log,
	})
	if err != nil {
		return err
	}
	d.log.Info("vrrp: agent started", "pid", a.Pid())
	d.vr = a
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.Run(ctx); err != nil {
			errc <- err
		}
	}()
	return nil
}

// Package reconcile turns desired state (the config file plus API changes)
// and observed state (backend health) into writes. It is the only writer
// of the datapath's configuration (VIPs, backends and their rings, the
// encapsulation settings, the new-flow limit) and of the forwarding
// sysctls ipip needs, and it tells the health checker which backends to
// probe. Every change, whatever its source (the config at start, a SIGHUP
// reload, the API's apply or its edits, a health transition), takes one
// lock, is planned whole first, validated and with every MAC resolved, and
// is applied only if the plan holds; VIPs whose target did not change are
// not touched.
package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/health"
)

// Dataplane is what the reconciler needs of the datapath.
type Dataplane interface {
	// SetVIPs sets many VIPs at once (their rings swap in one batch) and
	// returns each one's error at its index.
	SetVIPs(changes []datapath.VIPChange) []error
	RemoveVIP(vip datapath.VIP) error
	VIPs() []datapath.VIPState
	Capacity() (vips, backends int)
	// SetEncap sets the encapsulation; it refuses to take away a source
	// prefix that a live ipip VIP needs.
	SetEncap(c datapath.EncapConfig) error
	// Encap returns the encapsulation in force (adopted from the pins of
	// an earlier daemon, at first).
	Encap() datapath.EncapConfig
	SetNewFlowLimit(perCPU uint32) error
}

// Health is a backend's observed state, as internal/health reports it.
type Health = health.State

// Backend health states. Unknown counts as up: a backend is in service
// until a check says otherwise.
const (
	Unknown = health.Unknown
	Up      = health.Up
	Down    = health.Down
)

// State is the whole desired state: what a configuration file sets, and
// what the API edits (the VIPs).
type State struct {
	VIPs []config.VIP
	// Encap is how ipip VIPs build their outer headers; it must hold a
	// source prefix for the family of every ipip backend.
	Encap datapath.EncapConfig
	// NewFlowLimit bounds the connection entries each CPU creates per
	// second; 0 = none.
	NewFlowLimit uint32
	// Conntrack holds the global idle timeouts of connection entries,
	// which a VIP's own override (config.Conntrack.TimeoutsOf).
	Conntrack config.Conntrack
	// Interfaces are the interfaces the fast path is attached to. While an
	// ipip VIP exists they forward: bpf_fib_lookup, which finds the next
	// hop of encapsulated packets, answers only for interfaces that do.
	Interfaces []string
}

// StateOf returns the desired state that a configuration describes.
func StateOf(c *config.Config) State {
	s := State{
		VIPs:         c.VIPs,
		Encap:        datapath.EncapConfig{SourceV4: c.IPIP.SourceV4, SourceV6: c.IPIP.SourceV6, GatewayMAC: c.IPIP.GatewayMAC},
		NewFlowLimit: c.Conntrack.NewFlowLimit,
		Conntrack:    c.Conntrack,
	}
	for _, ifc := range c.Interfaces {
		s.Interfaces = append(s.Interfaces, ifc.Name)
	}
	return s
}

// Options configure a Reconciler. Every field may be left out.
type Options struct {
	Log *slog.Logger
	// Observe receives the duration of every reconcile that wrote VIPs.
	Observe func(time.Duration)
	// HealthTargets receives the desired VIPs after every committed change
	// of them (not after a health transition, which changes none), so that
	// the health checker follows them without any caller having to ask.
	// It is called with the reconciler's lock held, so calls come in the
	// order of the changes; it must not call the reconciler.
	HealthTargets func([]config.VIP)
	// Forwarding turns IPv4 and IPv6 forwarding on for an interface;
	// nil = write /proc/sys/net (see EnableForwarding).
	Forwarding func(ifname string) error
}

// Result says what a reconcile did.
type Result struct {
	Added, Removed, Changed []datapath.VIP
	Unchanged               int
	Duration                time.Duration
}

// Reconciler owns the desired state and writes the datapath.
type Reconciler struct {
	mu      sync.Mutex
	dp      Dataplane
	macs    MACResolver
	log     *slog.Logger
	observe func(time.Duration)
	targets func([]config.VIP)
	forward func(ifname string) error

	desired State
	// encap and newFlowLimit are what the datapath holds (limitSet: once
	// written), which a failed write leaves behind desired.
	encap        datapath.EncapConfig
	newFlowLimit uint32
	limitSet     bool

	health map[datapath.VIP]map[netip.Addr]Health
	// While update plans, the MACs it resolved with r.mu released, and
	// the addresses the plan found neither there nor followed (macs.go).
	resolved map[netip.Addr]resolution
	missing  map[netip.Addr]bool
}

// New returns a reconciler over dp with an empty desired state; the first
// Apply sets it.
func New(dp Dataplane, macs MACResolver, opts Options) *Reconciler {
	r := &Reconciler{
		dp: dp, macs: macs, log: opts.Log, observe: opts.Observe,
		targets: opts.HealthTargets, forward: opts.Forwarding,
		encap:  dp.Encap(),
		health: make(map[datapath.VIP]map[netip.Addr]Health),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.forward == nil {
		r.forward = func(ifname string) error { return EnableForwarding(r.log, ifname) }
	}
	return r
}

// Key returns the datapath identity of a configured VIP.
func Key(v config.VIP) datapath.VIP {
	p, _ := datapath.ParseProto(v.Protocol)
	return datapath.VIP{Addr: v.Address, Port: v.Port, Proto: p}
}

// Desired returns a copy of the desired VIPs.
func (r *Reconciler) Desired() []config.VIP {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.desired.VIPs)
}

// VIP returns the desired VIP key.
func (r *Reconciler) VIP(key datapath.VIP) (config.VIP, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.find(key)
	if i < 0 {
		return config.VIP{}, fmt.Errorf("vip %s: %w", key, ErrNotFound)
	}
	return r.desired.VIPs[i], nil
}

// Apply makes s the whole desired state: the config at start, a reload,
// the API's apply. A refused state changes nothing.
func (r *Reconciler) Apply(ctx context.Context, s State) (Result, error) {
	s.VIPs = slices.Clone(s.VIPs)
	s.Interfaces = slices.Clone(s.Interfaces)
	return r.update(ctx, func() (State, bool, error) { return s, true, nil })
}

// current is an update's next state when nothing but observed state
// (health, a MAC) changed: the desired state as it is, its VIPs unedited.
func (r *Reconciler) current() (State, bool, error) { return r.desired, false, nil }

// withVIPs returns the desired state with vips instead of its VIPs.
func (r *Reconciler) withVIPs(vips []config.VIP) State {
	s := r.desired
	s.VIPs = vips
	return s
}

// AddVIP adds one VIP to the desired state.
func (r *Reconciler) AddVIP(ctx context.Context, v config.VIP) error {
	_, err := r.update(ctx, func() (State, bool, error) {
		if r.find(Key(v)) >= 0 {
			return State{}, false, fmt.Errorf("vip %s %w", Key(v), ErrExists)
		}
		return r.withVIPs(append(slices.Clone(r.desired.VIPs), v)), true, nil
	})
	return err
}

// RemoveVIP removes one VIP from the desired state.
func (r *Reconciler) RemoveVIP(ctx context.Context, key datapath.VIP) error {
	_, err := r.update(ctx, func() (State, bool, error) {
		i := r.find(key)
		if i < 0 {
			return State{}, false, fmt.Errorf("vip %s: %w", key, ErrNotFound)
		}
		return r.withVIPs(slices.Delete(slices.Clone(r.desired.VIPs), i, i+1)), true, nil
	})
	return err
}

// AddBackend adds a backend to a desired VIP.
func (r *Reconciler) AddBackend(ctx context.Context, key datapath.VIP, b config.Backend) error {
	return r.editVIP(ctx, key, func(v *config.VIP) error {
		for _, o := range v.Backends {
			if o.Address == b.Address {
				return fmt.Errorf("backend %s %w in vip %s", b.Address, ErrExists, key)
			}
		}
		v.Backends = append(slices.Clone(v.Backends), b)
		return nil
	})
}

// RemoveBackend removes a backend from a desired VIP.
func (r *Reconciler) RemoveBackend(ctx context.Context, key datapath.VIP, addr netip.Addr) error {
	return r.editVIP(ctx, key, func(v *config.VIP) error {
		i := slices.IndexFunc(v.Backends, func(b config.Backend) bool { return b.Address == addr })
		if i < 0 {
			return fmt.Errorf("backend %s of vip %s: %w", addr, key, ErrNotFound)
		}
		v.Backends = slices.Delete(slices.Clone(v.Backends), i, i+1)
		return nil
	})
}

// SetWeight sets a backend's weight; 0 drains it.
func (r *Reconciler) SetWeight(ctx context.Context, key datapath.VIP, addr netip.Addr, weight uint32) error {
	if weight > datapath.MaxWeight {
		return invalid{fmt.Errorf("weight %d is over the maximum %d", weight, datapath.MaxWeight)}
	}
	return r.editVIP(ctx, key, func(v *config.VIP) error {
		i := slices.IndexFunc(v.Backends, func(b config.Backend) bool { return b.Address == addr })
		if i < 0 {
			return fmt.Errorf("backend %s of vip %s: %w", addr, key, ErrNotFound)
		}
		v.Backends = slices.Clone(v.Backends)
		v.Backends[i].Weight = weight
		return nil
	})
}

// SetHealth records a backend's observed health and reconciles its VIP.
func (r *Reconciler) SetHealth(ctx context.Context, key datapath.VIP, addr netip.Addr, h Health) error {
	r.mu.Lock()
	m := r.health[key]
	if m == nil {
		m = make(map[netip.Addr]Health)
		r.health[key] = m
	}
	if m[addr] == h {
		r.mu.Unlock()
		return nil
	}
	m[addr] = h
	r.mu.Unlock()
	if h == Down {
		r.reresolve(addr)
	}
	_, err := r.update(ctx, r.current)
	return err
}

// HealthOf returns the observed health of every desired backend.
func (r *Reconciler) HealthOf() map[datapath.VIP]map[netip.Addr]Health {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[datapath.VIP]map[netip.Addr]Health)
	for _, v := range r.desired.VIPs {
		k := Key(v)
		m := make(map[netip.Addr]Health, len(v.Backends))
		for _, b := range v.Backends {
			m[b.Address] = r.health[k][b.Address]
		}
		out[k] = m
	}
	return out
}

// Errors that classify a refused change; the datapath's own failures
// (the kernel refusing a write) wrap none of them.
var (
	// ErrNotFound marks a change that names a VIP or backend that does
	// not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists marks an addition of a VIP or backend that exists.
	ErrExists = errors.New("already exists")
	// ErrInvalid marks a desired state that cannot be planned: bad
	// values, unresolvable MACs, over capacity.
	ErrInvalid = errors.New("invalid")
)

// invalid marks err as ErrInvalid without changing its message.
type invalid struct{ error }

func (e invalid) Unwrap() error        { return e.error }
func (e invalid) Is(target error) bool { return target == ErrInvalid }

func (r *Reconciler) find(key datapath.VIP) int {
	return slices.IndexFunc(r.desired.VIPs, func(v config.VIP) bool { return Key(v) == key })
}

func (r *Reconciler) editVIP(ctx context.Context, key datapath.VIP, edit func(*config.VIP) error) error {
	_, err := r.update(ctx, func() (State, bool, error) {
		i := r.find(key)
		if i < 0 {
			return State{}, false, fmt.Errorf("vip %s: %w", key, ErrNotFound)
		}
		next := slices.Clone(r.desired.VIPs)
		if err := edit(&next[i]); err != nil {
			return State{}, false, err
		}
		return r.withVIPs(next), true, nil
	})
	return err
}

// target is what one VIP's datapath entry must become.
type target struct {
	cfg      datapath.VIPConfig
	backends []datapath.Backend
}

// commit plans next, writes it and, if the VIPs could be written, makes
// it the desired state. edited says whether next's VIPs come from a change
// of them, rather than from a health transition. r.mu is held. Only update
// calls it: a plan reads only MACs resolved already, and update resolves
// the others with r.mu released.
//
// The encapsulation is the union of the old and the new source prefixes
// while the VIPs change, then exactly the new ones: neither an old ipip
// VIP that is still live nor a new one is ever without the prefix of its
// backends' family.
func (r *Reconciler) commit(next State, edited bool) (Result, error) {
	plan, err := r.plan(next)
	if err != nil {
		return Result{}, err
	}
	old := r.encap
	union := unionEncap(old, next.Encap)
	if !sameEncap(union, old) {
		if err := r.dp.SetEncap(union); err != nil {
			return Result{}, invalid{fmt.Errorf("ipip: %w", err)}
		}
		r.encap = union
	}
	if edited {
		if err := r.forwarding(next); err != nil {
			r.restoreEncap(old)
			return Result{}, err
		}
	}
	res, err := r.apply(plan)
	if err != nil {
		r.restoreEncap(old)
		return res, err
	}
	r.desired = next
	r.pruneHealth()
	if edited && r.targets != nil {
		r.targets(slices.Clone(next.VIPs))
	}
	var errs []error
	if !sameEncap(r.encap, next.Encap) {
		if err := r.dp.SetEncap(next.Encap); err != nil {
			errs = append(errs, fmt.Errorf("ipip: %w", err))
		} else {
			r.encap = next.Encap
		}
	}
	if !r.limitSet || r.newFlowLimit != next.NewFlowLimit {
		if err := r.dp.SetNewFlowLimit(next.NewFlowLimit); err != nil {
			errs = append(errs, fmt.Errorf("conntrack.new_flow_limit: %w", err))
		} else {
			r.newFlowLimit, r.limitSet = next.NewFlowLimit, true
		}
	}
	return res, errors.Join(errs...)
}

// restoreEncap goes back to the encapsulation old after a refused change.
// The datapath refuses it while a VIP that was written needs the newer
// prefixes; the union then stays, which serves every VIP.
func (r *Reconciler) restoreEncap(old datapath.EncapConfig) {
	if sameEncap(r.encap, old) {
		return
	}
	if err := r.dp.SetEncap(old); err != nil {
		r.log.Warn("ipip: the encapsulation sources stay the union of the old and the refused ones", "err", err)
		return
	}
	r.encap = old
}

// forwarding turns forwarding on for s's interfaces if s has an ipip VIP.
func (r *Reconciler) forwarding(s State) error {
	if !slices.ContainsFunc(s.VIPs, func(v config.VIP) bool { return v.Mode == config.ModeIPIP }) {
		return nil
	}
	for _, ifname := range s.Interfaces {
		if err := r.forward(ifname); err != nil {
			return fmt.Errorf("ipip needs forwarding on %s: %w", ifname, err)
		}
	}
	return nil
}

// unionEncap returns a with the source prefixes that only b has.
func unionEncap(a, b datapath.EncapConfig) datapath.EncapConfig {
	u := b
	if !u.SourceV4.IsValid() {
		u.SourceV4 = a.SourceV4
	}
	if !u.SourceV6.IsValid() {
		u.SourceV6 = a.SourceV6
	}
	return u
}

func sameEncap(a, b datapath.EncapConfig) bool {
	return a.SourceV4 == b.SourceV4 && a.SourceV6 == b.SourceV6 && bytes.Equal(a.GatewayMAC, b.GatewayMAC)
}

// pruneHealth forgets the health of backends that are no longer desired
// or no longer checked: an unchecked backend counts as up, and a backend
// added again starts unknown.
func (r *Reconciler) pruneHealth() {
	checked := make(map[datapath.VIP]map[netip.Addr]bool)
	for _, v := range r.desired.VIPs {
		m := make(map[netip.Addr]bool)
		for _, b := range v.Backends {
			m[b.Address] = b.HealthCheck != nil
		}
		checked[Key(v)] = m
	}
	for k, m := range r.health {
		for a := range m {
			if !checked[k][a] {
				delete(m, a)
			}
		}
		if len(m) == 0 {
			delete(r.health, k)
		}
	}
}

// plan converts the desired VIPs into datapath targets and checks them
// all; it writes nothing.
func (r *Reconciler) plan(s State) (map[datapath.VIP]target, error) {
	desired := s.VIPs
	maxVIPs, maxBackends := r.dp.Capacity()
	if len(desired) > maxVIPs {
		return nil, fmt.Errorf("%d vips: too many, the maximum is %d", len(desired), maxVIPs)
	}
	plan := make(map[datapath.VIP]target, len(desired))
	var errs []error
	pairs := 0
	for i, v := range desired {
		key := Key(v)
		if _, dup := plan[key]; dup {
			errs = append(errs, fmt.Errorf("vips[%d]: vip %s appears twice", i, key))
			continue
		}
		t, err := r.targetOf(v, s.Encap, s.Conntrack.TimeoutsOf(&v))
		if err != nil {
			errs = append(errs, fmt.Errorf("vips[%d] (%s): %w", i, key, err))
			continue
		}
		pairs += len(t.backends)
		plan[key] = t
	}
	if pairs > maxBackends {
		errs = append(errs, fmt.Errorf("%d backends in all vips: too many, the maximum is %d", pairs, maxBackends))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, invalid{err}
	}
	return plan, nil
}

func (r *Reconciler) targetOf(v config.VIP, encap datapath.EncapConfig, timeouts datapath.ConnTimeouts) (target, error) {
	key := Key(v)
	mode, err := modeOf(v.Mode)
	if err != nil {
		return target{}, err
	}
	t := target{cfg: datapath.VIPConfig{
		Mode:            mode,
		RingSize:        v.RingSize,
		NoConntrack:     !v.Conntrack,
		SourceHash:      v.Scheduler == config.SchedulerSourceHash,
		PassUnparseable: v.Fragments == config.FragmentsPass,
		Timeouts:        timeouts.Normal(key.Proto),
	}}
	onDown, allDown := config.DefaultOnDown, config.DefaultAllDown
	if v.HealthCheck != nil && v.HealthCheck.OnDown != "" {
		onDown = v.HealthCheck.OnDown
	}
	if v.HealthCheck != nil && v.HealthCheck.AllDown != "" {
		allDown = v.HealthCheck.AllDown
	}
	// fail-open: with every backend down, serve as if all were up (a
	// broken check must not take the whole service down).
	// An unchecked backend counts as up whatever was observed before.
	down := func(b config.Backend) bool { return b.HealthCheck != nil && r.health[key][b.Address] == Down }
	failOpen := false
	if allDown == config.AllDownFailOpen && len(v.Backends) > 0 {
		failOpen = true
		for _, b := range v.Backends {
			failOpen = failOpen && down(b)
		}
	}
	for j, b := range v.Backends {
		if mode == datapath.ModeIPIP {
			if err := encapCovers(encap, b.Address); err != nil {
				return target{}, fmt.Errorf("backends[%d] (%s): %w", j, b.Address, err)
			}
		}
		weight := b.Weight
		if down(b) && !failOpen {
			if onDown != config.OnDownDrain {
				continue // out of the ring; its flows re-hash
			}
			weight = 0
		}
		// Only dsr uses a MAC. Another mode's backend gets none, as the
		// datapath reads it back after a restart, so that the two compare.
		var mac net.HardwareAddr
		if mode == datapath.ModeDSR {
			if mac = b.MAC; len(mac) == 0 {
				if mac, err = r.resolve(b.Address); err != nil {
					return target{}, fmt.Errorf("backends[%d] (%s): %w", j, b.Address, err)
				}
			}
		}
		t.backends = append(t.backends, datapath.Backend{Addr: b.Address, MAC: mac, Weight: weight})
	}
	if err := datapath.Validate(key, t.cfg, t.backends); err != nil {
		return target{}, err
	}
	return t, nil
}

// modeOf returns the datapath's forwarding mode for a configured one.
func modeOf(m config.Mode) (datapath.Mode, error) {
	switch m {
	case config.ModeDSR:
		return datapath.ModeDSR, nil
	case config.ModeIPIP:
		return datapath.ModeIPIP, nil
	}
	return 0, fmt.Errorf("unknown mode %q: want %s", m, strings.Join(config.ModeNames(), " or "))
}

// encapCovers says what an ipip backend at addr lacks in encap, if
// anything: the outer source prefix of its family.
func encapCovers(encap datapath.EncapConfig, addr netip.Addr) error {
	switch {
	case addr.Is4() && !encap.SourceV4.IsValid():
		return fmt.Errorf("ipip to the IPv4 backend %s needs an outer source prefix: set ipip.source_v4 (e.g. 198.18.1.0/24, routed back to this node)", addr)
	case addr.Is6() && !encap.SourceV6.IsValid():
		return fmt.Errorf("ipip to the IPv6 backend %s needs an outer source prefix: set ipip.source_v6 (e.g. 2001:db8:4::/64, routed back to this node)", addr)
	}
	return nil
}

// apply writes the plan: VIPs that differ from the datapath are set, VIPs
// the plan lacks are removed, the rest is left alone.
func (r *Reconciler) apply(plan map[datapath.VIP]target) (Result, error) {
	start := time.Now()
	var res Result
	current := make(map[datapath.VIP]datapath.VIPState)
	for _, s := range r.dp.VIPs() {
		current[s.VIP] = s
	}
	var errs []error
	keys := make([]datapath.VIP, 0, len(plan))
	for k := range plan {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, datapath.VIP.Compare)
	var changes []datapath.VIPChange
	for _, k := range keys {
		t := plan[k]
		if cur, exists := current[k]; exists && same(cur, t) {
			res.Unchanged++
			continue
		}
		changes = append(changes, datapath.VIPChange{VIP: k, Config: t.cfg, Backends: t.backends})
	}
	// One call, so that the datapath swaps every changed ring with one
	// batched map update (one RCU wait instead of one per VIP).
	if len(changes) > 0 {
		for i, err := range r.dp.SetVIPs(changes) {
			k := changes[i].VIP
			switch _, exists := current[k]; {
			case err != nil:
				errs = append(errs, err)
			case exists:
				res.Changed = append(res.Changed, k)
			default:
				res.Added = append(res.Added, k)
			}
		}
	}
	for k := range current {
		if _, ok := plan[k]; ok {
			continue
		}
		if err := r.dp.RemoveVIP(k); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Removed = append(res.Removed, k)
	}
	slices.SortFunc(res.Removed, datapath.VIP.Compare)
	res.Duration = time.Since(start)
	if len(res.Added)+len(res.Changed)+len(res.Removed) > 0 {
		if r.observe != nil {
			r.observe(res.Duration)
		}
		r.log.Info("reconciled", "added", len(res.Added), "changed", len(res.Changed),
			"removed", len(res.Removed), "unchanged", res.Unchanged, "duration", res.Duration)
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("write datapath: %w", err)
	}
	return res, nil
}

func same(cur datapath.VIPState, t target) bool {
	cfg := t.cfg
	if cfg.RingSize == 0 {
		cfg.RingSize = cur.Config.RingSize
	}
	if cur.Config != cfg || len(cur.Backends) != len(t.backends) {
		return false
	}
	want := slices.Clone(t.backends)
	slices.SortFunc(want, func(a, b datapath.Backend) int { return a.Addr.Compare(b.Addr) })
	for i, b := range want {
		c := cur.Backends[i]
		if c.Addr != b.Addr || c.Weight != b.Weight || !bytes.Equal(c.MAC, b.MAC) {
			return false
		}
	}
	return true
}

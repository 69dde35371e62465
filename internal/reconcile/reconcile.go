// Package reconcile turns desired state (the config file plus API changes)
// and observed state (backend health) into writes. It is the only writer
// of the datapath's configuration (VIPs, backends and their rings, the
// encapsulation settings, the new-flow limit) and of the forwarding
// sysctls ipip needs, and it tells the health checker which backends to
// probe. Every change, whatever its source (the config at start, a SIGHUP
// reload, the API's apply or its edits, a health transition), takes one
// lock, is planned first, validated and with every MAC resolved, and is
// applied only if the plan holds; VIPs whose target did not change are not
// touched.
//
// A whole state (the config, a reload, apply) is planned whole; an edit of
// one VIP, a health transition or a changed MAC plans only the VIPs it can
// change. Either compares its plan with the reconciler's own record of
// what it wrote, not with the datapath read back: with a thousand VIPs of
// a hundred backends, reading the datapath's state takes longer than
// building and writing the one ring an edit changes.
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
	"github.com/fulcrum-lb/fulcrum/internal/ringsize"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// Dataplane is what the reconciler needs of the datapath.
type Dataplane interface {
	// SetVIPs sets many VIPs at once (their rings built in parallel) and
	// returns each one's error at its index.
	SetVIPs(changes []datapath.VIPChange) []error
	// RemoveVIPs removes many VIPs at once (their rings go together, the
	// grace periods their deletions wait for overlapping)
	// and returns each one's error at its index.
	RemoveVIPs(vips []datapath.VIP) []error
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

	// written is what the datapath holds for each VIP, as the reconciler
	// wrote it: read from the datapath once (New, which adopts what an
	// earlier daemon wrote), then kept with every write, and read back
	// whole only after a write failed (see apply).
	written map[datapath.VIP]datapath.VIPState
	// pairs is each desired VIP's planned backend count, so that a plan
	// of some VIPs checks the capacity of all.
	pairs map[datapath.VIP]int
	// failed are the VIPs whose last write failed: every plan covers them
	// until one writes them.
	failed map[datapath.VIP]bool

	health map[datapath.VIP]map[netip.Addr]Health
	// sizes chooses the ring size of VIPs with ring_size: auto.
	sizes ringsize.Chooser
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
		pairs:  make(map[datapath.VIP]int),
		failed: make(map[datapath.VIP]bool),
		health: make(map[datapath.VIP]map[netip.Addr]Health),
	}
	r.readWritten()
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
	return r.update(ctx, func() (change, error) { return change{next: s, edited: true}, nil })
}

// change is what an update makes of the desired state.
type change struct {
	next State
	// edited says whether next's VIPs come from a change of them, rather
	// than from observed state (health, a MAC).
	edited bool
	// touched are the only VIPs whose target can differ from the desired
	// state's: the plan covers them (and those whose last write failed)
	// and no others. nil: every VIP.
	touched []datapath.VIP
}

// observed is an update's change when nothing but observed state changed,
// and only for the VIPs keys: the desired state as it is, its VIPs
// unedited.
func (r *Reconciler) observed(keys func() []datapath.VIP) func() (change, error) {
	return func() (change, error) { return change{next: r.desired, touched: keys()}, nil }
}

// edit is the change of the desired state to vips, which differ from its
// VIPs in key only.
func (r *Reconciler) edit(vips []config.VIP, key datapath.VIP) change {
	s := r.desired
	s.VIPs = vips
	return change{next: s, edited: true, touched: []datapath.VIP{key}}
}

// AddVIP adds one VIP to the desired state.
func (r *Reconciler) AddVIP(ctx context.Context, v config.VIP) error {
	_, err := r.update(ctx, func() (change, error) {
		if r.find(Key(v)) >= 0 {
			return change{}, fmt.Errorf("vip %s %w", Key(v), ErrExists)
		}
		return r.edit(append(slices.Clone(r.desired.VIPs), v), Key(v)), nil
	})
	return err
}

// RemoveVIP removes one VIP from the desired state.
func (r *Reconciler) RemoveVIP(ctx context.Context, key datapath.VIP) error {
	_, err := r.update(ctx, func() (change, error) {
		i := r.find(key)
		if i < 0 {
			return change{}, fmt.Errorf("vip %s: %w", key, ErrNotFound)
		}
		return r.edit(slices.Delete(slices.Clone(r.desired.VIPs), i, i+1), key), nil
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
	_, err := r.update(ctx, r.observed(func() []datapath.VIP { return []datapath.VIP{key} }))
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
	_, err := r.update(ctx, func() (change, error) {
		i := r.find(key)
		if i < 0 {
			return change{}, fmt.Errorf("vip %s: %w", key, ErrNotFound)
		}
		next := slices.Clone(r.desired.VIPs)
		if err := edit(&next[i]); err != nil {
			return change{}, err
		}
		return r.edit(next, key), nil
	})
	return err
}

// target is what one VIP's datapath entry must become.
type target struct {
	cfg      datapath.VIPConfig
	backends []datapath.Backend
}

// commit plans c.next (the VIPs c touched, or all), writes it and, if the
// VIPs could be written, makes it the desired state. r.mu is held. Only
// update calls it: a plan reads only MACs resolved already, and update
// resolves the others with r.mu released.
//
// The encapsulation is the union of the old and the new source prefixes
// while the VIPs change, then exactly the new ones: neither an old ipip
// VIP that is still live nor a new one is ever without the prefix of its
// backends' family.
func (r *Reconciler) commit(c change) (Result, error) {
	next, edited := c.next, c.edited
	plan, err := r.plan(next, c.touched)
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
	r.keepPairs(plan)
	r.pruneHealth(plan)
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

// pruneHealth forgets the health of the planned VIPs' backends that are no
// longer desired or no longer checked: an unchecked backend counts as up,
// and a backend added again starts unknown. The other VIPs did not change.
func (r *Reconciler) pruneHealth(p plan) {
	for k, m := range r.health {
		if p.covered != nil && !p.covered[k] {
			continue
		}
		v, ok := p.vips[k]
		if !ok {
			delete(r.health, k)
			continue
		}
		checked := make(map[netip.Addr]bool, len(v.Backends))
		for _, b := range v.Backends {
			checked[b.Address] = b.HealthCheck != nil
		}
		for a := range m {
			if !checked[a] {
				delete(m, a)
			}
		}
		if len(m) == 0 {
			delete(r.health, k)
		}
	}
}

// keepPairs records the backend counts of a plan that was written.
func (r *Reconciler) keepPairs(p plan) {
	if p.covered == nil {
		clear(r.pairs)
	}
	for k := range p.covered {
		delete(r.pairs, k)
	}
	for k, t := range p.targets {
		r.pairs[k] = len(t.backends)
	}
}

// plan is what one reconcile decides: the targets of the VIPs it covers.
type plan struct {
	targets map[datapath.VIP]target
	// vips are the planned VIPs' desired configurations.
	vips map[datapath.VIP]config.VIP
	// covered are the VIPs the plan decides on, a covered VIP without a
	// target being removed; nil: every VIP, and every VIP without a
	// target is removed.
	covered map[datapath.VIP]bool
	// others counts the desired VIPs the plan leaves as they are.
	others int
}

// plan converts the desired VIPs into datapath targets and checks them:
// those touched and those whose last write failed, or all if touched is
// nil. The capacity check counts every VIP, the others as last planned.
// It writes nothing.
func (r *Reconciler) plan(s State, touched []datapath.VIP) (plan, error) {
	desired := s.VIPs
	maxVIPs, maxBackends := r.dp.Capacity()
	if len(desired) > maxVIPs {
		return plan{}, fmt.Errorf("%d vips: too many, the maximum is %d", len(desired), maxVIPs)
	}
	p := plan{targets: make(map[datapath.VIP]target), vips: make(map[datapath.VIP]config.VIP)}
	if touched != nil {
		p.covered = make(map[datapath.VIP]bool, len(touched)+len(r.failed))
		for _, k := range touched {
			p.covered[k] = true
		}
		for k := range r.failed {
			p.covered[k] = true
		}
	}
	var errs []error
	pairs := 0
	for i, v := range desired {
		key := Key(v)
		if p.covered != nil && !p.covered[key] {
			pairs += r.pairs[key]
			p.others++
			continue
		}
		if _, dup := p.targets[key]; dup {
			errs = append(errs, fmt.Errorf("vips[%d]: vip %s appears twice", i, key))
			continue
		}
		t, err := r.targetOf(v, s.Encap, s.Conntrack.TimeoutsOf(&v))
		if err != nil {
			errs = append(errs, fmt.Errorf("vips[%d] (%s): %w", i, key, err))
			continue
		}
		pairs += len(t.backends)
		p.targets[key] = t
		p.vips[key] = v
	}
	if pairs > maxBackends {
		errs = append(errs, fmt.Errorf("%d backends in all vips: too many, the maximum is %d", pairs, maxBackends))
	}
	if err := errors.Join(errs...); err != nil {
		return plan{}, invalid{err}
	}
	return p, nil
}

func (r *Reconciler) targetOf(v config.VIP, encap datapath.EncapConfig, timeouts datapath.ConnTimeouts) (target, error) {
	key := Key(v)
	mode, err := modeOf(v.Mode)
	if err != nil {
		return target{}, err
	}
	size := v.RingSize
	if v.RingSizeAuto {
		if size, err = r.autoSize(v); err != nil {
			return target{}, err
		}
	}
	t := target{cfg: datapath.VIPConfig{
		Mode:            mode,
		RingSize:        size,
		NoConntrack:     !v.Conntrack,
		SourceHash:      v.Scheduler == config.SchedulerSourceHash,
		RoundRobin:      v.Scheduler == config.SchedulerRoundRobin,
		ResponseTime:    v.ResponseTime.Passive(),
		LeastConn:       v.Scheduler == config.SchedulerLeastConn,
		LeastTime:       v.Scheduler == config.SchedulerLeastTime,
		PassUnparseable: v.Fragments == config.FragmentsPass,
		Timeouts:        timeouts.Normal(key.Proto),
	}}
	if t.cfg.SourceRanges, err = datapath.NewSourceRanges(v.SourceRanges); err != nil {
		return target{}, err
	}
	if t.cfg.Pools, err = poolsOf(v.Pools); err != nil {
		return target{}, err
	}
	weights := ringWeights(v, r.health[key])
	for j, b := range v.Backends {
		if mode == datapath.ModeIPIP {
			if err := encapCovers(encap, b.Address); err != nil {
				return target{}, fmt.Errorf("backends[%d] (%s): %w", j, b.Address, err)
			}
		}
		if !weights[j].in {
			continue // out of the ring; its flows re-hash
		}
		weight := weights[j].weight
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

// ringWeight is a configured backend's place in its VIP's ring.
type ringWeight struct {
	weight uint32 // in the ring; 0: drained, no new flows
	in     bool   // false: out of the ring, its flows re-hash
}

// ringWeights returns, for each of v's backends in order, its place in
// v's ring given health (v's backends' health by address, as HealthOf
// has it under v's key). A backend down (checked, and seen down) is out
// of the ring (on_down: rehash) or in it with weight 0 (drain); but with
// every backend down, a VIP that fails open (all_down: fail-open) serves
// as if all were up, as a broken check must not take the whole service
// down. An unchecked backend counts as up whatever was observed before.
func ringWeights(v config.VIP, health map[netip.Addr]Health) []ringWeight {
	onDown, allDown := config.DefaultOnDown, config.DefaultAllDown
	if v.HealthCheck != nil && v.HealthCheck.OnDown != "" {
		onDown = v.HealthCheck.OnDown
	}
	if v.HealthCheck != nil && v.HealthCheck.AllDown != "" {
		allDown = v.HealthCheck.AllDown
	}
	down := func(b config.Backend) bool { return b.HealthCheck != nil && health[b.Address] == Down }
	failOpen := false
	if allDown == config.AllDownFailOpen && len(v.Backends) > 0 {
		failOpen = true
		for _, b := range v.Backends {
			failOpen = failOpen && down(b)
		}
	}
	out := make([]ringWeight, len(v.Backends))
	for i, b := range v.Backends {
		switch {
		case !down(b) || failOpen:
			out[i] = ringWeight{weight: b.Weight, in: true}
		case onDown == config.OnDownDrain:
			out[i] = ringWeight{in: true}
		}
	}
	return out
}

// Serves reports whether v's ring, given health (as for ringWeights),
// has a backend that takes new flows (weight above 0): the ring the
// reconciler writes for v then does not drop them. BGP announces a VIP's
// address only while one of its VIPs serves; it asks here so that the
// two never disagree.
func Serves(v config.VIP, health map[netip.Addr]Health) bool {
	for _, w := range ringWeights(v, health) {
		if w.in && w.weight > 0 {
			return true
		}
	}
	return false
}

// autoSize chooses the ring size of a VIP with ring_size: auto from its
// configured backends and weights: not from those in service, so that a
// health change, which differs between nodes and comes and goes, never
// changes the size (and with it the slot of every flow); only an edit of
// the backends or weights can.
func (r *Reconciler) autoSize(v config.VIP) (uint32, error) {
	bs := make([]ringsize.Backend, len(v.Backends))
	for i, b := range v.Backends {
		// The name maglev.Build gets from the datapath.
		bs[i] = ringsize.Backend{Name: b.Address.String(), Weight: b.Weight}
	}
	c, err := r.sizes.Choose(bs, v.RingSizeMax)
	if err != nil {
		return 0, fmt.Errorf("ring_size auto: %w", err)
	}
	return c.Size, nil
}

// RingSizes returns the ring size written for each VIP: the chosen one
// of a VIP with ring_size: auto.
func (r *Reconciler) RingSizes() map[datapath.VIP]uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[datapath.VIP]uint32, len(r.written))
	for k, s := range r.written {
		out[k] = s.Config.RingSize
	}
	return out
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

// apply writes the plan: planned VIPs that differ from what was written
// are set, covered VIPs without a target are removed, the rest is left
// alone. The record of what was written follows every write; after a
// failed one it is read back from the datapath, which a failure can leave
// half-way.
func (r *Reconciler) apply(p plan) (Result, error) {
	start := time.Now()
	res := Result{Unchanged: p.others}
	var errs []error
	keys := make([]datapath.VIP, 0, len(p.targets))
	for k := range p.targets {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, datapath.VIP.Compare)
	var changes []datapath.VIPChange
	for _, k := range keys {
		t := p.targets[k]
		if cur, exists := r.written[k]; exists && same(cur, t) {
			res.Unchanged++
			delete(r.failed, k)
			continue
		}
		changes = append(changes, datapath.VIPChange{VIP: k, Config: t.cfg, Backends: t.backends})
	}
	// One call, so that the datapath builds the changed rings in
	// parallel and writes them all before it publishes any.
	if len(changes) > 0 {
		for i, err := range r.dp.SetVIPs(changes) {
			c := changes[i]
			_, exists := r.written[c.VIP]
			switch {
			case err != nil:
				errs = append(errs, err)
				r.failed[c.VIP] = true
				continue
			case exists:
				res.Changed = append(res.Changed, c.VIP)
			default:
				res.Added = append(res.Added, c.VIP)
			}
			r.written[c.VIP] = writtenState(c)
			delete(r.failed, c.VIP)
		}
	}
	var gone []datapath.VIP
	for k := range r.written {
		if _, ok := p.targets[k]; !ok && (p.covered == nil || p.covered[k]) {
			gone = append(gone, k)
		}
	}
	for k := range p.covered {
		if _, ok := p.targets[k]; !ok {
			delete(r.failed, k) // not desired; its removal is retried below if it was written
		}
	}
	slices.SortFunc(gone, datapath.VIP.Compare)
	if len(gone) > 0 {
		for i, err := range r.dp.RemoveVIPs(gone) {
			k := gone[i]
			if err != nil {
				errs = append(errs, err)
				r.failed[k] = true
				continue
			}
			delete(r.written, k)
			res.Removed = append(res.Removed, k)
		}
	}
	res.Duration = time.Since(start)
	if len(res.Added)+len(res.Changed)+len(res.Removed) > 0 {
		if r.observe != nil {
			r.observe(res.Duration)
		}
		r.log.Info("reconciled", "added", len(res.Added), "changed", len(res.Changed),
			"removed", len(res.Removed), "unchanged", res.Unchanged, "duration", res.Duration)
	}
	if err := errors.Join(errs...); err != nil {
		r.readWritten()
		return res, fmt.Errorf("write datapath: %w", err)
	}
	return res, nil
}

// readWritten reads the record of what was written from the datapath.
func (r *Reconciler) readWritten() {
	r.written = make(map[datapath.VIP]datapath.VIPState)
	for _, s := range r.dp.VIPs() {
		r.written[s.VIP] = s
	}
}

// writtenState is what the datapath holds after c was written, as VIPs
// would return it: the default ring size filled in, backends by address.
func writtenState(c datapath.VIPChange) datapath.VIPState {
	s := datapath.VIPState{VIP: c.VIP, Config: c.Config, Backends: slices.Clone(c.Backends)}
	if s.Config.RingSize == 0 {
		s.Config.RingSize = maglev.DefaultSize
	}
	slices.SortFunc(s.Backends, func(a, b datapath.Backend) int { return a.Addr.Compare(b.Addr) })
	return s
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

// poolsOf is a VIP's configured pools as the datapath takes them. A pool's
// backends are the VIP's, so health and drain reach them through the
// VIP's backend list: a pool backend health took out of it is down.
func poolsOf(pools []config.Pool) (datapath.Pools, error) {
	in := make([]datapath.Pool, len(pools))
	for i, p := range pools {
		in[i] = datapath.Pool{Name: p.Name, Prefixes: p.AllPrefixes(), Backends: p.Backends}
		if p.Fallback == config.PoolFallbackDrop {
			in[i].Fallback = datapath.FallbackDrop
		}
	}
	return datapath.NewPools(in)
}

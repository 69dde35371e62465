// Package reconcile turns desired state (the config file plus API changes)
// and observed state (backend health, later the VRRP role) into datapath
// writes. It is the only writer of the datapath's maps. Every change is
// planned whole first, validated and with every MAC resolved, and applied
// only if the plan holds; VIPs whose target did not change are not touched.
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

	desired []config.VIP
	health  map[datapath.VIP]map[netip.Addr]Health
	// While update plans, the MACs it resolved with r.mu released, and
	// the addresses the plan found neither there nor followed (macs.go).
	resolved map[netip.Addr]resolution
	missing  map[netip.Addr]bool
}

// New returns a reconciler over dp. observe, if not nil, receives the
// duration of every reconcile that wrote something.
func New(dp Dataplane, macs MACResolver, log *slog.Logger, observe func(time.Duration)) *Reconciler {
	return &Reconciler{
		dp: dp, macs: macs, log: log, observe: observe,
		health: make(map[datapath.VIP]map[netip.Addr]Health),
	}
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
	return slices.Clone(r.desired)
}

// Replace makes vips the whole desired state (a config load or reload).
func (r *Reconciler) Replace(ctx context.Context, vips []config.VIP) (Result, error) {
	vips = slices.Clone(vips)
	return r.update(ctx, func() ([]config.VIP, error) { return vips, nil })
}

// AddVIP adds one VIP to the desired state.
func (r *Reconciler) AddVIP(ctx context.Context, v config.VIP) error {
	_, err := r.update(ctx, func() ([]config.VIP, error) {
		if r.find(Key(v)) >= 0 {
			return nil, fmt.Errorf("vip %s %w", Key(v), ErrExists)
		}
		return append(slices.Clone(r.desired), v), nil
	})
	return err
}

// RemoveVIP removes one VIP from the desired state.
func (r *Reconciler) RemoveVIP(ctx context.Context, key datapath.VIP) error {
	_, err := r.update(ctx, func() ([]config.VIP, error) {
		i := r.find(key)
		if i < 0 {
			return nil, fmt.Errorf("vip %s: %w", key, ErrNotFound)
		}
		return slices.Delete(slices.Clone(r.desired), i, i+1), nil
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

// SetHealth records a backend's observed health and reconciles its VIP. A
// backend gone down has its MAC resolved again: it may be down because it
// was replaced by a host with another MAC.
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
	_, err := r.update(ctx, func() ([]config.VIP, error) { return r.desired, nil })
	return err
}

// HealthOf returns the observed health of every desired backend.
func (r *Reconciler) HealthOf() map[datapath.VIP]map[netip.Addr]Health {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[datapath.VIP]map[netip.Addr]Health)
	for _, v := range r.desired {
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
	return slices.IndexFunc(r.desired, func(v config.VIP) bool { return Key(v) == key })
}

func (r *Reconciler) editVIP(ctx context.Context, key datapath.VIP, edit func(*config.VIP) error) error {
	_, err := r.update(ctx, func() ([]config.VIP, error) {
		i := r.find(key)
		if i < 0 {
			return nil, fmt.Errorf("vip %s: %w", key, ErrNotFound)
		}
		next := slices.Clone(r.desired)
		if err := edit(&next[i]); err != nil {
			return nil, err
		}
		return next, nil
	})
	return err
}

// target is what one VIP's datapath entry must become.
type target struct {
	cfg      datapath.VIPConfig
	backends []datapath.Backend
}

// commit plans desired, applies the plan and, if that worked, makes
// desired the new desired state. r.mu is held. Only update calls it: a
// plan reads only MACs resolved already, and update resolves the others
// with r.mu released.
func (r *Reconciler) commit(desired []config.VIP) (Result, error) {
	plan, err := r.plan(desired)
	if err != nil {
		return Result{}, err
	}
	res, err := r.apply(plan)
	if err != nil {
		return res, err
	}
	r.desired = desired
	r.pruneHealth()
	return res, nil
}

// pruneHealth forgets the health of backends that are no longer desired
// or no longer checked: an unchecked backend counts as up, and a backend
// added again starts unknown.
func (r *Reconciler) pruneHealth() {
	checked := make(map[datapath.VIP]map[netip.Addr]bool)
	for _, v := range r.desired {
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
func (r *Reconciler) plan(desired []config.VIP) (map[datapath.VIP]target, error) {
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
		t, err := r.targetOf(v)
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

func (r *Reconciler) targetOf(v config.VIP) (target, error) {
	key := Key(v)
	mode, err := datapath.ParseMode(v.Mode)
	if err != nil {
		return target{}, err
	}
	t := target{cfg: datapath.VIPConfig{
		Mode:            mode,
		RingSize:        v.RingSize,
		NoConntrack:     !v.Conntrack,
		SourceHash:      v.Scheduler == "source-hash",
		PassUnparseable: v.Fragments == "pass",
	}}
	onDown, allDown := "rehash", "drop"
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
	if allDown == "fail-open" && len(v.Backends) > 0 {
		failOpen = true
		for _, b := range v.Backends {
			failOpen = failOpen && down(b)
		}
	}
	for j, b := range v.Backends {
		weight := b.Weight
		if down(b) && !failOpen {
			if onDown != "drain" {
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

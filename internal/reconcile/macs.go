package reconcile

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// MACResolver finds and follows the hardware address of a dsr backend whose
// MAC the configuration leaves out (internal/neighbor).
type MACResolver interface {
	// Cached returns the MAC the resolver holds for addr, without waiting.
	Cached(addr netip.Addr) (net.HardwareAddr, bool)
	// Resolve asks the network for addr's MAC until ctx ends; from then
	// on Cached returns it and the resolver follows its changes.
	Resolve(ctx context.Context, addr netip.Addr) (net.HardwareAddr, error)
	// Reresolve asks the network again for the MAC of an address the
	// resolver follows, without waiting for the answer.
	Reresolve(addr netip.Addr) error
}

// resolveTimeout bounds the resolution of one backend's MAC.
const resolveTimeout = 2 * time.Second

// resolveParallel is how many MACs update resolves at once.
const resolveParallel = 16

// resolution is the outcome of one backend's MAC resolution.
type resolution struct {
	mac net.HardwareAddr
	err error
}

// errUnresolved fails a plan that needs a MAC not resolved yet; update
// resolves it and plans again.
var errUnresolved = errors.New("mac not resolved yet")

// update makes next() the desired state: it plans it (only the VIPs it
// touched, if it says), applies the plan and keeps it if that worked. next
// runs under r.mu, on the state as it is then, and may run more than once: the MACs a plan lacks are resolved
// with r.mu released (in parallel, each for up to resolveTimeout) and the
// plan is made again, so that a slow or absent backend holds up no other
// change, health transition or reader. Each address is resolved at most
// once per update, so the loop ends.
func (r *Reconciler) update(ctx context.Context, next func() (change, error)) (Result, error) {
	resolved := make(map[netip.Addr]resolution)
	for {
		res, missing, err := r.tryCommit(next, resolved)
		if len(missing) == 0 {
			return res, err
		}
		r.resolveAll(ctx, missing, resolved)
	}
}

// tryCommit commits next() under r.mu. If the plan lacked MACs, it wrote
// nothing and returns their addresses.
func (r *Reconciler) tryCommit(next func() (change, error), resolved map[netip.Addr]resolution) (Result, []netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := next()
	if err != nil {
		return Result{}, nil, err
	}
	r.resolved, r.missing = resolved, make(map[netip.Addr]bool)
	defer func() { r.resolved, r.missing = nil, nil }()
	res, err := r.commit(c)
	var missing []netip.Addr
	for a := range r.missing {
		missing = append(missing, a)
	}
	return res, missing, err
}

// resolveAll resolves addrs into out, resolveParallel at a time.
func (r *Reconciler) resolveAll(ctx context.Context, addrs []netip.Addr, out map[netip.Addr]resolution) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, resolveParallel)
	for _, a := range addrs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
			defer cancel()
			mac, err := r.macs.Resolve(ctx, a)
			mu.Lock()
			out[a] = resolution{mac, err}
			mu.Unlock()
		}()
	}
	wg.Wait()
}

// resolve returns the MAC of a dsr backend that has none configured: the
// one the resolver follows, or the outcome of this update's resolution. It
// never waits (r.mu is held): an address with neither is noted in
// r.missing for update to resolve.
func (r *Reconciler) resolve(addr netip.Addr) (net.HardwareAddr, error) {
	if r.macs == nil {
		return nil, errors.New("no mac given and none can be resolved: set the backend's mac")
	}
	if mac, ok := r.macs.Cached(addr); ok {
		return mac, nil
	}
	if res, ok := r.resolved[addr]; ok {
		return res.mac, res.err
	}
	if r.missing == nil { // a plan outside update: it fails, without a panic
		r.missing = make(map[netip.Addr]bool)
	}
	r.missing[addr] = true
	return nil, errUnresolved
}

// MACChanged re-plans the desired state after the MAC of addr, an address
// the resolver follows, changed to mac (neighbor.Resolver.Watch calls it):
// the VIPs with a dsr backend at addr are written with the new MAC, the
// others are left alone.
func (r *Reconciler) MACChanged(ctx context.Context, addr netip.Addr, mac net.HardwareAddr) {
	r.log.Info("neighbour's mac changed", "addr", addr.String(), "mac", mac.String())
	_, err := r.update(ctx, r.observed(func() []datapath.VIP { return r.resolvedAt(addr) }))
	if err != nil && ctx.Err() == nil {
		r.log.Error("apply a changed mac", "addr", addr.String(), "mac", mac.String(), "err", err)
	}
}

// resolvedAt returns the desired VIPs with a backend at addr whose MAC is
// not configured: those a change of addr's MAC can rewrite (the dsr ones).
func (r *Reconciler) resolvedAt(addr netip.Addr) []datapath.VIP {
	var keys []datapath.VIP
	for _, v := range r.desired.VIPs {
		if slices.ContainsFunc(v.Backends, func(b config.Backend) bool { return b.Address == addr && len(b.MAC) == 0 }) {
			keys = append(keys, Key(v))
		}
	}
	return keys
}

// reresolve asks the resolver for addr's MAC again, if it follows addr.
func (r *Reconciler) reresolve(addr netip.Addr) {
	if r.macs == nil {
		return
	}
	if err := r.macs.Reresolve(addr); err != nil {
		r.log.Warn("resolve a down backend's mac again", "backend", addr.String(), "err", err)
	}
}

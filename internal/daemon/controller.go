package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/apiserver"
	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/reconcile"
	"github.com/fulcrum-lb/fulcrum/internal/version"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// controller serves the API from the daemon's state.
type controller struct {
	d *Daemon
}

var _ apiserver.Controller = (*controller)(nil)

func (c *controller) Status(ctx context.Context) (api.Status, error) {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	s := api.Status{
		Version:    version.String(),
		Instance:   d.cfg.Instance,
		Started:    d.started,
		ConfigFile: d.opts.ConfigPath,
		Interfaces: slices.Clone(d.ifaces),
		VRRP:       d.VRRPState(),
		LastApply:  d.lastApply,
		Reconcile:  d.lastDur,
		Adopted:    d.dp.Adopted(),
		Layout:     d.dp.Layout().Version,
	}
	for _, v := range d.dp.VIPs() {
		s.VIPs++
		s.Backends += len(v.Backends)
	}
	if d.sync != nil {
		st, err := d.sync.status()
		if err != nil {
			return s, err
		}
		s.Sync = &st
	}
	return s, nil
}

func (c *controller) ListVIPs(ctx context.Context) ([]api.VIP, error) {
	health := c.d.rec.HealthOf()
	statuses := make(map[datapath.VIP]map[netip.Addr]healthStatus)
	if c.d.chk != nil {
		for _, s := range c.d.chk.Statuses() {
			if statuses[s.VIP] == nil {
				statuses[s.VIP] = make(map[netip.Addr]healthStatus)
			}
			statuses[s.VIP][s.Backend] = healthStatus{since: s.Since, err: s.LastError}
		}
	}
	sizes := c.d.rec.RingSizes()
	counts := c.d.connCounts()
	var rts map[datapath.VIP]map[netip.Addr]BackendRT
	if c.d.rt != nil {
		rts = c.d.rt.snapshot()
	}
	var out []api.VIP
	for _, v := range c.d.rec.Desired() {
		k := reconcile.Key(v)
		av := toAPI(v, health[k])
		if v.RingSizeAuto {
			av.RingSize = sizes[k] // the chosen size, as written
		}
		for i := range av.Backends {
			st := statuses[k][av.Backends[i].Address]
			av.Backends[i].HealthSince, av.Backends[i].HealthError = st.since, st.err
			n := counts[k][av.Backends[i].Address]
			av.Backends[i].Active, av.Backends[i].Inactive = n.Active, n.Inactive
			if v.ResponseTime != nil {
				rt := rts[k][av.Backends[i].Address]
				av.Backends[i].ResponseTime = &api.ResponseTime{Source: string(v.ResponseTime.Source), Cost: rt.Cost, Passive: rt.Passive, Active: rt.Active}
			}
		}
		out = append(out, av)
	}
	return out, nil
}

type healthStatus struct {
	since time.Time
	err   string
}

func toAPI(v config.VIP, health map[netip.Addr]reconcile.Health) api.VIP {
	conntrack := v.Conntrack
	out := api.VIP{
		VIPRef:    api.VIPRef{Protocol: v.Protocol, Address: v.Address, Port: v.Port},
		Name:      v.Name,
		Mode:      v.Mode.String(),
		Scheduler: v.Scheduler.String(),
		RingSize:  v.RingSize,
		Conntrack: &conntrack,
		Fragments: v.Fragments.String(),
		Backends:  []api.Backend{},
	}
	if v.RingSizeAuto {
		out.RingSizeAuto, out.RingSizeMax = true, v.RingSizeMax
	}
	for _, p := range v.SourceRanges {
		out.SourceRanges = append(out.SourceRanges, p.String())
	}
	for _, p := range v.Pools {
		ap := api.Pool{Name: p.Name, PrefixFile: p.PrefixFile, PrefixCount: len(p.Prefixes) + len(p.FilePrefixes),
			Backends: p.Backends, Fallback: p.Fallback.String()}
		for _, x := range p.Prefixes {
			ap.Prefixes = append(ap.Prefixes, x.String())
		}
		out.Pools = append(out.Pools, ap)
	}
	for _, b := range v.Backends {
		ab := api.Backend{Address: b.Address, Weight: b.Weight, Health: health[b.Address].String()}
		if len(b.MAC) > 0 {
			ab.MAC = b.MAC.String()
		}
		out.Backends = append(out.Backends, ab)
	}
	return out
}

// fromAPI turns an API VIP into a config VIP with config.ParseVIP, so the
// API accepts exactly what a config file accepts for a VIP, with the same
// defaults and the same error messages.
func fromAPI(v api.VIP) (config.VIP, error) {
	if len(v.Pools) > 0 {
		return config.VIP{}, invalidRequest(errors.New("pools: set a vip's pools in the configuration file (vips[].pools); the api lists them only"))
	}
	in := config.VIPFields{
		Name: v.Name, Address: v.Address, Port: v.Port, Protocol: v.Protocol,
		Mode: v.Mode, Scheduler: v.Scheduler, RingSize: v.RingSize, RingSizeAuto: v.RingSizeAuto, RingSizeMax: v.RingSizeMax,
		Conntrack: v.Conntrack, Fragments: v.Fragments, SourceRanges: v.SourceRanges,
	}
	for _, b := range v.Backends {
		in.Backends = append(in.Backends, backendFields(b))
	}
	cv, err := config.ParseVIP(in)
	if err != nil {
		return config.VIP{}, invalidRequest(err)
	}
	return cv, nil
}

// backendFields is an API backend as config.ParseVIP takes it. The API's
// weight is always given: 0 drains.
func backendFields(b api.Backend) config.BackendFields {
	w := b.Weight
	return config.BackendFields{Address: b.Address, Weight: &w, MAC: b.MAC}
}

// invalidRequest says a refused VIP or backend as the API does: each
// problem as "path: message", joined by "; ", as api.ErrInvalid.
func invalidRequest(err error) error {
	var verr *config.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	msgs := make([]string, len(verr.Problems))
	for i, p := range verr.Problems {
		msgs[i] = p.Path + ": " + p.Message
	}
	return fmt.Errorf("%w: %s", api.ErrInvalid, strings.Join(msgs, "; "))
}

func keyOf(ref api.VIPRef) (datapath.VIP, error) {
	p, err := datapath.ParseProto(ref.Protocol)
	if err != nil {
		return datapath.VIP{}, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	return datapath.VIP{Addr: ref.Address, Port: ref.Port, Proto: p}, nil
}

// classify maps reconciler errors onto the API's error kinds; anything
// else (the kernel refusing a write) stays a server error.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, api.ErrInvalid), errors.Is(err, api.ErrNotFound), errors.Is(err, api.ErrConflict):
		return err
	case errors.Is(err, reconcile.ErrNotFound):
		return fmt.Errorf("%w: %w", api.ErrNotFound, err)
	case errors.Is(err, reconcile.ErrExists):
		return fmt.Errorf("%w: %w", api.ErrConflict, err)
	case errors.Is(err, reconcile.ErrInvalid):
		return fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	return err
}

func (c *controller) AddVIP(ctx context.Context, v api.VIP) error {
	cv, err := fromAPI(v)
	if err != nil {
		return err
	}
	return classify(c.d.rec.AddVIP(ctx, cv))
}

func (c *controller) RemoveVIP(ctx context.Context, ref api.VIPRef) error {
	k, err := keyOf(ref)
	if err != nil {
		return err
	}
	return classify(c.d.rec.RemoveVIP(ctx, k))
}

func (c *controller) AddBackend(ctx context.Context, ref api.VIPRef, b api.Backend) error {
	k, err := keyOf(ref)
	if err != nil {
		return err
	}
	// The backend is checked against its VIP as it is now, as a file
	// checks it (family, mode, the VIP's health check). Should the VIP
	// change before AddBackend, the reconciler's plan checks it again.
	v, err := c.d.rec.VIP(k)
	if err != nil {
		return classify(err)
	}
	cb, err := config.ParseBackend(v, backendFields(b))
	if err != nil {
		return invalidRequest(err)
	}
	return classify(c.d.rec.AddBackend(ctx, k, cb))
}

func (c *controller) RemoveBackend(ctx context.Context, ref api.VIPRef, addr netip.Addr) error {
	k, err := keyOf(ref)
	if err != nil {
		return err
	}
	return classify(c.d.rec.RemoveBackend(ctx, k, addr))
}

func (c *controller) SetWeight(ctx context.Context, ref api.VIPRef, addr netip.Addr, weight uint32) error {
	k, err := keyOf(ref)
	if err != nil {
		return err
	}
	return classify(c.d.rec.SetWeight(ctx, k, addr, weight))
}

func (c *controller) Stats(ctx context.Context) (api.Stats, error) {
	prev, last, prevT, lastT := c.d.rates.snapshot()
	iv := lastT.Sub(prevT)
	rate := func(now, before uint64) float64 {
		if prevT.IsZero() || iv <= 0 || now < before {
			return 0
		}
		return float64(now-before) / iv.Seconds()
	}
	counter := func(now, before datapath.Counter) api.Counter {
		return api.Counter{Packets: now.Packets, Bytes: now.Bytes,
			PacketRate: rate(now.Packets, before.Packets), ByteRate: rate(now.Bytes, before.Bytes)}
	}
	s := api.Stats{Time: lastT, Interval: iv, Verdicts: make(map[string]uint64)}
	if prevT.IsZero() {
		s.Interval = 0
	}
	for _, st := range datapath.AllStats() {
		s.Verdicts[st.String()] = last.Stat(st)
	}
	vips := make([]datapath.VIP, 0, len(last.VIPs))
	for v := range last.VIPs {
		vips = append(vips, v)
	}
	slices.SortFunc(vips, func(a, b datapath.VIP) int { return strings.Compare(a.String(), b.String()) })
	conns := c.d.connCounts()
	for _, v := range vips {
		vs := api.VIPStats{VIP: api.VIPRef{Protocol: v.Proto.String(), Address: v.Addr, Port: v.Port},
			Counter: counter(last.VIPs[v], prev.VIPs[v])}
		addrs := make([]netip.Addr, 0, len(last.Backends[v]))
		for a := range last.Backends[v] {
			addrs = append(addrs, a)
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		for _, a := range addrs {
			n := conns[v][a]
			vs.Backends = append(vs.Backends, api.BackendStats{Address: a, Counter: counter(last.Backends[v][a], prev.Backends[v][a]),
				Active: n.Active, Inactive: n.Inactive})
		}
		s.VIPs = append(s.VIPs, vs)
	}
	return s, nil
}

func (c *controller) Explain(ctx context.Context, req api.ExplainRequest) (api.Explanation, error) {
	p, err := datapath.ParseProto(req.Protocol)
	if err != nil {
		return api.Explanation{}, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	pred, err := c.d.dp.Predict(datapath.Flow{Src: req.Src, Dst: req.Dst, Sport: req.Sport, Dport: req.Dport, Proto: p}, req.SYN)
	if errors.Is(err, datapath.ErrNoVIP) {
		return api.Explanation{}, fmt.Errorf("%w: %w", api.ErrNotFound, err)
	}
	if err != nil {
		return api.Explanation{}, err
	}
	e := api.Explanation{
		VIP:         api.VIPRef{Protocol: pred.VIP.Proto.String(), Address: pred.VIP.Addr, Port: pred.VIP.Port},
		Backend:     pred.Backend,
		Reason:      "ring slot",
		Hash:        pred.Hash,
		Slot:        pred.Slot,
		RingSize:    pred.RingSize,
		RingBackend: pred.RingBackend,
		Scheduler:   pred.Scheduler,
		// Only when the scheduler decides (Predict sets it then).
		NewFlowLimit: pred.NewFlowLimit,
	}
	if pred.Conntrack {
		e.Reason = "connection entry"
	}
	if pred.Pool != "" && !pred.Conntrack {
		e.Pool = pred.Pool
		if pred.PoolDown {
			e.PoolFallback = "vip"
		}
		if pred.PoolDrop {
			e.PoolFallback, e.Reason = "drop", "pool down" // Backend is zero: dropped
		}
	}
	if pred.RoundRobin {
		e.Reason = "round-robin"
		e.RoundRobin = &api.RRSequence{Length: pred.RRLen, Shares: []api.RRShare{}}
		for _, s := range pred.RRShares {
			e.RoundRobin.Shares = append(e.RoundRobin.Shares, api.RRShare{Backend: s.Backend, Slots: s.Slots})
		}
	}
	if lc := pred.LeastConn; lc != nil {
		ch := &api.LeastConnChoice{Method: "two_choices"}
		if lc.Exact {
			ch.Method = "exact"
		}
		for _, c := range lc.Candidates {
			ch.Candidates = append(ch.Candidates, api.LeastConnCandidate{Backend: c.Backend, Active: c.Active, Weight: c.Weight})
		}
		e.Reason, e.LeastConn = "least-conn", ch
		if lc.LeastTime {
			ch.Margin = datapath.LeastTimeMargin
			for i, c := range lc.Candidates {
				ch.Candidates[i].RTMicros, ch.Candidates[i].Beat, ch.Candidates[i].WithinMargin = c.RT, c.Beat, c.WithinMargin
			}
			e.Reason, e.LeastConn, e.LeastTime = "least-time", nil, ch
		}
	}
	if pred.Refused {
		e.Reason = "source range" // Backend is zero: dropped
		e.NewFlowLimit = 0        // no scheduler decides a refused flow
	}
	if ce := pred.Entry; ce != nil {
		e.Entry = &api.ConnEntry{Backend: ce.Backend, State: ce.State.String(), Idle: ce.Idle, Timeout: ce.Timeout, Expired: ce.Expired}
	}
	return e, nil
}

func (c *controller) Apply(ctx context.Context, data []byte) (api.ApplyResult, error) {
	res, err := c.d.apply(ctx, data)
	if err != nil {
		return api.ApplyResult{}, err
	}
	out := api.ApplyResult{Unchanged: res.Unchanged, Added: []string{}, Removed: []string{}, Changed: []string{}}
	for _, v := range res.Added {
		out.Added = append(out.Added, v.String())
	}
	for _, v := range res.Removed {
		out.Removed = append(out.Removed, v.String())
	}
	for _, v := range res.Changed {
		out.Changed = append(out.Changed, v.String())
	}
	return out, nil
}

func (c *controller) VRRP(ctx context.Context) (api.VRRP, error) {
	r := c.d.vr
	if r == nil {
		return api.VRRP{State: "disabled"}, nil
	}
	st := r.Stats()
	return api.VRRP{
		Enabled:         true,
		State:           st.State.String(),
		Priority:        st.Priority,
		Master:          st.Master,
		AdvertsSent:     st.AdvertsSent,
		AdvertsReceived: st.AdvertsReceived,
		Transitions:     st.Transitions,
		LastTransition:  st.LastTransition,
		Dropped:         st.Dropped,
		WorstSendDelay:  st.WorstSendDelay,
		WorstSendCall:   st.WorstSendCall,
		LateSends:       st.LateSends,
		WorstAdvertGap:  st.WorstAdvertGap,
		LateAdverts:     st.LateAdverts,
		GuardSent:       st.GuardSent,
		Sick:            c.d.Sick(),
	}, nil
}

func (c *controller) VRRPHandover(ctx context.Context, resume bool) error {
	r := c.d.vr
	if r == nil {
		return fmt.Errorf("%w: vrrp is not configured on this node", api.ErrConflict)
	}
	if resume {
		r.Resume()
	} else {
		r.Handover()
	}
	return nil
}

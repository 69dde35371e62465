package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

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
	}
	for _, v := range d.dp.VIPs() {
		s.VIPs++
		s.Backends += len(v.Backends)
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
	var out []api.VIP
	for _, v := range c.d.rec.Desired() {
		k := reconcile.Key(v)
		av := toAPI(v, health[k])
		for i := range av.Backends {
			st := statuses[k][av.Backends[i].Address]
			av.Backends[i].HealthSince, av.Backends[i].HealthError = st.since, st.err
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
		Mode:      v.Mode,
		Scheduler: v.Scheduler,
		RingSize:  v.RingSize,
		Conntrack: &conntrack,
		Fragments: v.Fragments,
		Backends:  []api.Backend{},
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

// fromAPI turns an API VIP into a config VIP through the config parser, so
// the API accepts exactly what a config file accepts, with the same
// defaults and the same error messages.
func fromAPI(v api.VIP) (config.VIP, error) {
	m := map[string]any{
		"address":  v.Address.String(),
		"port":     v.Port,
		"protocol": v.Protocol,
	}
	setIf := func(k string, val string) {
		if val != "" {
			m[k] = val
		}
	}
	setIf("name", v.Name)
	setIf("mode", v.Mode)
	setIf("scheduler", v.Scheduler)
	setIf("fragments", v.Fragments)
	if v.RingSize != 0 {
		m["ring_size"] = v.RingSize
	}
	if v.Conntrack != nil {
		m["conntrack"] = *v.Conntrack
	}
	var backends []map[string]any
	for _, b := range v.Backends {
		bm := map[string]any{"address": b.Address.String(), "weight": b.Weight}
		if b.MAC != "" {
			bm["mac"] = b.MAC
		}
		backends = append(backends, bm)
	}
	m["backends"] = backends
	doc := map[string]any{"interfaces": []map[string]string{{"name": "lo"}}, "vips": []any{m}}
	data, err := yaml.Marshal(doc)
	if err != nil {
		return config.VIP{}, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	cfg, err := config.Parse(data)
	var verr *config.ValidationError
	if errors.As(err, &verr) {
		// The paths name the one synthetic VIP and its lines mean nothing
		// to an API caller: say each problem as the API sees it.
		var msgs []string
		for _, p := range verr.Problems {
			path := strings.TrimPrefix(strings.TrimPrefix(p.Path, "vips[0]"), ".")
			if path == "" {
				path = "vip"
			}
			msgs = append(msgs, path+": "+p.Message)
		}
		return config.VIP{}, fmt.Errorf("%w: %s", api.ErrInvalid, strings.Join(msgs, "; "))
	}
	if err != nil {
		return config.VIP{}, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	return cfg.VIPs[0], nil
}

func backendFromAPI(ref api.VIPRef, b api.Backend) (config.Backend, error) {
	v, err := fromAPI(api.VIP{VIPRef: ref, Backends: []api.Backend{b}})
	if err != nil {
		return config.Backend{}, err
	}
	return v.Backends[0], nil
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
	if err := classify(c.d.rec.AddVIP(ctx, cv)); err != nil {
		return err
	}
	c.d.syncHealth()
	return nil
}

func (c *controller) RemoveVIP(ctx context.Context, ref api.VIPRef) error {
	k, err := keyOf(ref)
	if err != nil {
		return err
	}
	if err := classify(c.d.rec.RemoveVIP(ctx, k)); err != nil {
		return err
	}
	c.d.syncHealth()
	return nil
}

func (c *controller) AddBackend(ctx context.Context, ref api.VIPRef, b api.Backend) error {
	k, err := keyOf(ref)
	if err != nil {
		return err
	}
	cb, err := backendFromAPI(ref, b)
	if err != nil {
		return err
	}
	if err := classify(c.d.rec.AddBackend(ctx, k, cb)); err != nil {
		return err
	}
	c.d.syncHealth()
	return nil
}

func (c *controller) RemoveBackend(ctx context.Context, ref api.VIPRef, addr netip.Addr) error {
	k, err := keyOf(ref)
	if err != nil {
		return err
	}
	if err := classify(c.d.rec.RemoveBackend(ctx, k, addr)); err != nil {
		return err
	}
	c.d.syncHealth()
	return nil
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
	for _, v := range vips {
		vs := api.VIPStats{VIP: api.VIPRef{Protocol: v.Proto.String(), Address: v.Addr, Port: v.Port},
			Counter: counter(last.VIPs[v], prev.VIPs[v])}
		addrs := make([]netip.Addr, 0, len(last.Backends[v]))
		for a := range last.Backends[v] {
			addrs = append(addrs, a)
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		for _, a := range addrs {
			vs.Backends = append(vs.Backends, api.BackendStats{Address: a, Counter: counter(last.Backends[v][a], prev.Backends[v][a])})
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
	}
	if pred.Conntrack {
		e.Reason = "connection entry"
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

package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/reconcile"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// Plan implements apiserver.Controller: what Apply would do with a config
// file, from the reconciler's plan of it against the datapath as it is,
// with the health observed now. It writes nothing.
func (c *controller) Plan(ctx context.Context, data []byte) (api.Plan, error) {
	d := c.d
	cfg, err := config.Parse(data)
	if err != nil {
		return api.Plan{}, fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	d.mu.Lock()
	old := d.cfg
	d.mu.Unlock()
	pv, err := d.rec.Preview(reconcile.StateOf(cfg))
	if err != nil {
		return api.Plan{}, classify(err)
	}
	p := api.Plan{Unchanged: pv.Unchanged, Restart: restartReasons(old, cfg), Global: globalChanges(old, cfg)}
	for _, k := range pv.Added {
		p.Added = append(p.Added, k.String())
	}
	for _, k := range pv.Removed {
		p.Removed = append(p.Removed, k.String())
	}
	for _, v := range pv.Changed {
		vp := api.VIPPlan{VIP: v.VIP.String(), Settings: v.Settings, RingSize: v.RingSize, MovedSlots: v.Moved}
		if v.RingSize > 0 {
			vp.MovedShare = float64(v.Moved) / float64(v.RingSize)
		}
		for _, b := range v.Backends {
			vp.Backends = append(vp.Backends, api.BackendPlan{Address: b.Addr, Change: b.Change,
				OldWeight: b.OldWeight, NewWeight: b.NewWeight, OldSlots: b.OldSlots, NewSlots: b.NewSlots})
		}
		p.Changed = append(p.Changed, vp)
	}
	return p, nil
}

// restartReasons lists, one a line, the settings that differ between the
// running configuration and cur but only a restart can change.
func restartReasons(old, cur *config.Config) []string {
	err := restartOnly(old, cur)
	if err == nil {
		return nil
	}
	var out []string
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		for _, e := range j.Unwrap() {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

// globalChanges lists the settings outside the VIPs that apply changes in
// place: "field: old -> new".
func globalChanges(old, cur *config.Config) []string {
	var out []string
	diff := func(name string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			out = append(out, fmt.Sprintf("%s: %v -> %v", name, a, b))
		}
	}
	diff("ipip.source_v4", old.IPIP.SourceV4, cur.IPIP.SourceV4)
	diff("ipip.source_v6", old.IPIP.SourceV6, cur.IPIP.SourceV6)
	diff("ipip.gateway_mac", old.IPIP.GatewayMAC, cur.IPIP.GatewayMAC)
	diff("conntrack.new_flow_limit", old.Conntrack.NewFlowLimit, cur.Conntrack.NewFlowLimit)
	diff("log.level", old.Log.Level, cur.Log.Level)
	slices.Sort(out)
	return out
}

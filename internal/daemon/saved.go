package daemon

import (
	"context"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/reconcile"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// Config implements apiserver.Controller: the desired state as a config
// file. Changes made through the API (vip and backend add, remove,
// weight) edit the reconciler's desired VIPs only, so the file is the
// configuration last applied with the reconciler's VIPs in place of its
// own; every other setting can change only through a whole file, which
// sets both.
func (c *controller) Config(ctx context.Context) (api.RunningConfig, error) {
	d := c.d
	// applyMu: no whole configuration is half taken (the reconciler's
	// VIPs from one file, the settings from another).
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	out, err := runningConfig(cfg, d.rec.Desired(), d.rec.RingSizes())
	if err != nil {
		return api.RunningConfig{}, err
	}
	return api.RunningConfig{YAML: string(out)}, nil
}

// runningConfig renders cfg with vips as its VIPs, with a comment on
// each ring_size: auto saying the size written, from sizes.
func runningConfig(cfg *config.Config, vips []config.VIP, sizes map[datapath.VIP]uint32) ([]byte, error) {
	c := *cfg
	c.VIPs = vips
	return c.MarshalNoted(func(i int) uint32 { return sizes[reconcile.Key(vips[i])] })
}

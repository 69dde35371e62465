package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/bgp"
	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/reconcile"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// Route health injection: the daemon keeps the BGP speaker's announced set
// equal to the VIP addresses this node can serve. An address is announced
// while
//   - the node is well (its interfaces up, the balancer attached to each:
//     nodeReasons, the same checks VRRP tracking makes),
//   - the node is not drained (`fulcrum node drain`), and
//   - some VIP on the address serves: it has a backend with weight that is
//     up (or unchecked), or it fails open (all_down: fail-open).
//
// Anything else withdraws it; a node that is sick withdraws every address.
// The routes are per address, not per VIP: two VIPs on one address (ports
// 80 and 443) share a /32, which stays announced while either serves.

// Reasons a prefix is withdrawn, as the API shows them.
const (
	reasonDrained   = "drained"
	reasonSick      = "node sick"
	reasonNoBackend = "no healthy backend"
)

// announcer owns the speaker and what the daemon wants of it.
type announcer struct {
	sp   *bgp.Speaker
	kick chan struct{} // a desired VIP or a backend's health changed

	mu       sync.Mutex
	drained  bool
	sick     []string        // the node's reasons at the last look
	prefixes []api.BGPPrefix // the last computed state, sorted
}

// startBGP starts the speaker and the loop that feeds it. When ctx ends the
// loop withdraws every prefix and closes the sessions, before run returns.
func (d *Daemon) startBGP(ctx context.Context, wg *sync.WaitGroup, c *config.BGP) error {
	sp, err := bgp.Start(ctx, c, d.log)
	if err != nil {
		return err
	}
	a := &announcer{sp: sp, kick: make(chan struct{}, 1)}
	d.bgp = a
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer sp.Stop(context.Background())
		tick := time.NewTicker(trackInterval)
		defer tick.Stop()
		// The node's own checks are cheap and run on every tick; the
		// VIPs and their health are read again only when they changed
		// (a kick), the node's state changed, or the last try failed.
		dirty, lastDrained, lastSick := true, false, []string(nil)
		for {
			sick := d.nodeReasons()
			slices.Sort(sick)
			a.mu.Lock()
			drained := a.drained
			a.mu.Unlock()
			if dirty || drained != lastDrained || !slices.Equal(sick, lastSick) {
				dirty = !d.announce(ctx, sick, drained)
				lastDrained, lastSick = drained, sick
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-a.kick:
				dirty = true
			}
		}
	}()
	return nil
}

// bgpKick makes the announcer look again now: the desired VIPs or a
// backend's health changed. It never blocks.
func (d *Daemon) bgpKick() {
	if d.bgp == nil {
		return
	}
	select {
	case d.bgp.kick <- struct{}{}:
	default:
	}
}

// announce computes the prefixes this node should announce, given why it
// is sick (if it is) and whether it is drained, and hands them to the
// speaker. It reports whether the speaker took them all.
func (d *Daemon) announce(ctx context.Context, sick []string, drained bool) bool {
	a := d.bgp
	d.mu.Lock()
	c := d.cfg.BGP
	d.mu.Unlock()

	prefixes, routes := desiredRoutes(d.rec.Desired(), d.rec.HealthOf(), c, drained, len(sick) > 0)
	_, err := a.sp.Announce(ctx, routes)
	if err != nil && ctx.Err() == nil {
		d.log.Error("bgp: announce", "err", err)
	}
	a.mu.Lock()
	if !slices.Equal(sick, a.sick) {
		if len(sick) > 0 {
			d.log.Warn("bgp: node sick, every VIP withdrawn", "reasons", strings.Join(sick, "; "))
		} else if len(a.sick) > 0 {
			d.log.Info("bgp: node well again")
		}
	}
	a.sick, a.prefixes = sick, prefixes
	a.mu.Unlock()
	return err == nil
}

// desiredRoutes returns every VIP address with whether it is to be
// announced (and why not), and the routes to announce.
func desiredRoutes(vips []config.VIP, health map[datapath.VIP]map[netip.Addr]reconcile.Health, c *config.BGP, drained, sick bool) ([]api.BGPPrefix, []bgp.Route) {
	byAddr := map[netip.Addr]*api.BGPPrefix{}
	serves := map[netip.Addr]bool{}
	for _, v := range vips {
		p := byAddr[v.Address]
		if p == nil {
			p = &api.BGPPrefix{Prefix: netip.PrefixFrom(v.Address, v.Address.BitLen())}
			byAddr[v.Address] = p
		}
		p.VIPs = append(p.VIPs, v.Key())
		if reconcile.Serves(v, health[reconcile.Key(v)]) {
			serves[v.Address] = true
		}
	}
	prefixes := make([]api.BGPPrefix, 0, len(byAddr))
	var routes []bgp.Route
	for addr, p := range byAddr {
		comm, med := c.AttributesOf(addr)
		for _, cm := range comm {
			p.Communities = append(p.Communities, cm.String())
		}
		p.MED = med
		switch {
		case drained:
			p.Reason = reasonDrained
		case sick:
			p.Reason = reasonSick
		case !serves[addr]:
			p.Reason = reasonNoBackend
		default:
			p.Announced = true
			routes = append(routes, bgp.Route{Prefix: p.Prefix, Communities: comm, MED: med})
		}
		slices.Sort(p.VIPs)
		prefixes = append(prefixes, *p)
	}
	slices.SortFunc(prefixes, func(a, b api.BGPPrefix) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return prefixes, routes
}

// BGP returns the speaker's state for the API.
func (d *Daemon) BGP(ctx context.Context) (api.BGP, error) {
	a := d.bgp
	if a == nil {
		return api.BGP{Peers: []api.BGPPeer{}, Prefixes: []api.BGPPrefix{}}, nil
	}
	d.mu.Lock()
	c := d.cfg.BGP
	d.mu.Unlock()
	out := api.BGP{Enabled: true, ASN: c.ASN, RouterID: c.RouterID, ListenPort: c.ListenPort}
	peers, err := a.sp.Peers(ctx)
	if err != nil {
		return api.BGP{}, err
	}
	out.Peers = make([]api.BGPPeer, 0, len(peers))
	for _, p := range peers {
		out.Peers = append(out.Peers, api.BGPPeer{
			Address: p.Address, ASN: p.ASN, State: p.State, Since: p.Since, HoldTime: p.HoldTime,
			Advertised: p.Advertised, Received: p.Received, UpdatesSent: p.UpdatesSent, UpdatesReceived: p.UpdatesReceived,
			MD5: p.MD5, Multihop: p.Multihop,
		})
	}
	a.mu.Lock()
	out.Drained, out.Sick, out.Prefixes = a.drained, slices.Clone(a.sick), slices.Clone(a.prefixes)
	a.mu.Unlock()
	if out.Prefixes == nil {
		out.Prefixes = []api.BGPPrefix{}
	}
	out.Announced = len(a.sp.Announced())
	cnt, err := d.dp.Counters()
	if err != nil {
		return api.BGP{}, fmt.Errorf("counters: %w", err)
	}
	for _, v := range cnt.VIPs {
		out.VIPPackets += v.Packets
	}
	return out, nil
}

// NodeDrain withdraws every VIP (resume false) or lets them be announced
// again (resume true). The announcement follows at once.
func (d *Daemon) NodeDrain(resume bool) error {
	a := d.bgp
	if a == nil {
		return fmt.Errorf("%w: bgp is not configured on this node, so it announces nothing to drain (a VRRP node hands over with 'fulcrum vrrp handover')", api.ErrConflict)
	}
	a.mu.Lock()
	changed := a.drained == resume
	a.drained = !resume
	a.mu.Unlock()
	if changed {
		if resume {
			d.log.Info("bgp: node resumed; VIPs are announced again where they can be served")
		} else {
			d.log.Warn("bgp: node drained; every VIP withdrawn until 'fulcrum node resume'")
		}
	}
	d.bgpKick()
	return nil
}

// BGPSessions implements metrics.BGPSource: whether each peer's session is
// established, and how many prefixes are announced.
func (d *Daemon) BGPSessions() (map[netip.Addr]bool, int, bool) {
	a := d.bgp
	if a == nil {
		return nil, 0, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	up := map[netip.Addr]bool{}
	peers, err := a.sp.Peers(ctx)
	if err != nil {
		d.log.Warn("bgp: metrics", "err", err)
	}
	for _, p := range peers {
		up[p.Address] = p.Up()
	}
	return up, len(a.sp.Announced()), true
}

// BGP implements apiserver.Controller.
func (c *controller) BGP(ctx context.Context) (api.BGP, error) { return c.d.BGP(ctx) }

// NodeDrain implements apiserver.Controller.
func (c *controller) NodeDrain(ctx context.Context, resume bool) error { return c.d.NodeDrain(resume) }

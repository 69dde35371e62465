package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/health"
	"github.com/fulcrum-lb/fulcrum/internal/healthsteer"
	"github.com/fulcrum-lb/fulcrum/internal/neighbor"
)

// steering implements health.Steerer with internal/healthsteer: the tc egress
// program on every configured interface, and per mark the egress
// interface and MACs (and for ipip the outer addresses) found from this
// host's routes and neighbours when the checker asks.
type steering struct {
	log       *slog.Logger
	res       *neighbor.Resolver
	ifindexes []int // the configured interfaces: the program goes on their egress

	mu     sync.Mutex
	wanted bool                 // some check goes through the data path
	hs     *healthsteer.Steerer // loaded and attached while wanted
}

// want loads and attaches the program when on is set and it is not
// loaded, and removes it when on is unset. A load error is logged; the
// through-datapath probes then fail with it until a load works.
func (s *steering) want(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wanted = on
	if !on {
		s.unload()
		return
	}
	if _, err := s.load(); err != nil {
		s.log.Error("through-datapath health checks", "err", err)
	}
}

// load returns the program, loading and attaching it if needed. s.mu must
// be held.
func (s *steering) load() (*healthsteer.Steerer, error) {
	if s.hs != nil {
		return s.hs, nil
	}
	if !s.wanted {
		return nil, errors.New("no health check goes through the data path")
	}
	hs, err := healthsteer.Load(healthsteer.Options{MarkBase: health.DefaultMarkBase, MarkCount: health.DefaultMarkCount})
	if err != nil {
		return nil, err
	}
	for _, ifindex := range s.ifindexes {
		if err := hs.Attach(ifindex); err != nil {
			hs.Close()
			return nil, err
		}
	}
	s.hs = hs
	base, n := hs.Marks()
	s.log.Info("through-datapath health checks: steering program attached at tc egress", "ifindexes", s.ifindexes,
		"marks", fmt.Sprintf("%#x-%#x", base, base+n-1))
	return hs, nil
}

// unload detaches and releases the program. s.mu must be held.
func (s *steering) unload() {
	if s.hs == nil {
		return
	}
	c, _ := s.hs.Counters()
	if err := s.hs.Close(); err != nil {
		s.log.Error("detach health steering", "err", err)
	}
	s.hs = nil
	s.log.Info("through-datapath health checks: steering program detached",
		"steered", c.Steered, "no_entry", c.NoEntry, "not_ip", c.NotIP, "errors", c.Errors)
}

// counters reads the program's counters; false while it is not loaded.
func (s *steering) counters() (healthsteer.Counters, bool) {
	if s == nil {
		return healthsteer.Counters{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hs == nil {
		return healthsteer.Counters{}, false
	}
	c, err := s.hs.Counters()
	if err != nil {
		s.log.Error("read health steering counters", "err", err)
		return healthsteer.Counters{}, false
	}
	return c, true
}

func (s *steering) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wanted = false
	s.unload()
}

// Steer implements health.Steerer.
func (s *steering) Steer(ctx context.Context, mark uint32, t health.Target) error {
	entry, err := s.entry(ctx, t)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	hs, err := s.load()
	if err != nil {
		return err
	}
	return hs.Set(mark, entry)
}

// Unsteer implements health.Steerer.
func (s *steering) Unsteer(mark uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hs == nil {
		return
	}
	if err := s.hs.Delete(mark); err != nil {
		s.log.Error("through-datapath health checks", "err", err)
	}
}

// entry works out where t's probes must go. A probe to the VIP must leave
// by an interface that carries the program, so the VIP may not be a local
// address (the kernel would deliver the probe to this host) and its route
// must use a configured interface.
func (s *steering) entry(ctx context.Context, t health.Target) (healthsteer.Target, error) {
	var none healthsteer.Target
	vr, err := routeTo(t.VIP.Addr)
	if err != nil {
		return none, err
	}
	if vr.Type == unix.RTN_LOCAL {
		return none, fmt.Errorf("VIP %s is a local address of this host, so the kernel would deliver the probe to itself; take it off this host's interfaces or turn through_datapath off", t.VIP.Addr)
	}
	if !slices.Contains(s.ifindexes, vr.LinkIndex) {
		return none, fmt.Errorf("the route to VIP %s leaves by %s, not by a configured interface, so the probe would not be steered", t.VIP.Addr, ifName(vr.LinkIndex))
	}
	br, err := routeTo(t.Backend)
	if err != nil {
		return none, err
	}
	l, err := netlink.LinkByIndex(br.LinkIndex)
	if err != nil {
		return none, fmt.Errorf("interface towards backend %s: %w", t.Backend, err)
	}
	out := healthsteer.Target{Ifindex: br.LinkIndex, SrcMAC: l.Attrs().HardwareAddr}
	switch t.Mode {
	case config.ModeDSR:
		if br.Gw != nil {
			return none, fmt.Errorf("dsr backend %s is not on an attached network (its route goes via %s)", t.Backend, br.Gw)
		}
		out.Mode, out.DstMAC = healthsteer.DSR, t.MAC
		if len(out.DstMAC) == 0 {
			if out.DstMAC, err = s.res.Resolve(ctx, t.Backend); err != nil {
				return none, fmt.Errorf("mac of backend %s: %w", t.Backend, err)
			}
		}
	case config.ModeIPIP:
		hop := t.Backend
		if br.Gw != nil {
			hop, _ = netip.AddrFromSlice(br.Gw)
			hop = hop.Unmap()
		}
		src, _ := netip.AddrFromSlice(br.Src)
		out.Mode, out.Backend, out.Source = healthsteer.IPIP, t.Backend, src.Unmap()
		if out.DstMAC, err = s.res.Resolve(ctx, hop); err != nil {
			return none, fmt.Errorf("mac of next hop %s towards backend %s: %w", hop, t.Backend, err)
		}
	default:
		return none, fmt.Errorf("VIP mode %q cannot be steered", t.Mode)
	}
	return out, nil
}

// routeTo asks the kernel which route a packet to a takes.
func routeTo(a netip.Addr) (netlink.Route, error) {
	rs, err := netlink.RouteGet(a.AsSlice())
	if err != nil {
		return netlink.Route{}, fmt.Errorf("route to %s: %w", a, err)
	}
	if len(rs) == 0 {
		return netlink.Route{}, fmt.Errorf("route to %s: none", a)
	}
	return rs[0], nil
}

func ifName(ifindex int) string {
	if ifc, err := net.InterfaceByIndex(ifindex); err == nil {
		return ifc.Name
	}
	return fmt.Sprintf("ifindex %d", ifindex)
}

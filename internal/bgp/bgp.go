// Package bgp is Fulcrum's embedded BGP speaker: GoBGP run as a library
// in the daemon, so that an LB node needs no routing daemon of its own. It
// keeps a session with each configured router and announces the prefixes
// it is given, each with this node's address on the session as its next
// hop (next hop self), and withdraws the ones it is no longer given.
//
// The speaker decides nothing about which prefixes to announce: the daemon
// (internal/daemon/bgp.go) computes that set from the node's health, the
// VIPs and their backends, and hands it to Announce whole.
//
// It learns nothing either. Routes a peer sends are refused at import, so
// they never enter the speaker's table: a router that sends a full table or
// a garbled one costs a session, never the fast path, and the node never
// passes one router's routes to another.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	gobgp "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/fulcrum-lb/fulcrum/internal/config"
)

// Route is a prefix to announce with its path attributes.
type Route struct {
	Prefix      netip.Prefix
	Communities []config.Community
	MED         *uint32 // nil = no MED attribute
}

func (r Route) equal(o Route) bool {
	return r.Prefix == o.Prefix && slices.Equal(r.Communities, o.Communities) &&
		(r.MED == nil) == (o.MED == nil) && (r.MED == nil || *r.MED == *o.MED)
}

// PeerStatus is one session as the speaker sees it.
type PeerStatus struct {
	Address netip.Addr
	ASN     uint32
	// State is the RFC 4271 state in lower case: idle, connect, active,
	// opensent, openconfirm or established.
	State string
	// Since is when the session was established (zero unless it is).
	Since time.Time
	// HoldTime is the negotiated hold time (zero unless established).
	HoldTime time.Duration
	// Advertised is how many prefixes the peer was sent and still holds.
	Advertised uint64
	// Received is how many prefixes the peer sent (all refused).
	Received uint64
	// Updates counts UPDATE messages sent and received.
	UpdatesSent, UpdatesReceived uint64
	// MD5 is whether the session is signed with TCP MD5.
	MD5      bool
	Multihop int
}

// Up reports whether the session is established.
func (p PeerStatus) Up() bool { return p.State == "established" }

// Speaker is a running BGP speaker.
type Speaker struct {
	srv *server.BgpServer
	log *slog.Logger
	cfg config.BGP

	mu        sync.Mutex
	announced map[netip.Prefix]entry
	stopped   bool
}

type entry struct {
	route Route
	uuid  []byte // GoBGP's handle on the path, to delete it
}

// importPolicy refuses every route a peer sends (internal or external);
// the node's own routes are local and pass.
const importPolicy = "fulcrum-learn-nothing"

// Start starts the speaker and adds its peers; sessions come up in the
// background. MD5 passwords are read from their files now.
func Start(ctx context.Context, c *config.BGP, log *slog.Logger) (*Speaker, error) {
	return start(ctx, c, log, 0)
}

// start is Start with the peers' TCP port (0 = 179), which tests change
// so that they need not bind port 179.
func start(ctx context.Context, c *config.BGP, log *slog.Logger, peerPort uint32) (*Speaker, error) {
	if c == nil {
		return nil, errors.New("bgp: no configuration")
	}
	peers := make([]*gobgp.Peer, 0, len(c.Peers))
	for i, p := range c.Peers {
		ap, err := apiPeer(p)
		if err != nil {
			return nil, fmt.Errorf("bgp.peers[%d]: %w", i, err)
		}
		if peerPort != 0 {
			ap.Transport = &gobgp.Transport{RemotePort: peerPort}
		}
		peers = append(peers, ap)
	}

	srv := server.NewBgpServer(server.LoggerOption(&logger{log: log}))
	go srv.Serve()
	s := &Speaker{srv: srv, log: log, cfg: *c, announced: map[netip.Prefix]entry{}}
	port := int32(-1) // GoBGP: negative = do not listen; 0 would mean 179
	if c.ListenPort > 0 {
		port = int32(c.ListenPort)
	}
	if err := srv.StartBgp(ctx, &gobgp.StartBgpRequest{Global: &gobgp.Global{
		Asn: c.ASN, RouterId: c.RouterID.String(), ListenPort: port,
	}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	if err := s.refuseImports(ctx); err != nil {
		s.stopServer()
		return nil, err
	}
	for i, p := range peers {
		if err := srv.AddPeer(ctx, &gobgp.AddPeerRequest{Peer: p}); err != nil {
			s.stopServer()
			return nil, fmt.Errorf("bgp.peers[%d] (%s): %w", i, c.Peers[i].Address, err)
		}
	}
	log.Info("bgp: speaker started", "asn", c.ASN, "router_id", c.RouterID, "listen_port", c.ListenPort, "peers", len(peers))
	return s, nil
}

func (s *Speaker) refuseImports(ctx context.Context) error {
	reject := &gobgp.Actions{RouteAction: gobgp.RouteAction_REJECT}
	p := &gobgp.Policy{Name: importPolicy, Statements: []*gobgp.Statement{
		{Name: importPolicy + "-ibgp", Conditions: &gobgp.Conditions{RouteType: gobgp.Conditions_ROUTE_TYPE_INTERNAL}, Actions: reject},
		{Name: importPolicy + "-ebgp", Conditions: &gobgp.Conditions{RouteType: gobgp.Conditions_ROUTE_TYPE_EXTERNAL}, Actions: reject},
	}}
	if err := s.srv.AddPolicy(ctx, &gobgp.AddPolicyRequest{Policy: p}); err != nil {
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	if err := s.srv.SetPolicyAssignment(ctx, &gobgp.SetPolicyAssignmentRequest{Assignment: &gobgp.PolicyAssignment{
		Name: "global", Direction: gobgp.PolicyDirection_IMPORT,
		Policies: []*gobgp.Policy{{Name: importPolicy}}, DefaultAction: gobgp.RouteAction_ACCEPT,
	}}); err != nil {
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	return nil
}

// apiPeer builds GoBGP's description of p, reading its password.
func apiPeer(p config.BGPPeer) (*gobgp.Peer, error) {
	var password string
	if p.PasswordFile != "" {
		b, err := os.ReadFile(p.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
		switch {
		case password == "":
			return nil, fmt.Errorf("password_file: %s is empty; write the TCP MD5 password in it, or remove password_file", p.PasswordFile)
		case len(password) > 80:
			// TCP_MD5SIG_MAXKEYLEN
			return nil, fmt.Errorf("password_file: the password in %s is %d bytes; Linux takes at most 80", p.PasswordFile, len(password))
		}
	}
	ap := &gobgp.Peer{
		Conf: &gobgp.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: password},
		Timers: &gobgp.Timers{Config: &gobgp.TimersConfig{
			HoldTime:          uint64(p.HoldTime / time.Second),
			KeepaliveInterval: uint64(p.Keepalive / time.Second),
			// Retry a lost session soon: while it is down the VIPs
			// are not announced through this router.
			ConnectRetry: 5,
			// Send withdrawals and announcements at once, not batched
			// over the eBGP default of 30s: a sick node must leave
			// the router's ECMP group now.
			MinimumAdvertisementInterval: 0,
		}},
		AfiSafis: []*gobgp.AfiSafi{{Config: &gobgp.AfiSafiConfig{Family: familyOf(p.Address), Enabled: true}}},
	}
	if p.Multihop > 0 {
		ap.EbgpMultihop = &gobgp.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	return ap, nil
}

func familyOf(a netip.Addr) *gobgp.Family {
	if a.Is4() {
		return &gobgp.Family{Afi: gobgp.Family_AFI_IP, Safi: gobgp.Family_SAFI_UNICAST}
	}
	return &gobgp.Family{Afi: gobgp.Family_AFI_IP6, Safi: gobgp.Family_SAFI_UNICAST}
}

// Announce makes routes the announced set: prefixes not in it are
// withdrawn, new ones and ones whose attributes changed are announced. It
// reports whether anything changed. A prefix is announced to the peers of
// its family (IPv4 prefixes over IPv4 sessions, IPv6 over IPv6).
func (s *Speaker) Announce(ctx context.Context, routes []Route) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false, errors.New("bgp: the speaker is stopped")
	}
	want := make(map[netip.Prefix]Route, len(routes))
	for _, r := range routes {
		want[r.Prefix] = r
	}
	changed := false
	var errs []error
	for p, e := range s.announced {
		if _, ok := want[p]; ok {
			continue
		}
		if err := s.srv.DeletePath(ctx, &gobgp.DeletePathRequest{Family: familyOf(p.Addr()), Uuid: e.uuid}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(s.announced, p)
		changed = true
		s.log.Info("bgp: withdrawn", "prefix", p)
	}
	for p, r := range want {
		if e, ok := s.announced[p]; ok && e.route.equal(r) {
			continue
		}
		// Adding a path for a prefix that has one replaces it: the
		// peers get one UPDATE with the new attributes.
		resp, err := s.srv.AddPath(ctx, &gobgp.AddPathRequest{Path: path(r)})
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", p, err))
			continue
		}
		s.announced[p] = entry{route: r, uuid: resp.Uuid}
		changed = true
		s.log.Info("bgp: announced", "prefix", p)
	}
	return changed, errors.Join(errs...)
}

// path is GoBGP's path for r: origin IGP, next hop unspecified, which GoBGP
// replaces by the session's local address for each peer (next hop self).
func path(r Route) *gobgp.Path {
	p := r.Prefix.Masked()
	nlri, _ := anypb.New(&gobgp.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	origin, _ := anypb.New(&gobgp.OriginAttribute{Origin: 0})
	attrs := []*anypb.Any{origin}
	if p.Addr().Is4() {
		nh, _ := anypb.New(&gobgp.NextHopAttribute{NextHop: "0.0.0.0"})
		attrs = append(attrs, nh)
	} else {
		mp, _ := anypb.New(&gobgp.MpReachNLRIAttribute{Family: familyOf(p.Addr()), NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}})
		attrs = append(attrs, mp)
	}
	if len(r.Communities) > 0 {
		cs := make([]uint32, len(r.Communities))
		for i, c := range r.Communities {
			cs[i] = uint32(c)
		}
		a, _ := anypb.New(&gobgp.CommunitiesAttribute{Communities: cs})
		attrs = append(attrs, a)
	}
	if r.MED != nil {
		a, _ := anypb.New(&gobgp.MultiExitDiscAttribute{Med: *r.MED})
		attrs = append(attrs, a)
	}
	return &gobgp.Path{Family: familyOf(p.Addr()), Nlri: nlri, Pattrs: attrs}
}

// Announced returns the announced routes, sorted by prefix.
func (s *Speaker) Announced() []Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Route, 0, len(s.announced))
	for _, e := range s.announced {
		out = append(out, e.route)
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Peers returns the state of every session, in configuration order.
func (s *Speaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	byAddr := map[string]*gobgp.Peer{}
	err := s.srv.ListPeer(ctx, &gobgp.ListPeerRequest{EnableAdvertised: true}, func(p *gobgp.Peer) {
		if p.Conf != nil {
			byAddr[p.Conf.NeighborAddress] = p
		}
	})
	if err != nil {
		return nil, fmt.Errorf("bgp: list peers: %w", err)
	}
	out := make([]PeerStatus, 0, len(s.cfg.Peers))
	for _, c := range s.cfg.Peers {
		ps := PeerStatus{Address: c.Address, ASN: c.ASN, State: "idle", MD5: c.PasswordFile != "", Multihop: c.Multihop}
		if p := byAddr[c.Address.String()]; p != nil {
			peerStatus(p, &ps)
		}
		out = append(out, ps)
	}
	return out, nil
}

func peerStatus(p *gobgp.Peer, ps *PeerStatus) {
	if st := p.State; st != nil {
		ps.State = strings.ToLower(strings.TrimPrefix(st.SessionState.String(), "PeerState_"))
		if ps.State == "unknown" {
			ps.State = "idle"
		}
		if m := st.Messages; m != nil {
			if m.Sent != nil {
				ps.UpdatesSent = m.Sent.Update
			}
			if m.Received != nil {
				ps.UpdatesReceived = m.Received.Update
			}
		}
	}
	if ps.Up() && p.Timers != nil && p.Timers.State != nil {
		ts := p.Timers.State
		ps.HoldTime = time.Duration(ts.NegotiatedHoldTime) * time.Second
		if ts.Uptime != nil {
			ps.Since = ts.Uptime.AsTime()
		}
	}
	for _, af := range p.AfiSafis {
		// GoBGP keeps the last session's counts after it ends; a peer
		// whose session is down holds nothing from us.
		if af.State != nil && ps.Up() {
			ps.Advertised += af.State.Advertised
			ps.Received += af.State.Received
		}
	}
}

// Stop withdraws every prefix, closes the sessions (a Cease notification
// to each peer, which drops whatever it still holds from us) and stops the
// speaker. It is idempotent.
func (s *Speaker) Stop(ctx context.Context) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	for p, e := range s.announced {
		if err := s.srv.DeletePath(ctx, &gobgp.DeletePathRequest{Family: familyOf(p.Addr()), Uuid: e.uuid}); err != nil {
			s.log.Warn("bgp: withdraw on stop", "prefix", p, "err", err)
		}
	}
	s.announced = map[netip.Prefix]entry{}
	s.stopped = true
	s.mu.Unlock()
	s.stopServer()
	s.log.Info("bgp: speaker stopped; every prefix withdrawn")
}

// stopTimeout bounds the wait for the sessions' Cease notifications: a peer
// that does not read must not hold up the daemon's exit.
const stopTimeout = 5 * time.Second

func (s *Speaker) stopServer() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.srv.Stop() // deletes every peer with a Cease notification
	}()
	select {
	case <-done:
	case <-time.After(stopTimeout):
		s.log.Warn("bgp: the sessions did not close within " + stopTimeout.String() + "; exiting anyway")
	}
}

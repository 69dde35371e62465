package bgp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gobgp "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// router is a second GoBGP server that plays the upstream router on
// 127.0.0.1: it accepts the speaker's session and shows what it learnt.
type router struct {
	srv  *server.BgpServer
	port uint32
}

func freePort(t *testing.T) uint32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint32(ln.Addr().(*net.TCPAddr).Port)
}

func newRouter(t *testing.T, speakerASN uint32, password string) *router {
	t.Helper()
	ctx := context.Background()
	r := &router{srv: server.NewBgpServer(server.LoggerOption(&logger{log: slog.New(slog.NewTextHandler(io.Discard, nil))})), port: freePort(t)}
	go r.srv.Serve()
	t.Cleanup(r.srv.Stop)
	if err := r.srv.StartBgp(ctx, &gobgp.StartBgpRequest{Global: &gobgp.Global{
		Asn: 65000, RouterId: "10.255.0.1", ListenPort: int32(r.port), ListenAddresses: []string{"127.0.0.1"},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := r.srv.AddPeer(ctx, &gobgp.AddPeerRequest{Peer: &gobgp.Peer{
		Conf:      &gobgp.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: speakerASN, AuthPassword: password},
		Transport: &gobgp.Transport{PassiveMode: true},
		Timers:    &gobgp.Timers{Config: &gobgp.TimersConfig{HoldTime: 9, KeepaliveInterval: 3}},
	}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// learnt returns the prefixes the router holds, with their communities
// and MED as text.
func (r *router) learnt(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := r.srv.ListPath(context.Background(), &gobgp.ListPathRequest{TableType: gobgp.TableType_GLOBAL,
		Family: &gobgp.Family{Afi: gobgp.Family_AFI_IP, Safi: gobgp.Family_SAFI_UNICAST}}, func(d *gobgp.Destination) {
		for _, p := range d.Paths {
			if p.NeighborIp != "127.0.0.1" {
				continue // the router's own
			}
			var attrs []string
			for _, a := range p.Pattrs {
				m, err := a.UnmarshalNew()
				if err != nil {
					continue
				}
				switch v := m.(type) {
				case *gobgp.CommunitiesAttribute:
					attrs = append(attrs, fmt.Sprintf("communities=%v", v.Communities))
				case *gobgp.MultiExitDiscAttribute:
					attrs = append(attrs, fmt.Sprintf("med=%d", v.Med))
				case *gobgp.NextHopAttribute:
					attrs = append(attrs, "nh="+v.NextHop)
				}
			}
			slices.Sort(attrs)
			out[d.Prefix] = strings.Join(attrs, " ")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// announce makes the router send a route to the speaker.
func (r *router) announce(t *testing.T, prefix string, bits uint32) {
	t.Helper()
	nlri, _ := anypb.New(&gobgp.IPAddressPrefix{Prefix: prefix, PrefixLen: bits})
	origin, _ := anypb.New(&gobgp.OriginAttribute{})
	nh, _ := anypb.New(&gobgp.NextHopAttribute{NextHop: "0.0.0.0"})
	if _, err := r.srv.AddPath(context.Background(), &gobgp.AddPathRequest{Path: &gobgp.Path{
		Family: &gobgp.Family{Afi: gobgp.Family_AFI_IP, Safi: gobgp.Family_SAFI_UNICAST}, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh},
	}}); err != nil {
		t.Fatal(err)
	}
}

func testConfig(password string) *config.BGP {
	return &config.BGP{ASN: 65010, RouterID: netip.MustParseAddr("10.255.0.2"), Peers: []config.BGPPeer{{
		Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, PasswordFile: password,
		HoldTime: 9 * time.Second, Keepalive: 3 * time.Second,
	}}}
}

func testLog(t *testing.T) *slog.Logger {
	if os.Getenv("BGP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func waitEstablished(t *testing.T, s *Speaker) PeerStatus {
	t.Helper()
	var ps PeerStatus
	require.Eventually(t, 20*time.Second, func() error {
		peers, err := s.Peers(context.Background())
		if err != nil {
			return err
		}
		if len(peers) != 1 || !peers[0].Up() {
			return fmt.Errorf("peers = %+v", peers)
		}
		ps = peers[0]
		return nil
	})
	return ps
}

func learntEquals(t *testing.T, r *router, want map[string]string) {
	t.Helper()
	require.Eventually(t, 10*time.Second, func() error {
		if got := r.learnt(t); !mapsEqual(got, want) {
			return fmt.Errorf("router holds %v, want %v", got, want)
		}
		return nil
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestAnnounceWithdraw: routes reach the router with next hop self and
// their attributes, a route left out is withdrawn, changed attributes are
// sent again, the router's own routes are refused, and Stop withdraws all.
func TestAnnounceWithdraw(t *testing.T) {
	r := newRouter(t, 65010, "")
	ctx := context.Background()
	s, err := start(ctx, testConfig(""), testLog(t), r.port)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	ps := waitEstablished(t, s)
	if ps.HoldTime != 9*time.Second || ps.Since.IsZero() || ps.ASN != 65000 || ps.MD5 {
		t.Errorf("peer status = %+v", ps)
	}

	med := uint32(50)
	a := Route{Prefix: netip.MustParsePrefix("203.0.113.10/32"), Communities: []config.Community{65000<<16 | 100}, MED: &med}
	b := Route{Prefix: netip.MustParsePrefix("203.0.113.11/32")}
	if changed, err := s.Announce(ctx, []Route{a, b}); err != nil || !changed {
		t.Fatalf("Announce = %v, %v", changed, err)
	}
	learntEquals(t, r, map[string]string{
		"203.0.113.10/32": fmt.Sprintf("communities=[%d] med=50 nh=127.0.0.1", 65000<<16|100),
		"203.0.113.11/32": "nh=127.0.0.1",
	})
	if changed, err := s.Announce(ctx, []Route{b, a}); err != nil || changed {
		t.Fatalf("the same set again: Announce = %v, %v; want no change", changed, err)
	}

	// The router's own route is refused: it never enters our table, so
	// it is neither used nor passed on.
	r.announce(t, "192.0.2.0", 24)
	require.Eventually(t, 10*time.Second, func() error {
		peers, err := s.Peers(ctx)
		if err != nil {
			return err
		}
		if peers[0].Received != 1 {
			return fmt.Errorf("received %d prefixes, want 1", peers[0].Received)
		}
		return nil
	})
	var ours []string
	if err := s.srv.ListPath(ctx, &gobgp.ListPathRequest{TableType: gobgp.TableType_GLOBAL, Family: familyOf(netip.MustParseAddr("192.0.2.1"))},
		func(d *gobgp.Destination) { ours = append(ours, d.Prefix) }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ours)
	if want := []string{"203.0.113.10/32", "203.0.113.11/32"}; !slices.Equal(ours, want) {
		t.Errorf("the speaker's table holds %v, want only its own %v", ours, want)
	}

	med2 := uint32(70)
	a.MED = &med2
	if changed, err := s.Announce(ctx, []Route{a}); err != nil || !changed {
		t.Fatalf("Announce = %v, %v", changed, err)
	}
	learntEquals(t, r, map[string]string{"203.0.113.10/32": fmt.Sprintf("communities=[%d] med=70 nh=127.0.0.1", 65000<<16|100)})
	if got := s.Announced(); len(got) != 1 || got[0].Prefix != a.Prefix {
		t.Errorf("Announced = %v", got)
	}

	s.Stop(ctx)
	learntEquals(t, r, map[string]string{})
	if _, err := s.Announce(ctx, []Route{a}); err == nil {
		t.Error("Announce after Stop succeeded")
	}
	s.Stop(ctx) // idempotent
}

// TestPasswordFile: a missing or empty password file is refused by name.
// (A signed session is shown in the namespace test against BIRD.)
func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(dir, "long")
	if err := os.WriteFile(long, []byte(strings.Repeat("x", 81)), 0o600); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		empty:                         "bgp.peers[0]: password_file: " + empty + " is empty",
		long:                          "bgp.peers[0]: password_file: the password in " + long + " is 81 bytes",
		filepath.Join(dir, "missing"): "bgp.peers[0]: password_file: open " + filepath.Join(dir, "missing"),
	} {
		if _, err := Start(context.Background(), testConfig(file), testLog(t)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
}

// TestListen: with listen_port set the speaker accepts the router's
// session (here its own dials go to a closed port, so the session can
// only come in).
func TestListen(t *testing.T) {
	ctx := context.Background()
	port, closed := freePort(t), freePort(t)
	r := server.NewBgpServer(server.LoggerOption(&logger{log: testLog(t)}))
	go r.Serve()
	t.Cleanup(r.Stop)
	if err := r.StartBgp(ctx, &gobgp.StartBgpRequest{Global: &gobgp.Global{Asn: 65000, RouterId: "10.255.0.1", ListenPort: -1}}); err != nil {
		t.Fatal(err)
	}
	if err := r.AddPeer(ctx, &gobgp.AddPeerRequest{Peer: &gobgp.Peer{
		Conf:      &gobgp.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65010},
		Transport: &gobgp.Transport{RemotePort: port},
		Timers:    &gobgp.Timers{Config: &gobgp.TimersConfig{ConnectRetry: 1}},
	}}); err != nil {
		t.Fatal(err)
	}
	c := testConfig("")
	c.ListenPort = int(port)
	s, err := start(ctx, c, testLog(t), closed)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	waitEstablished(t, s)
}

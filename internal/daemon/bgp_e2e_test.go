package daemon_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// The scale-out tests: several active nodes, each with its own BGP session
// to a real routing daemon on the router, which spreads the VIP's flows
// over them by ECMP.

const (
	routerASN = 65000
	lbASN     = 65010
	// bgpHold is the hold time the nodes ask for (the least BIRD takes),
	// so that a dead node leaves the ECMP group within it.
	bgpHold = 3 * time.Second
)

// vipSick is a second VIP address whose health check fails on one node
// only (bgpConfig's sickOn).
var vipSick = netip.MustParseAddr("203.0.113.11")

// bgpConfig is node n's config: BGP to the router, the echo VIP on vip4,
// and vipSick, whose check probes a closed port when sick is set, so that
// every backend is down on this node alone.
func (h *harness) bgpConfig(n int, sick bool) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "instance: lb%d\nbpffs: %s\ninterfaces:\n  - name: eth0\napi:\n  socket: %s\nmetrics: {address: \"off\"}\n", n, h.dir, h.socket)
	fmt.Fprintf(&sb, "bgp:\n  asn: %d\n  router_id: %s\n  communities: [\"%d:100\"]\n  peers:\n", lbASN, testenv.LBIPv4(n), lbASN)
	// IPv4 VIPs go over the IPv4 session, IPv6 ones over the IPv6 one.
	for _, a := range []netip.Addr{testenv.RouterIPv4, testenv.RouterIPv6} {
		fmt.Fprintf(&sb, "    - {address: \"%s\", asn: %d, hold_time: %s, keepalive: 1s}\n", a, routerASN, bgpHold)
	}
	port := 9000
	if sick {
		port = 9099 // nothing listens there (fcbackend serves 80, 9000, 9001 and 53)
	}
	sb.WriteString("vips:\n")
	for _, v := range []struct {
		addr  netip.Addr
		check string
	}{
		{vip4, ""},
		{vip6, ""},
		{vipSick, fmt.Sprintf("    health_check: {type: tcp, port: %d, interval: 200ms, timeout: 100ms, rise: 1, fall: 1}\n", port)},
	} {
		fmt.Fprintf(&sb, "  - address: %s\n    port: 9000\n    protocol: tcp\n%s    backends:\n", v.addr, v.check)
		for _, b := range h.topo.Backends {
			a := b.IPv4
			if v.addr.Is6() {
				a = b.IPv6
			}
			fmt.Fprintf(&sb, "      - address: %s\n", a)
		}
	}
	return sb.String()
}

// bgpNode starts a daemon with bgpConfig on host as node n.
func (h *harness) bgpNode(host *testenv.Host, n int, sick bool) *harness {
	node := h.node(host)
	if n == 1 {
		node = h
	}
	node.writeConfig(node.bgpConfig(n, sick))
	node.startDaemon()
	return node
}

// waitNextHops waits until the router's kernel route to addr (/32 or
// /128) goes through exactly the given nodes (their address of addr's
// family), and returns how long that took.
func waitNextHops(t testing.TB, topo *testenv.Topology, rd *testenv.RoutingDaemon, addr netip.Addr, limit time.Duration, nodes ...int) time.Duration {
	t.Helper()
	want := make([]netip.Addr, len(nodes))
	for i, n := range nodes {
		want[i] = testenv.LBIPv4(n)
		if addr.Is6() {
			want[i] = testenv.LBIPv6(n)
		}
	}
	slices.SortFunc(want, netip.Addr.Compare)
	took, err := require.Poll(limit, func() error {
		got, err := topo.NextHops(netip.PrefixFrom(addr, addr.BitLen()))
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("route to %s via %v, want %v", addr, got, want)
		}
		return nil
	})
	if err != nil {
		show, _ := rd.Show(context.Background())
		t.Fatalf("%v\n%s:\n%s", err, rd.Kind, show)
	}
	return took
}

// vipPacketsNow returns the node's packet count over every VIP.
func (h *harness) vipPacketsNow() uint64 {
	h.t.Helper()
	b, err := h.client.BGP(bg())
	if err != nil {
		h.t.Fatalf("%s: bgp: %v", h.lb.Role(), err)
	}
	return b.VIPPackets
}

func startRouter(t *testing.T, topo *testenv.Topology, kind string) *testenv.RoutingDaemon {
	t.Helper()
	cfg := testenv.RouterBGP{ASN: routerASN}
	for n := 1; n <= 4; n++ {
		cfg.Neighbors = append(cfg.Neighbors, testenv.BGPNeighbor{Addr: testenv.LBIPv4(n), ASN: lbASN},
			testenv.BGPNeighbor{Addr: testenv.LBIPv6(n), ASN: lbASN})
	}
	var rd *testenv.RoutingDaemon
	var err error
	switch kind {
	case "bird":
		rd, err = topo.StartBIRD(bg(), require.Tool(t, "bird"), require.Tool(t, "birdc"), cfg)
	case "frr":
		libexec := "/usr/lib/frr"
		if _, serr := os.Stat(filepath.Join(libexec, "bgpd")); serr != nil {
			require.Tool(t, "bgpd") // fails (strict) or skips, naming the package
		}
		rd, err = topo.StartFRR(bg(), libexec, require.Tool(t, "vtysh"), cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", kind, rd.Log())
		}
	})
	return rd
}

// TestScaleOutBIRD: three nodes announce the VIP to BIRD, which installs a
// 3-way ECMP route; 600 connections spread over them, each on the backend
// explain predicts. A drained node's flows move to the others, a fourth
// node joins, a node dies: every connection keeps its backend throughout,
// because every node builds the same Maglev ring. A VIP whose backends are
// down on one node only is withdrawn by that node alone.
func TestScaleOutBIRD(t *testing.T) { testScaleOut(t, "bird") }

// TestScaleOutFRR is the announce, drain and join part against FRR.
func TestScaleOutFRR(t *testing.T) { testScaleOut(t, "frr") }

func testScaleOut(t *testing.T, kind string) {
	h := newHarness(t, func(o *testenv.Options) { o.SecondLB = true })
	topo := h.topo
	lb3host, err := topo.AddLB(3)
	if err != nil {
		t.Fatal(err)
	}
	rd := startRouter(t, topo, kind)

	// waitVIPs waits for the routes to both echo VIPs, /32 and /128.
	waitVIPs := func(limit time.Duration, nodes ...int) time.Duration {
		took := waitNextHops(t, topo, rd, vip4, limit, nodes...)
		return took + waitNextHops(t, topo, rd, vip6, limit, nodes...)
	}
	nodes := []*harness{h.bgpNode(topo.LB1, 1, false), h.bgpNode(topo.LB2, 2, false), h.bgpNode(lb3host, 3, true)}
	took := waitVIPs(30*time.Second, 1, 2, 3)
	t.Logf("%s: 3-way ECMP routes to %s and %s installed %s after the nodes started", kind, vip4, vip6, took.Round(time.Millisecond))

	// Health: lb3's checks of vipSick fail, so lb3 alone withdraws it.
	waitNextHops(t, topo, rd, vipSick, 10*time.Second, 1, 2)
	st, err := nodes[2].client.BGP(bg())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Prefixes {
		want := p.Prefix.Addr() == vip4 || p.Prefix.Addr() == vip6
		if p.Announced != want || (!want && p.Reason != "no healthy backend") {
			t.Errorf("lb3: %s announced %v (%q), want %v", p.Prefix, p.Announced, p.Reason, want)
		}
	}
	for _, p := range st.Peers {
		if p.State != "established" || p.Advertised != 1 {
			t.Errorf("lb3: peer %+v, want established and holding one prefix (its family's echo VIP)", p)
		}
	}
	if len(st.Peers) != 2 || st.Announced != 2 {
		t.Errorf("lb3: bgp %+v, want two sessions and two prefixes announced", st)
	}

	// Announcement: 600 connections, each on explain's backend, spread
	// over the three nodes.
	before := make([]uint64, len(nodes))
	for i, n := range nodes {
		before[i] = n.vipPacketsNow()
	}
	conns := append(h.openConns(600, vip4), h.openConns(60, vip6)...)
	var total uint64
	per := make([]uint64, len(nodes))
	for i, n := range nodes {
		per[i] = n.vipPacketsNow() - before[i]
		total += per[i]
	}
	for i, p := range per {
		// A third each is expected; 600 flows hashed over three paths
		// stay well above a sixth.
		if p*6 < total {
			t.Errorf("lb%d forwarded %d of %d packets, under a sixth: the router does not spread the flows (%v)", i+1, p, total, per)
		}
	}
	t.Logf("packets per node over 660 connections: %v", per)

	// Graceful leave: lb1 drains; the router moves its flows to lb2 and
	// lb3, and every connection keeps its backend.
	out, err := h.cli("node", "drain", "--quiet", "1s", "--wait", "30s")
	if err != nil || !strings.Contains(out, "node: traffic stopped") {
		t.Fatalf("node drain: %v\n%s\n%s", err, out, h.log())
	}
	waitVIPs(10*time.Second, 2, 3)
	h.checkConns(conns, "", "after lb1 drained")

	// Join: lb4 comes up; the router rehashes over lb2, lb3, lb4.
	lb4host, err := topo.AddLB(4)
	if err != nil {
		t.Fatal(err)
	}
	nodes = append(nodes, h.bgpNode(lb4host, 4, false))
	waitVIPs(30*time.Second, 2, 3, 4)
	h.checkConns(conns, "", "after lb4 joined")
	out, err = h.cli("node", "resume")
	if err != nil {
		t.Fatalf("node resume: %v\n%s", err, out)
	}
	waitVIPs(10*time.Second, 1, 2, 3, 4)
	h.checkConns(conns, "", "after lb1 resumed")

	if kind != "bird" {
		return
	}
	// Death: lb2's link goes down and its daemon is killed. The router
	// notices when the hold timer runs out; until then the flows it
	// hashes to lb2 are lost. Afterwards every connection answers.
	setLink(t, topo.LB2, false)
	syscall.Kill(-nodes[1].daemon.Process.Pid, syscall.SIGKILL)
	nodes[1].daemon.Wait()
	outage := waitNextHops(t, topo, rd, vip4, bgpHold+5*time.Second, 1, 3, 4)
	waitNextHops(t, topo, rd, vip6, 2*time.Second, 1, 3, 4)
	t.Logf("node death: the router dropped lb2 %s after its link went down (hold time %s)", outage.Round(time.Millisecond), bgpHold)
	if outage > bgpHold+2*time.Second {
		t.Errorf("the router took %s to drop a dead node, over the hold time %s plus 2s", outage, bgpHold)
	}
	h.checkConns(conns, "", "after lb2 died")
}

// garbagePeer listens for BGP on addr in host and answers each session
// with an OPEN, a KEEPALIVE and a malformed 4096-byte UPDATE (the largest a
// BGP message may be, its attributes all 0xff). It counts the sessions it
// fed until the speaker closed them.
type garbagePeer struct {
	ln     net.Listener
	mu     sync.Mutex
	closed int // sessions that got the UPDATE and were closed by the speaker
}

func startGarbagePeer(t *testing.T, host *testenv.Host, addr netip.Addr, asn uint16) *garbagePeer {
	t.Helper()
	g := &garbagePeer{}
	if err := host.Do(func() error {
		var err error
		g.ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 179).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.ln.Close() })
	msg := func(typ byte, body []byte) []byte {
		m := bytes.Repeat([]byte{0xff}, 16)
		m = binary.BigEndian.AppendUint16(m, uint16(19+len(body)))
		return append(append(m, typ), body...)
	}
	open := []byte{4}
	open = binary.BigEndian.AppendUint16(open, asn)
	open = binary.BigEndian.AppendUint16(open, 9)
	open = append(open, addr.AsSlice()...)
	open = append(open, 0)
	update := []byte{0, 0}
	update = binary.BigEndian.AppendUint16(update, 4096-19-4)
	update = append(update, bytes.Repeat([]byte{0xff}, 4096-19-4)...)
	go func() {
		for {
			c, err := g.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				for _, m := range [][]byte{msg(1, open), msg(4, nil), msg(2, update)} {
					if _, err := c.Write(m); err != nil {
						return
					}
				}
				if _, err := io.Copy(io.Discard, c); err == nil { // EOF: the speaker closed it
					g.mu.Lock()
					g.closed++
					g.mu.Unlock()
				}
			}()
		}
	}()
	return g
}

// TestBGPBadPeer: a peer that sends a malformed maximum-size UPDATE gets
// nothing from it (GoBGP treats it as a withdrawal, RFC 7606) and, silent
// afterwards, loses its session to the hold timer; nothing else changes:
// the daemon runs on, its MD5-signed session with BIRD stays up, the VIP
// stays announced and its connections answer. The garbage peer sits behind
// the router (multihop). Then: the route carries the configured community
// to BIRD, and a reload that sets a MED changes the route at once.
func TestBGPBadPeer(t *testing.T) {
	h := newHarness(t)
	topo := h.topo
	cfg := testenv.RouterBGP{ASN: routerASN, Neighbors: []testenv.BGPNeighbor{{Addr: testenv.LBIPv4(1), ASN: lbASN, Password: "s3cret-md5"}}}
	rd, err := topo.StartBIRD(bg(), require.Tool(t, "bird"), require.Tool(t, "birdc"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	garbage := startGarbagePeer(t, topo.Client, testenv.ClientIPv4, 65001)

	key := filepath.Join(t.TempDir(), "bgp.key")
	if err := os.WriteFile(key, []byte("s3cret-md5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := h.bgpConfig(1, false)
	peer := fmt.Sprintf("    - {address: \"%s\", asn: %d, hold_time: %s, keepalive: 1s}\n", testenv.RouterIPv4, routerASN, bgpHold)
	if !strings.Contains(c, peer) {
		t.Fatalf("config has no %q", peer)
	}
	c = strings.Replace(c, peer, fmt.Sprintf("    - {address: %s, asn: %d, hold_time: %s, keepalive: 1s, password_file: %s}\n    - {address: %s, asn: 65001, multihop: 2}\n",
		testenv.RouterIPv4, routerASN, bgpHold, key, testenv.ClientIPv4), 1)
	h.writeConfig(c)
	h.startDaemon()
	waitNextHops(t, topo, rd, vip4, 30*time.Second, 1)
	conns := h.openConns(20, vip4)

	st, err := h.client.BGP(bg())
	if err != nil {
		t.Fatal(err)
	}
	router := st.Peers[0]
	if router.State != "established" || !router.MD5 {
		t.Fatalf("the session with BIRD: %+v, want established and MD5-signed", router)
	}
	require.Eventually(t, 20*time.Second, func() error {
		garbage.mu.Lock()
		defer garbage.mu.Unlock()
		if garbage.closed == 0 {
			return errors.New("the speaker has not closed a session that sent the malformed UPDATE")
		}
		return nil
	})

	st, err = h.client.BGP(bg())
	if err != nil {
		t.Fatalf("the daemon after the malformed UPDATE: %v\n%s", err, h.log())
	}
	if p := st.Peers[0]; p.State != "established" || !p.Since.Equal(router.Since) {
		t.Errorf("the session with BIRD after the malformed UPDATE: %+v, want the same one, established since %s", p, router.Since)
	}
	i := slices.IndexFunc(st.Peers, func(p api.BGPPeer) bool { return p.Address == testenv.ClientIPv4 })
	if i < 0 {
		t.Fatalf("no garbage peer in %+v", st.Peers)
	}
	if p := st.Peers[i]; p.State == "established" || p.Received != 0 || p.Advertised != 0 {
		t.Errorf("the garbage peer: %+v, want its session down and no prefix counted", p)
	}
	// GoBGP's word that it parsed the UPDATE and kept nothing of it.
	if !strings.Contains(h.log(), "the received Update message was treated as withdraw") {
		t.Errorf("the daemon's log does not show the malformed UPDATE treated as a withdrawal:\n%s", h.log())
	}
	waitNextHops(t, topo, rd, vip4, time.Second, 1)
	h.checkConns(conns, "", "after the malformed UPDATE")

	// The path attributes reach the router, and a reload changes them.
	waitRoute := func(want string) {
		t.Helper()
		require.Eventually(t, 10*time.Second, func() error {
			out, err := rd.Route(bg(), netip.PrefixFrom(vip4, 32))
			if err != nil || !strings.Contains(out, want) {
				return fmt.Errorf("BIRD's route to %s lacks %q (%v):\n%s", vip4, want, err, out)
			}
			return nil
		})
	}
	waitRoute(fmt.Sprintf("BGP.community: (%d,100)", lbASN))
	h.writeConfig(strings.Replace(c, "  peers:\n", "  med: 77\n  peers:\n", 1))
	if err := h.daemon.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitRoute("BGP.med: 77")
}

// BenchmarkBGP measures, against BIRD with two nodes, how long the router
// takes to change its route: from `node drain` (the API call) until the
// drained node leaves the ECMP route, and from the moment a VIP's last
// backend fails until the VIP's route is gone (health check every 200ms,
// fall 1). Each iteration does both once; the medians are reported:
//
//	go test -run '^$' -bench '^BenchmarkBGP$' -benchtime 5x ./internal/daemon/
func BenchmarkBGP(b *testing.B) {
	h := newHarness(b, func(o *testenv.Options) { o.SecondLB = true })
	topo := h.topo
	cfg := testenv.RouterBGP{ASN: routerASN}
	for n := 1; n <= 2; n++ {
		cfg.Neighbors = append(cfg.Neighbors, testenv.BGPNeighbor{Addr: testenv.LBIPv4(n), ASN: lbASN})
	}
	rd, err := topo.StartBIRD(bg(), require.Tool(b, "bird"), require.Tool(b, "birdc"), cfg)
	if err != nil {
		b.Fatal(err)
	}
	h.bgpNode(topo.LB1, 1, false)
	h.bgpNode(topo.LB2, 2, false)
	wait := func(addr netip.Addr, nodes ...int) { waitNextHops(b, topo, rd, addr, 30*time.Second, nodes...) }
	wait(vip4, 1, 2)
	wait(vipSick, 1, 2)

	var drains, withdrawals []time.Duration
	for b.Loop() {
		start := time.Now()
		if err := h.client.NodeDrain(bg(), false); err != nil {
			b.Fatal(err)
		}
		wait(vip4, 2)
		drains = append(drains, time.Since(start))
		if err := h.client.NodeDrain(bg(), true); err != nil {
			b.Fatal(err)
		}
		wait(vip4, 1, 2)

		// vipSick's check probes the backends' own addresses on port
		// 9000: stopping fcbackend everywhere fails its last backend.
		start = time.Now()
		for i := range topo.Backends {
			h.stopServer(i)
		}
		wait(vipSick)
		withdrawals = append(withdrawals, time.Since(start))
		for i := range topo.Backends {
			h.startServer(i)
		}
		wait(vipSick, 1, 2)
	}
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2]) / float64(time.Millisecond)
	}
	b.ReportMetric(median(drains), "drain-to-route-ms")
	b.ReportMetric(median(withdrawals), "backend-fail-to-withdrawal-ms")
	b.ReportMetric(0, "ns/op") // an iteration's time is mostly waiting for the router
}

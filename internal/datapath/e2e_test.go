package datapath_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

const (
	e2eIOTimeout = 5 * time.Second // every client socket operation
	e2eIdle      = time.Minute     // a server waiting for its client's next line
	e2eTCPPort   = 80
	e2eUDPPort   = 53
	e2eTCP4Conns = 300
	e2eTCP6Conns = 100
	// UDP: at least e2eUDPMinPorts source ports per VIP, more (up to
	// e2eUDPMaxPorts) until every backend has had a flow.
	e2eUDPMinPorts = 50
	e2eUDPMaxPorts = 300

	// e2ePacketSlack bounds the packets on lb1's link that are neither sent
	// by the client towards a VIP nor replies: ARP requests (broadcast) and
	// IPv6 neighbour solicitations (multicast, flooded: snooping is off) of
	// the router and the backends, unicast NUD probes between the router and
	// lb1, MLD reports; and on the client's side its own ARP/ND with the
	// router, which never reaches lb1. A handful each; 64 is generous yet
	// far below the number of reply packets (at least one SYN-ACK and one
	// reply per connection, one per datagram: ~900), which would show up on
	// lb1 if replies went through it.
	e2ePacketSlack = 64
)

var (
	e2eVIP4 = netip.MustParseAddr("203.0.113.10")
	e2eVIP6 = netip.MustParseAddr("2001:db8:ffff::10")

	// Weights of backend1..3, per family: mixed, so that the Maglev
	// tables are weighted and differ between the families.
	e2eWeights4 = []uint32{1, 2, 3}
	e2eWeights6 = []uint32{3, 1, 2}
)

// TestEndToEndDSR runs the real balancer on lb1 of the canonical topology
// in dsr mode, with TCP and UDP servers on three backends, and checks from
// the client that every flow reaches the backend that Go predicts (through
// Datapath.Predict and independently through maglev + flowhash), that
// replies bypass the load balancer, that established connections survive
// the removal of another backend, and that the counters add up.
func TestEndToEndDSR(t *testing.T) {
	require.BPF(t)
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{Backends: 3, VIPs: []netip.Addr{e2eVIP4, e2eVIP6}})
	e := &e2e{
		topo:    topo,
		names:   make(map[netip.Addr]string),
		models:  make(map[datapath.VIP]ringModel),
		servers: make(map[string]*e2eServer),
		udpSent: make(map[datapath.VIP]map[netip.Addr]int),
	}
	for _, b := range topo.Backends {
		e.names[b.IPv4] = b.Role()
		e.names[b.IPv6] = b.Role()
	}

	// Load and attach inside lb1, so that the ifindex is lb1's eth0.
	lb := topo.LB1
	t.Cleanup(func() {
		if e.d != nil {
			if err := e.d.Close(); err != nil {
				t.Errorf("close datapath: %v", err)
			}
		}
	})
	if err := lb.Do(func() error {
		d, err := datapath.Load(datapath.Options{ConntrackEntries: 65536})
		if err != nil {
			return err
		}
		e.d = d
		return d.Attach(lb.Ifindex, datapath.AttachNative)
	}); err != nil {
		t.Fatalf("load and attach the balancer in %s: %v", lb, err)
	}
	e.checkNativeXDP(t)

	e.vipTCP4 = datapath.VIP{Addr: e2eVIP4, Port: e2eTCPPort, Proto: datapath.TCP}
	e.vipUDP4 = datapath.VIP{Addr: e2eVIP4, Port: e2eUDPPort, Proto: datapath.UDP}
	e.vipTCP6 = datapath.VIP{Addr: e2eVIP6, Port: e2eTCPPort, Proto: datapath.TCP}
	e.vipUDP6 = datapath.VIP{Addr: e2eVIP6, Port: e2eUDPPort, Proto: datapath.UDP}
	for _, vip := range []datapath.VIP{e.vipTCP4, e.vipUDP4, e.vipTCP6, e.vipUDP6} {
		bs := e.backends(vip.Addr.Is6(), nil)
		if err := e.d.AddVIP(vip, datapath.VIPConfig{Mode: datapath.ModeDSR}, bs); err != nil {
			t.Fatalf("AddVIP %s: %v", vip, err)
		}
		e.models[vip] = newRingModel(t, bs)
	}
	if got := e.d.VIPs(); len(got) != 4 {
		t.Fatalf("datapath holds %d VIPs, want 4: %+v", len(got), got)
	}

	for _, b := range topo.Backends {
		e.servers[b.Role()] = startE2EServer(t, b)
	}

	t.Cleanup(func() {
		for _, c := range e.tcp {
			c.conn.Close()
		}
	})
	s0 := e.settle(t)
	if !t.Run("TCP", e.testTCP) {
		t.FailNow() // the later steps work on the connections
	}
	t.Run("UDP", e.testUDP)
	s1 := e.settle(t)
	t.Run("DirectReturn", func(t *testing.T) { e.testDirectReturn(t, s0, s1) })
	t.Run("RemoveBackend", e.testRemoveBackend)
	t.Run("Counters", func(t *testing.T) { e.testCounters(t, s0, s1) })
}

// e2e is the state shared by the steps of TestEndToEndDSR.
type e2e struct {
	topo    *testenv.Topology
	d       *datapath.Datapath
	names   map[netip.Addr]string // backend address -> role ("backend1")
	models  map[datapath.VIP]ringModel
	servers map[string]*e2eServer

	vipTCP4, vipUDP4, vipTCP6, vipUDP6 datapath.VIP

	tcp []*tcpFlow
	// udpSent counts datagrams per UDP VIP and backend (one per flow).
	udpSent  map[datapath.VIP]map[netip.Addr]int
	udpFlows int
}

// backends returns the VIP family's backends with their weights, without
// the one named skip.
func (e *e2e) backends(v6 bool, skip *testenv.Host) []datapath.Backend {
	weights := e2eWeights4
	if v6 {
		weights = e2eWeights6
	}
	var out []datapath.Backend
	for i, h := range e.topo.Backends {
		if h == skip {
			continue
		}
		addr := h.IPv4
		if v6 {
			addr = h.IPv6
		}
		out = append(out, datapath.Backend{Addr: addr, MAC: h.MAC, Weight: weights[i]})
	}
	return out
}

// checkNativeXDP asks lb1's kernel, through netlink, whether our program is
// attached to eth0 in driver (native) mode.
func (e *e2e) checkNativeXDP(t *testing.T) {
	t.Helper()
	l, err := e.topo.LB1.Link(testenv.MainIface)
	if err != nil {
		t.Fatal(err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		t.Fatalf("lb1 %s: no XDP program attached (%+v)", testenv.MainIface, x)
	}
	if x.AttachMode != nl.XDP_ATTACHED_DRV {
		t.Fatalf("lb1 %s: XDP attach mode %d, want %d (native/driver)", testenv.MainIface, x.AttachMode, nl.XDP_ATTACHED_DRV)
	}
	info, err := e.d.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("the balancer program has no id")
	}
	if x.ProgId != uint32(id) {
		t.Fatalf("lb1 %s runs XDP program %d, the balancer is %d", testenv.MainIface, x.ProgId, id)
	}
	t.Logf("balancer (prog id %d) attached to lb1 %s (ifindex %d) in native mode", id, testenv.MainIface, e.topo.LB1.Ifindex)
}

// ringModel predicts a VIP's ring choice without the datapath package:
// pkg/maglev builds the table over the backends' address strings (as the
// datapath does; the ids are ours) and pkg/flowhash picks the slot.
type ringModel struct {
	table []uint32
	addrs []netip.Addr // by id
}

func newRingModel(t *testing.T, bs []datapath.Backend) ringModel {
	t.Helper()
	in := make([]maglev.Backend, len(bs))
	m := ringModel{addrs: make([]netip.Addr, len(bs))}
	for i, b := range bs {
		// Ids in reverse order, unlike the datapath's allocation: they
		// must not matter.
		id := uint32(len(bs) - 1 - i)
		in[i] = maglev.Backend{Name: b.Addr.String(), ID: id, Weight: b.Weight}
		m.addrs[id] = b.Addr
	}
	table, err := maglev.Build(in, maglev.DefaultSize)
	if err != nil {
		t.Fatalf("maglev.Build: %v", err)
	}
	m.table = table
	return m
}

func (m ringModel) backend(f datapath.Flow) netip.Addr {
	h := flowhash.Flow(f.Src, f.Dst, f.Sport, f.Dport, uint8(f.Proto))
	id := m.table[flowhash.Slot(h, uint32(len(m.table)))]
	if id == maglev.Unassigned {
		return netip.Addr{}
	}
	return m.addrs[id]
}

// predict returns the ring's backend for a new flow, computed both by
// Datapath.Predict (as for a SYN) and by the independent model; they must
// agree.
func (e *e2e) predict(vip datapath.VIP, f datapath.Flow) (netip.Addr, error) {
	p, err := e.d.Predict(f, true)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("Predict(%v): %w", f, err)
	}
	if p.VIP != vip {
		return netip.Addr{}, fmt.Errorf("Predict(%v) matched vip %s, want %s", f, p.VIP, vip)
	}
	model := e.models[vip].backend(f)
	if p.Backend != model || p.RingBackend != model || !model.IsValid() {
		return netip.Addr{}, fmt.Errorf("flow %v: Predict says %s (ring %s), maglev+flowhash says %s", f, p.Backend, p.RingBackend, model)
	}
	return model, nil
}

// checkConntrack requires a live connection entry that pins the flow to
// backend.
func (e *e2e) checkConntrack(f datapath.Flow, backend netip.Addr) error {
	p, err := e.d.Predict(f, false)
	if err != nil {
		return fmt.Errorf("Predict(%v): %w", f, err)
	}
	if !p.Conntrack || p.Backend != backend {
		return fmt.Errorf("flow %v: connection entry %v -> %s, want an entry for %s", f, p.Conntrack, p.Backend, backend)
	}
	return nil
}

// failures reports the first few of many similar errors.
type failures struct {
	t *testing.T
	n int
}

const maxReported = 10

func (f *failures) errorf(format string, args ...any) {
	f.t.Helper()
	f.n++
	if f.n <= maxReported {
		f.t.Errorf(format, args...)
	}
}

func (f *failures) done() {
	f.t.Helper()
	if f.n > maxReported {
		f.t.Errorf("... and %d more failures like these", f.n-maxReported)
	}
}

// ---- servers ----

// e2eServer serves one backend: a line echo on TCP and a datagram echo on
// UDP, bound to the VIPs (a UDP reply must leave with the VIP as source,
// which an unbound socket would not give it), each answer prefixed with
// the backend's name.
type e2eServer struct {
	name string

	mu       sync.Mutex
	closed   bool
	conns    map[net.Conn]bool
	accepted map[netip.AddrPort]bool // remote address of every accepted connection

	closers []io.Closer
	loops   sync.WaitGroup // accept and UDP loops
	serving sync.WaitGroup // connection handlers
}

func startE2EServer(t *testing.T, h *testenv.Host) *e2eServer {
	t.Helper()
	s := &e2eServer{name: h.Role(), conns: make(map[net.Conn]bool), accepted: make(map[netip.AddrPort]bool)}
	t.Cleanup(s.close)
	var tcp []net.Listener
	var udp []*net.UDPConn
	err := h.Do(func() error {
		for _, spec := range []struct {
			vip        netip.Addr
			tcpN, udpN string
		}{{e2eVIP4, "tcp4", "udp4"}, {e2eVIP6, "tcp6", "udp6"}} {
			l, err := net.Listen(spec.tcpN, netip.AddrPortFrom(spec.vip, e2eTCPPort).String())
			if err != nil {
				return err
			}
			tcp = append(tcp, l)
			s.closers = append(s.closers, l)
			u, err := net.ListenUDP(spec.udpN, net.UDPAddrFromAddrPort(netip.AddrPortFrom(spec.vip, e2eUDPPort)))
			if err != nil {
				return err
			}
			udp = append(udp, u)
			s.closers = append(s.closers, u)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("servers on %s: %v", h, err)
	}
	for _, l := range tcp {
		s.loops.Add(1)
		go s.acceptLoop(l)
	}
	for _, u := range udp {
		s.loops.Add(1)
		go s.udpLoop(u)
	}
	return s
}

func (s *e2eServer) acceptLoop(l net.Listener) {
	defer s.loops.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		s.accepted[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
		s.serving.Add(1)
		s.mu.Unlock()
		go s.serveTCP(c)
	}
}

func (s *e2eServer) serveTCP(c net.Conn) {
	defer s.serving.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(e2eIdle))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		c.SetWriteDeadline(time.Now().Add(e2eIOTimeout))
		if _, err := io.WriteString(c, s.name+" "+line); err != nil {
			return
		}
	}
}

func (s *e2eServer) udpLoop(u *net.UDPConn) {
	defer s.loops.Done()
	buf := make([]byte, 2048)
	for {
		u.SetReadDeadline(time.Now().Add(e2eIdle))
		n, from, err := u.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		u.SetWriteDeadline(time.Now().Add(e2eIOTimeout))
		u.WriteToUDPAddrPort(append([]byte(s.name+" "), buf[:n]...), from)
	}
}

func (s *e2eServer) sawClient(ap netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted[ap]
}

// close stops the loops, closes every connection and waits for the
// handlers.
func (s *e2eServer) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	for _, c := range s.closers {
		c.Close()
	}
	s.loops.Wait()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.serving.Wait()
}

// ---- TCP ----

// tcpFlow is one client connection and the backend it reached.
type tcpFlow struct {
	i       int
	vip     datapath.VIP
	conn    *net.TCPConn
	r       *bufio.Reader
	flow    datapath.Flow
	backend netip.Addr // predicted, and confirmed by the first reply
}

// exchange sends one line and returns the name of the backend that echoed
// it.
func (c *tcpFlow) exchange(msg string) (string, error) {
	if err := c.conn.SetDeadline(time.Now().Add(e2eIOTimeout)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c.conn, msg+"\n"); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	name, rest, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	if !ok || rest != msg {
		return "", fmt.Errorf("reply %q to %q", line, msg)
	}
	return name, nil
}

func (e *e2e) testTCP(t *testing.T) {
	// Dial from inside the client's namespace; the sockets stay there.
	var conns []*tcpFlow
	err := e.topo.Client.Do(func() error {
		dialer := net.Dialer{Timeout: e2eIOTimeout}
		for _, spec := range []struct {
			vip     datapath.VIP
			network string
			n       int
		}{{e.vipTCP4, "tcp4", e2eTCP4Conns}, {e.vipTCP6, "tcp6", e2eTCP6Conns}} {
			dst := netip.AddrPortFrom(spec.vip.Addr, spec.vip.Port).String()
			for range spec.n {
				c, err := dialer.Dial(spec.network, dst)
				if err != nil {
					return fmt.Errorf("connection %d to %s: %w", len(conns), dst, err)
				}
				conns = append(conns, &tcpFlow{i: len(conns), vip: spec.vip, conn: c.(*net.TCPConn), r: bufio.NewReader(c)})
			}
		}
		return nil
	})
	e.tcp = conns // closed by TestEndToEndDSR's cleanup
	if err != nil {
		t.Fatal(err)
	}

	fail := &failures{t: t}
	perBackend := make(map[datapath.VIP]map[string]int)
	ports := make(map[datapath.VIP]map[uint16]bool)
	for _, c := range conns {
		local := c.conn.LocalAddr().(*net.TCPAddr).AddrPort()
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		wantSrc := testenv.ClientIPv4
		if c.vip.Addr.Is6() {
			wantSrc = testenv.ClientIPv6
		}
		if local.Addr() != wantSrc {
			fail.errorf("connection %d: local address %s, want %s", c.i, local, wantSrc)
			continue
		}
		if ports[c.vip] == nil {
			ports[c.vip] = make(map[uint16]bool)
		}
		ports[c.vip][local.Port()] = true
		c.flow = datapath.Flow{Src: local.Addr(), Dst: c.vip.Addr, Sport: local.Port(), Dport: c.vip.Port, Proto: datapath.TCP}
		want, err := e.predict(c.vip, c.flow)
		if err != nil {
			fail.errorf("connection %d: %v", c.i, err)
			continue
		}
		msg := fmt.Sprintf("hello %d", c.i)
		got, err := c.exchange(msg)
		if err != nil {
			fail.errorf("connection %d (%s:%d -> %s): %v", c.i, local.Addr(), local.Port(), c.vip, err)
			continue
		}
		if got != e.names[want] {
			fail.errorf("connection %d (%v): answered by %s, predicted %s (%s)", c.i, c.flow, got, e.names[want], want)
			continue
		}
		// The backend saw the client's own address: DSR does not NAT.
		if s := e.servers[got]; s == nil || !s.sawClient(local) {
			fail.errorf("connection %d: %s accepted no connection from %s", c.i, got, local)
		}
		if err := e.checkConntrack(c.flow, want); err != nil {
			fail.errorf("connection %d: %v", c.i, err)
		}
		c.backend = want
		if perBackend[c.vip] == nil {
			perBackend[c.vip] = make(map[string]int)
		}
		perBackend[c.vip][got]++
	}
	fail.done()

	for _, vip := range []datapath.VIP{e.vipTCP4, e.vipTCP6} {
		t.Logf("%s: %d connections (%d distinct source ports), per backend %s (weights %v)",
			vip, sum(perBackend[vip]), len(ports[vip]), fmtCounts(perBackend[vip]), weightsOf(vip))
		for _, b := range e.topo.Backends {
			if perBackend[vip][b.Role()] == 0 {
				t.Errorf("%s: %s got no connection", vip, b.Role())
			}
		}
	}
	if n := len(ports[e.vipTCP4]); n < e2eTCP4Conns {
		t.Errorf("%s: %d distinct source ports, want %d", e.vipTCP4, n, e2eTCP4Conns)
	}
	if n := len(ports[e.vipTCP6]); n < e2eTCP6Conns {
		t.Errorf("%s: %d distinct source ports, want %d", e.vipTCP6, n, e2eTCP6Conns)
	}
}

// ---- UDP ----

func (e *e2e) testUDP(t *testing.T) {
	for _, vip := range []datapath.VIP{e.vipUDP4, e.vipUDP6} {
		t.Run(vip.Addr.String(), func(t *testing.T) { e.testUDPVIP(t, vip) })
	}
}

// testUDPVIP sends one datagram from each of many client sockets (so many
// source ports) and checks each reply: its source is the VIP (it came
// straight from the backend, which holds the VIP) and its backend is the
// predicted one.
func (e *e2e) testUDPVIP(t *testing.T, vip datapath.VIP) {
	network, src := "udp4", testenv.ClientIPv4
	if vip.Addr.Is6() {
		network, src = "udp6", testenv.ClientIPv6
	}
	var socks []*net.UDPConn
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	// Open sockets in batches in the client's namespace; they stay open
	// until the end so that their ports stay distinct.
	open := func(n int) error {
		return e.topo.Client.Do(func() error {
			for range n {
				s, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
				if err != nil {
					return err
				}
				socks = append(socks, s)
			}
			return nil
		})
	}
	e.udpSent[vip] = make(map[netip.Addr]int)
	fail := &failures{t: t}
	dst := netip.AddrPortFrom(vip.Addr, vip.Port)
	ports := make(map[uint16]bool)
	perBackend := make(map[string]int)
	buf := make([]byte, 2048)
	for i := 0; i < e2eUDPMaxPorts && (i < e2eUDPMinPorts || len(perBackend) < len(e.topo.Backends)); i++ {
		if i == len(socks) {
			if err := open(e2eUDPMinPorts); err != nil {
				t.Fatalf("open client UDP sockets: %v", err)
			}
		}
		s := socks[i]
		local := s.LocalAddr().(*net.UDPAddr).AddrPort()
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		ports[local.Port()] = true
		f := datapath.Flow{Src: local.Addr(), Dst: vip.Addr, Sport: local.Port(), Dport: vip.Port, Proto: datapath.UDP}
		want, err := e.predict(vip, f)
		if err != nil {
			fail.errorf("datagram %d: %v", i, err)
			continue
		}
		msg := fmt.Sprintf("datagram %d", i)
		s.SetDeadline(time.Now().Add(e2eIOTimeout))
		if _, err := s.WriteToUDPAddrPort([]byte(msg), dst); err != nil {
			fail.errorf("datagram %d: send: %v", i, err)
			continue
		}
		e.udpSent[vip][want]++
		e.udpFlows++
		n, from, err := s.ReadFromUDPAddrPort(buf)
		if err != nil {
			fail.errorf("datagram %d (%v, predicted %s): no reply: %v", i, f, e.names[want], err)
			continue
		}
		if got := netip.AddrPortFrom(from.Addr().Unmap(), from.Port()); got != dst {
			fail.errorf("datagram %d: reply from %s, want from the VIP %s", i, got, dst)
		}
		name, rest, ok := strings.Cut(string(buf[:n]), " ")
		if !ok || rest != msg {
			fail.errorf("datagram %d: reply %q to %q", i, buf[:n], msg)
			continue
		}
		if name != e.names[want] {
			fail.errorf("datagram %d (%v): answered by %s, predicted %s (%s)", i, f, name, e.names[want], want)
			continue
		}
		if err := e.checkConntrack(f, want); err != nil {
			fail.errorf("datagram %d: %v", i, err)
		}
		perBackend[name]++
	}
	fail.done()
	t.Logf("%s: %d datagrams from %d distinct source ports, per backend %s (weights %v)",
		vip, sum(perBackend), len(ports), fmtCounts(perBackend), weightsOf(vip))
	if len(ports) < e2eUDPMinPorts {
		t.Errorf("%s: %d distinct source ports, want at least %d", vip, len(ports), e2eUDPMinPorts)
	}
}

// ---- direct return ----

// snapshot is the balancer's counters and the link counters that tell
// where packets went.
type snapshot struct {
	c                  datapath.Counters
	clientTx, clientRx uint64 // client eth0
	lbRx, lbTx         uint64 // lb1 eth0
}

func (e *e2e) read(t *testing.T) snapshot {
	t.Helper()
	var s snapshot
	cl, err := e.topo.Client.Link(testenv.MainIface)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := e.topo.LB1.Link(testenv.MainIface)
	if err != nil {
		t.Fatal(err)
	}
	cs, ls := cl.Attrs().Statistics, lb.Attrs().Statistics
	if cs == nil || ls == nil {
		t.Fatal("netlink returned no link statistics")
	}
	s.clientTx, s.clientRx = cs.TxPackets, cs.RxPackets
	s.lbRx, s.lbTx = ls.RxPackets, ls.TxPackets
	if s.c, err = e.d.Counters(); err != nil {
		t.Fatal(err)
	}
	return s
}

// settle waits until the client's and lb1's links are quiet (delayed ACKs
// sent) and returns a snapshot.
func (e *e2e) settle(t *testing.T) snapshot {
	t.Helper()
	prev := e.read(t)
	for range 12 {
		time.Sleep(250 * time.Millisecond)
		cur := e.read(t)
		if cur.clientTx == prev.clientTx && cur.clientRx == prev.clientRx && cur.lbRx == prev.lbRx {
			return cur
		}
		prev = cur
	}
	return prev
}

func verdicts(c *datapath.Counters) uint64 {
	var n uint64
	for _, s := range datapath.AllStats() {
		if s.IsVerdict() {
			n += c.Stat(s)
		}
	}
	return n
}

// testDirectReturn checks, over the TCP and UDP steps, that lb1 carried the
// client's packets only: what its XDP program saw (every verdict) is about
// what the client sent, not that plus the replies the client received.
func (e *e2e) testDirectReturn(t *testing.T, s0, s1 snapshot) {
	seen := verdicts(&s1.c) - verdicts(&s0.c)
	dsr := s1.c.Stat(datapath.StatTxDSR) - s0.c.Stat(datapath.StatTxDSR)
	noVIP := s1.c.Stat(datapath.StatPassNoVIP) - s0.c.Stat(datapath.StatPassNoVIP)
	sent := s1.clientTx - s0.clientTx
	recv := s1.clientRx - s0.clientRx
	lbRx := s1.lbRx - s0.lbRx
	t.Logf("client sent %d packets and received %d; lb1 eth0 received %d; XDP saw %d (tx_dsr %d, pass_no_vip %d, other %d)",
		sent, recv, lbRx, seen, dsr, noVIP, seen-dsr-noVIP)

	// The least the client must have received: a SYN-ACK and a reply per
	// connection, a reply per datagram.
	minReplies := uint64(2*len(e.tcp) + e.udpFlows)
	if 2*e2ePacketSlack >= minReplies {
		t.Fatalf("too little traffic (%d reply packets at least) for a slack of %d to tell replies from noise", minReplies, e2ePacketSlack)
	}
	if recv < minReplies {
		t.Errorf("client received %d packets, want at least %d", recv, minReplies)
	}
	// Had the replies come through lb1, the XDP program would have seen
	// them too (as pass_no_vip: their destination is the client), that is
	// at least sent+minReplies packets.
	if seen > sent+e2ePacketSlack || seen+e2ePacketSlack < sent {
		t.Errorf("XDP saw %d packets, the client sent %d: want equal within %d (replies must not pass lb1)", seen, sent, e2ePacketSlack)
	}
	if noVIP > e2ePacketSlack {
		t.Errorf("XDP passed %d packets for no VIP, want at most %d", noVIP, e2ePacketSlack)
	}
	// Everything the client sent went to a VIP: all of it was forwarded.
	if dsr > sent || dsr+e2ePacketSlack < sent {
		t.Errorf("XDP forwarded %d packets, the client sent %d: want equal within %d", dsr, sent, e2ePacketSlack)
	}
	// The XDP program sees every frame lb1's eth0 receives (native mode),
	// and lb1 received no more than that.
	if lbRx > seen+e2ePacketSlack || lbRx+e2ePacketSlack < seen {
		t.Errorf("lb1 eth0 received %d packets, XDP saw %d: want equal within %d", lbRx, seen, e2ePacketSlack)
	}
}

// ---- backend removal ----

// testRemoveBackend removes backend2 from both TCP VIPs. Connections on
// the other backends keep their backend (connection entries); those on
// backend2 re-hash to a backend that does not know them and break.
func (e *e2e) testRemoveBackend(t *testing.T) {
	gone := e.topo.Backends[1]
	for _, vip := range []datapath.VIP{e.vipTCP4, e.vipTCP6} {
		addr := gone.IPv4
		if vip.Addr.Is6() {
			addr = gone.IPv6
		}
		if err := e.d.RemoveBackend(vip, addr); err != nil {
			t.Fatalf("RemoveBackend %s %s: %v", vip, addr, err)
		}
		e.models[vip] = newRingModel(t, e.backends(vip.Addr.Is6(), gone))
	}

	fail := &failures{t: t}
	var survivors, moved, broken int
	for _, c := range e.tcp {
		// The new ring never names backend2, and both predictions agree
		// on it.
		ring, err := e.predict(c.vip, c.flow)
		if err != nil {
			fail.errorf("connection %d: %v", c.i, err)
			continue
		}
		if e.names[ring] == gone.Role() {
			fail.errorf("connection %d: the ring still names %s", c.i, gone.Role())
		}
		if e.names[c.backend] != gone.Role() {
			survivors++
			if ring != c.backend {
				moved++ // kept on its backend by its connection entry only
			}
			if err := e.checkConntrack(c.flow, c.backend); err != nil {
				fail.errorf("connection %d: %v", c.i, err)
			}
		}
	}

	// Exchange on every connection at once, so that broken ones cost one
	// timeout at most.
	type result struct {
		name string
		err  error
	}
	results := make([]result, len(e.tcp))
	var wg sync.WaitGroup
	for i, c := range e.tcp {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name, err := c.exchange(fmt.Sprintf("again %d", c.i))
			results[i] = result{name, err}
		}()
	}
	wg.Wait()

	errKinds := make(map[string]int)
	for i, c := range e.tcp {
		r := results[i]
		want := e.names[c.backend]
		if want == gone.Role() {
			broken++
			if r.err == nil {
				fail.errorf("connection %d was on removed %s and still answered (by %s)", c.i, want, r.name)
			} else {
				errKinds[errKind(r.err)]++
			}
			continue
		}
		if r.err != nil {
			fail.errorf("connection %d (%v) on %s failed after removing %s: %v", c.i, c.flow, want, gone.Role(), r.err)
			continue
		}
		if r.name != want {
			fail.errorf("connection %d (%v) moved from %s to %s", c.i, c.flow, want, r.name)
		}
	}
	fail.done()
	t.Logf("removed %s: %d connections survived (%d of them now hash elsewhere, held by conntrack), %d on %s broke: %v",
		gone.Role(), survivors, moved, broken, gone.Role(), errKinds)
	if broken == 0 {
		t.Errorf("no connection was on %s: the step tested nothing", gone.Role())
	}
}

func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "reset by peer"):
		return "reset"
	}
	return err.Error()
}

// ---- counters ----

func (e *e2e) testCounters(t *testing.T, s0, s1 snapshot) {
	c, err := e.d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var line []string
	for _, s := range datapath.AllStats() {
		line = append(line, fmt.Sprintf("%s=%d", s, c.Stat(s)))
	}
	t.Logf("counters: %s", strings.Join(line, " "))

	if c.Stat(datapath.StatTxDSR) == 0 {
		t.Error("tx_dsr is 0")
	}
	if c.Stat(datapath.StatCtHit) == 0 {
		t.Error("ct_hit is 0")
	}
	if got, want := c.Stat(datapath.StatCtSYN), uint64(len(e.tcp)); got < want {
		t.Errorf("ct_syn = %d, want at least %d (one SYN per connection)", got, want)
	}
	// The broken connections' packets found entries of a retired backend.
	if c.Stat(datapath.StatCtStale) == 0 {
		t.Error("ct_stale is 0 after removing a backend under open connections")
	}
	for _, s := range []datapath.Stat{datapath.StatDropFragment, datapath.StatDropMalformed,
		datapath.StatDropNoBackend, datapath.StatDropBadMode, datapath.StatCtInsertFailed} {
		if n := c.Stat(s); n != 0 {
			t.Errorf("%s = %d, want 0", s, n)
		}
	}

	// Before the removal (s1, all quiet) the per-VIP and per-backend
	// counters account for every forwarded packet.
	c1 := &s1.c
	var vipSum uint64
	for _, vip := range []datapath.VIP{e.vipTCP4, e.vipUDP4, e.vipTCP6, e.vipUDP6} {
		vc := c1.VIPs[vip]
		vipSum += vc.Packets
		var beSum uint64
		var per []string
		for _, b := range e.backends(vip.Addr.Is6(), nil) {
			bc := c1.Backends[vip][b.Addr]
			beSum += bc.Packets
			per = append(per, fmt.Sprintf("%s=%d", e.names[b.Addr], bc.Packets))
			if bc.Packets == 0 || bc.Bytes == 0 {
				t.Errorf("%s: backend %s (%s) counted %d packets, %d bytes", vip, e.names[b.Addr], b.Addr, bc.Packets, bc.Bytes)
			}
			if vip.Proto == datapath.UDP {
				// One datagram per flow, no retries: exact.
				if want := uint64(e.udpSent[vip][b.Addr]); bc.Packets != want {
					t.Errorf("%s: backend %s counted %d packets, the client sent it %d datagrams", vip, e.names[b.Addr], bc.Packets, want)
				}
			}
		}
		t.Logf("%s: %d packets, %d bytes; per backend %s", vip, vc.Packets, vc.Bytes, strings.Join(per, " "))
		if beSum != vc.Packets {
			t.Errorf("%s: backends counted %d packets, the VIP %d", vip, beSum, vc.Packets)
		}
	}
	if dsr := c1.Stat(datapath.StatTxDSR) - s0.c.Stat(datapath.StatTxDSR); vipSum != dsr {
		t.Errorf("VIPs counted %d packets, tx_dsr %d", vipSum, dsr)
	}
	// Per TCP connection at least SYN, handshake ACK and the data segment.
	tcpPer := make(map[datapath.VIP]map[netip.Addr]uint64)
	for _, f := range e.tcp {
		if tcpPer[f.vip] == nil {
			tcpPer[f.vip] = make(map[netip.Addr]uint64)
		}
		tcpPer[f.vip][f.backend]++
	}
	for vip, m := range tcpPer {
		for addr, n := range m {
			if got := c1.Backends[vip][addr].Packets; got < 3*n {
				t.Errorf("%s: backend %s counted %d packets for %d connections, want at least %d", vip, e.names[addr], got, n, 3*n)
			}
		}
	}
	// After the removal the surviving backends kept counting.
	for _, vip := range []datapath.VIP{e.vipTCP4, e.vipTCP6} {
		for addr, bc := range c.Backends[vip] {
			if bc.Packets <= c1.Backends[vip][addr].Packets {
				t.Errorf("%s: backend %s counted no packets after the removal (%d before, %d after)", vip, e.names[addr], c1.Backends[vip][addr].Packets, bc.Packets)
			}
		}
		if n := len(c.Backends[vip]); n != len(e.topo.Backends)-1 {
			t.Errorf("%s: counters for %d backends after the removal, want %d", vip, n, len(e.topo.Backends)-1)
		}
	}
}

// ---- formatting ----

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func weightsOf(vip datapath.VIP) []uint32 {
	if vip.Addr.Is6() {
		return e2eWeights6
	}
	return e2eWeights4
}

package daemon_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

func bg() context.Context { return context.Background() }

var virtualAddr = netip.MustParseAddr("198.18.0.100")

// vrrpConfig is a node's config: the echo and UDP VIPs, and VRRP holding
// 198.18.0.100, the router's next hop for the VIPs.
func (h *harness) vrrpConfig(instance string, priority int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "instance: %s\nbpffs: %s\ninterfaces:\n  - name: eth0\napi:\n  socket: %s\nmetrics: {address: \"off\"}\n", instance, h.dir, h.socket)
	fmt.Fprintf(&sb, "vrrp:\n  interface: eth0\n  vrid: 51\n  priority: %d\n  advert_interval: 10\n  virtual_addresses: [%s/24]\nvips:\n", priority, virtualAddr)
	for _, v := range []struct {
		port  int
		proto string
	}{{9000, "tcp"}, {53, "udp"}} {
		fmt.Fprintf(&sb, "  - address: %s\n    port: %d\n    protocol: %s\n    backends:\n", vip4, v.port, v.proto)
		for _, b := range h.topo.Backends {
			fmt.Fprintf(&sb, "      - address: %s\n", b.IPv4)
		}
	}
	return sb.String()
}

// node returns a second daemon handle on host, sharing the topology.
func (h *harness) node(host *testenv.Host) *harness {
	n := *h
	n.lb = host
	n.socket = filepath.Join(h.t.TempDir(), "fulcrum.sock")
	n.logPath = filepath.Join(h.t.TempDir(), "daemon.log")
	n.cfgPath = filepath.Join(h.t.TempDir(), "fulcrum.yaml")
	n.client = api.NewClient(n.socket)
	return &n
}

func (h *harness) waitVRRP(state string, limit time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		v, err := h.client.VRRP(context.Background())
		if err == nil && v.State == state {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: vrrp %+v (%v), want %s\n%s", h.lb.Role(), v, err, state, h.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func setLink(t testing.TB, host *testenv.Host, up bool) {
	t.Helper()
	err := host.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if up {
			return netlink.LinkSetUp(l)
		}
		return netlink.LinkSetDown(l)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// withInterval changes a vrrpConfig's advertisement interval
// (centiseconds).
func withInterval(cfg string, cs int) string {
	return strings.Replace(cfg, "advert_interval: 10\n", fmt.Sprintf("advert_interval: %d\n", cs), 1)
}

// noUnknownUnicastFlood stops the switch from flooding unknown unicast to
// any of its ports; broadcast and multicast (ARP, VRRP) still flood.
//
// Without this, when lb1's port goes down the bridge forgets lb1's MAC and
// floods the router's frames for it to every port; lb2, hot and not
// checking the destination MAC, forwards them at once, and the outage the
// client sees is a few milliseconds whatever VRRP does. With it, frames
// reach lb2 only once its gratuitous ARP has moved the router's neighbour
// entry: the client sees the VRRP failover time.
func noUnknownUnicastFlood(t testing.TB, topo *testenv.Topology) {
	t.Helper()
	require.Tool(t, "bridge")
	for _, h := range topo.Hosts() {
		port := topo.SwitchPort(h)
		if port == "" {
			continue
		}
		if _, err := topo.Switch.Run(bg(), "bridge", "link", "set", "dev", port, "flood", "off"); err != nil {
			t.Fatal(err)
		}
	}
	out, err := topo.Switch.Run(bg(), "bridge", "-d", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "flood off") < 3 {
		t.Fatalf("flood still on:\n%s", out)
	}
}

// vipPackets is the packet counter of one of the node's VIPs (what its
// XDP program forwarded for it) in a snapshot the daemon took after since.
func (h *harness) vipPackets(proto string, port uint16, since time.Time) uint64 {
	h.t.Helper()
	st := h.statsAfter(since)
	for _, v := range st.VIPs {
		if v.VIP.Protocol == proto && v.VIP.Port == port {
			return v.Counter.Packets
		}
	}
	h.t.Fatalf("%s: no VIP %s :%d in %+v", h.lb.Role(), proto, port, st.VIPs)
	return 0
}

// statsAfter returns the node's stats from a counter snapshot taken after
// since. The daemon samples its counters every 2 s, so this may wait that
// long.
func (h *harness) statsAfter(since time.Time) api.Stats {
	h.t.Helper()
	var st api.Stats
	require.Eventually(h.t, 5*time.Second, func() error {
		var err error
		if st, err = h.client.Stats(bg()); err != nil {
			return fmt.Errorf("%s: stats: %w", h.lb.Role(), err)
		}
		if !st.Time.After(since) {
			return fmt.Errorf("%s: newest counter snapshot from %s, want one after %s", h.lb.Role(),
				st.Time.Format("15:04:05.000"), since.Format("15:04:05.000"))
		}
		return nil
	})
	return st
}

func (h *harness) vrrpStats() api.VRRP {
	h.t.Helper()
	v, err := h.client.VRRP(bg())
	if err != nil {
		h.t.Fatalf("%s: vrrp: %v", h.lb.Role(), err)
	}
	return v
}

// outage is the longest silence of the probe in a window.
type outage struct {
	gap                    time.Duration // last echo before it to first echo after it
	lastBefore, firstAfter time.Time     // those echoes' arrival times
	lost                   int           // datagrams sent in between with no echo
	sentIn                 int           // datagrams sent in between
}

// outage finds the longest time between two echoes arriving in
// [from, to], and counts the datagrams lost in it.
func (p *probe) outage(from, to time.Time) outage {
	p.mu.Lock()
	defer p.mu.Unlock()
	type echo struct {
		at  time.Time
		seq int
	}
	var echoes []echo
	for i, r := range p.reply {
		if !r.IsZero() && !r.Before(from) && !r.After(to) {
			echoes = append(echoes, echo{r, i})
		}
	}
	slices.SortFunc(echoes, func(a, b echo) int { return a.at.Compare(b.at) })
	var o outage
	var a, b echo
	for i := 1; i < len(echoes); i++ {
		if d := echoes[i].at.Sub(echoes[i-1].at); d > o.gap {
			o.gap, a, b = d, echoes[i-1], echoes[i]
		}
	}
	o.lastBefore, o.firstAfter = a.at, b.at
	for i := a.seq + 1; i < b.seq; i++ {
		o.sentIn++
		if p.reply[i].IsZero() {
			o.lost++
		}
	}
	return o
}

// lostOutside counts the datagrams without an echo that were sent before
// settle ago and are not within any of the outages.
func (p *probe) lostOutside(settle time.Duration, outages ...outage) (lost, sent int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	limit := time.Now().Add(-settle)
	for i, s := range p.sent {
		if s.After(limit) {
			break
		}
		sent++
		if !p.reply[i].IsZero() {
			continue
		}
		inside := false
		for _, o := range outages {
			// A datagram sent up to an echo's round trip before the
			// silence began is still the silence's.
			if s.After(o.lastBefore.Add(-p.interval*5)) && s.Before(o.firstAfter) {
				inside = true
			}
		}
		if !inside {
			lost++
		}
	}
	return lost, sent
}

// TestFailover runs two Fulcrum nodes with VRRP (lb1 priority 200, lb2
// 100) in front of the same backends, with 200 long-lived TCP connections
// and a UDP probe (one datagram a millisecond) through the VIP, at the
// default interval (100 ms) and at 20 ms. lb1's link goes down: lb2 takes
// over within 3 x interval + skew, every connection survives (lb2 has no
// connection entries, but its Maglev table is the same), and UDP is lost
// only within the outage. lb1 comes back and preempts: the connections
// survive again.
//
// The switch does not flood unknown unicast (noUnknownUnicastFlood), so the
// outage the probe sees is the VRRP failover and nothing else, and each
// node's VIP counters show which one forwarded.
func TestFailover(t *testing.T) {
	for _, c := range []struct {
		name     string
		interval int           // centiseconds
		bound    time.Duration // the bound on the outage
	}{
		// Master_Down_Interval = 3 x 100 + (256-100) x 10/256 cs = 360 ms,
		// the bound: see reactionBudget in testFailover.
		{"100ms", 10, 360 * time.Millisecond},
		// 3 x 20 + 1 cs = 70 ms, and the issue allows 80 ms.
		{"20ms", 2, 80 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) { testFailover(t, c.interval, c.bound) })
	}
}

// failoverPair is two nodes with VRRP (lb1 priority 200 and master, lb2
// 100 and backup) in front of the same backends, with lb2's view of lb1's
// advertisements captured.
type failoverPair struct {
	h, lb1, lb2 *harness
	heard       *advertCapture
	interval    int // centiseconds
}

func newFailoverPair(tb testing.TB, interval int) *failoverPair {
	h := newHarness(tb, func(o *testenv.Options) { o.SecondLB = true; o.VIPNextHop = virtualAddr })
	lb1, lb2 := h, h.node(h.topo.LB2)
	lb1.writeConfig(withInterval(lb1.vrrpConfig("lb1", 200), interval))
	lb2.writeConfig(withInterval(lb2.vrrpConfig("lb2", 100), interval))
	noUnknownUnicastFlood(tb, h.topo)
	lb1.startDaemon()
	lb1.waitVRRP("master", 5*time.Second)
	lb2.startDaemon()
	lb2.waitVRRP("backup", 5*time.Second)
	return &failoverPair{h: h, lb1: lb1, lb2: lb2, heard: captureAdverts(tb, h.topo.LB2, "eth0"), interval: interval}
}

// takeover is one failover from lb1 to lb2 as the probe saw it.
type takeover struct {
	down       time.Time     // lb1's link went down
	fail       outage        // the probe's longest silence around it
	lastHeard  time.Time     // lb2 last heard lb1; zero if its capture has nothing
	masterDown time.Duration // lb2's Master_Down_Interval
	became     time.Time     // lb2 became master
}

// reaction is how long after its master down timer expired lb2's
// takeover reached the probe: the timer's wake-up, the gratuitous ARP,
// the router's neighbour update and the probe's next datagram (they are
// 1 ms apart).
func (k takeover) reaction() time.Duration {
	return k.fail.firstAfter.Sub(k.lastHeard.Add(k.masterDown))
}

// failOver takes lb1's link down and measures lb2's takeover.
func (f *failoverPair) failOver(p *probe) takeover {
	f.h.t.Helper()
	k := takeover{down: time.Now(), masterDown: masterDownInterval(f.interval, 100)}
	setLink(f.h.t, f.h.topo.LB1, false)
	f.lb2.waitVRRP("master", 3*time.Second)
	k.became = f.lb2.vrrpStats().LastTransition
	// 50 echoes (50 ms of the probe) after lb2 became master: the silence
	// is over.
	p.waitEchoes(k.became, 50)
	k.fail = p.outage(k.down.Add(-50*time.Millisecond), time.Now())
	if last := f.heard.from(lb1IPv4(), k.down.Add(-time.Second), k.down); len(last) > 0 {
		k.lastHeard = last[len(last)-1]
	}
	return k
}

// failBack brings lb1's link back up, waits until lb1 has preempted lb2
// and the probe flows again, and returns the probe's longest silence.
func (f *failoverPair) failBack(p *probe) outage {
	f.h.t.Helper()
	up := time.Now()
	setLink(f.h.t, f.h.topo.LB1, true)
	f.lb1.waitVRRP("master", 5*time.Second)
	f.lb2.waitVRRP("backup", 3*time.Second)
	settled := f.lb1.vrrpStats().LastTransition
	if t2 := f.lb2.vrrpStats().LastTransition; t2.After(settled) {
		settled = t2
	}
	p.waitEchoes(settled, 50)
	return p.outage(up, time.Now())
}

func testFailover(t *testing.T, interval int, bound time.Duration) {
	f := newFailoverPair(t, interval)
	h, lb1, lb2 := f.h, f.lb1, f.lb2

	udp2, tcp2 := lb2.vipPackets("udp", 53, time.Time{}), lb2.vipPackets("tcp", 9000, time.Time{})
	udp1 := lb1.vipPackets("udp", 53, time.Time{})
	conns := h.openConns(200, vip4)
	p := h.startProbe(vip4, time.Millisecond)
	// Steady state: lb1 forwards, lb2 (hot, XDP attached) sees nothing.
	steady := time.Now().Add(300 * time.Millisecond)
	if d := lb1.vipPackets("udp", 53, steady) - udp1; d < 200 {
		t.Fatalf("lb1 forwarded %d probe datagrams in over 300 ms, want one a millisecond", d)
	}
	if d := lb2.vipPackets("udp", 53, steady) - udp2; d != 0 {
		t.Fatalf("lb2 (backup) forwarded %d datagrams before the failover: the measurement would not be lb2's takeover", d)
	}
	if d := lb2.vipPackets("tcp", 9000, steady) - tcp2; d != 0 {
		t.Fatalf("lb2 (backup) forwarded %d TCP packets before the failover", d)
	}
	if v := lb2.vrrpStats(); v.State != "backup" || v.Transitions != 1 {
		t.Fatalf("lb2 before the failover: %+v, want backup after 1 transition (a false failover?)", v)
	}

	// Node death: lb1's link goes down.
	k := f.failOver(p)
	down, fail := k.down, k.fail
	since := time.Duration(-1)
	if !k.lastHeard.IsZero() {
		since = down.Sub(k.lastHeard)
	}
	t.Logf("failover lb1 -> lb2 at a %d ms interval: outage %s (last echo via lb1 to first via lb2; bound %s), %d of %d datagrams lost in it; "+
		"lb2 heard lb1 last %s before the link went down and became master %s after",
		interval*10, fail.gap.Round(100*time.Microsecond), bound, fail.lost, fail.sentIn,
		since.Round(100*time.Microsecond), k.became.Sub(down).Round(100*time.Microsecond))
	// The last echo through lb1 may still be on its way when the link
	// goes down; a silence that began later is something else.
	if fail.lastBefore.After(down.Add(10 * time.Millisecond)) {
		t.Errorf("the longest silence began %s after lb1's link went down: it is not the failover", fail.lastBefore.Sub(down))
	}
	// The outage is lb2's Master_Down_Interval less the time since it
	// last heard lb1, plus its reaction (takeover.reaction). The phase is
	// chance: a link that dies just after an advertisement gives master
	// down + reaction. At 100 ms master down is exactly the issue's
	// 360 ms, so that case exceeds it by the reaction, which no RFC 5798
	// backup at priority 100 can avoid: the bound allows reactionBudget
	// over master down.
	//
	// The reaction itself is only held to be positive here (a backup
	// that takes over before master down is wrong whatever the load). How
	// long it is depends on what else runs: BenchmarkFailover measured a
	// mean of 1.2 ms (100 ms interval) and 1.9 ms (20 ms), worst 3.4 and
	// 5.6 ms, over 10 failovers each beside other tests on this 2-core
	// machine; 21 ms once while another process compiled. Its spread is
	// the benchmark's to report, not this test's to bound.
	const reactionBudget = 5 * time.Millisecond
	if k.lastHeard.IsZero() {
		t.Errorf("lb2's capture has no advertisement from lb1 in the second before the link went down")
	} else {
		t.Logf("reaction: first echo via lb2 %s after master down (%s) since lb2 last heard lb1", k.reaction().Round(10*time.Microsecond), k.masterDown)
		if k.reaction() < 0 {
			t.Errorf("reaction %s: lb2's takeover reached the probe before its master down interval (%s) ran out", k.reaction(), k.masterDown)
		}
	}
	if limit := max(bound, k.masterDown+reactionBudget); fail.gap > limit {
		t.Errorf("outage %s, want at most %s", fail.gap, limit)
	}
	h.checkConns(conns, "", "after failover to lb2")
	if d := lb2.vipPackets("udp", 53, time.Now()) - udp2; d < 100 {
		t.Errorf("lb2's XDP forwarded %d probe datagrams after the failover, want hundreds", d)
	}
	if d := lb2.vipPackets("tcp", 9000, time.Now()) - tcp2; d < uint64(len(conns)) {
		t.Errorf("lb2's XDP forwarded %d TCP packets for %d connections after the failover", d, len(conns))
	}

	// Preemption: lb1 comes back and takes over again.
	udp1 = lb1.vipPackets("udp", 53, time.Now())
	back := f.failBack(p)
	t.Logf("preemption lb2 -> lb1: longest silence %s, %d of %d datagrams lost in it", back.gap.Round(100*time.Microsecond), back.lost, back.sentIn)
	h.checkConns(conns, "", "after lb1 preempted back")
	if d := lb1.vipPackets("udp", 53, time.Now()) - udp1; d < 100 {
		t.Errorf("lb1's XDP forwarded %d probe datagrams after preempting, want hundreds", d)
	}
	p.stop()
	lost, sent := p.lostOutside(100*time.Millisecond, fail, back)
	t.Logf("UDP probe: %d datagrams sent, %d lost in the failover, %d in the preemption, %d elsewhere", sent, fail.lost, back.lost, lost)
	if lost != 0 {
		t.Errorf("%d datagrams lost outside the outages", lost)
	}
	v1, v2 := lb1.vrrpStats(), lb2.vrrpStats()
	t.Logf("lb1 %+v\nlb2 %+v", v1, v2)
	if v2.AdvertsReceived == 0 || v1.AdvertsReceived == 0 {
		t.Errorf("the nodes did not hear each other: lb1 received %d, lb2 received %d", v1.AdvertsReceived, v2.AdvertsReceived)
	}
}

// BenchmarkFailover measures what TestFailover does not bound: the spread
// of lb2's reaction to its master down timer (takeover.reaction), and of
// the outage, over repeated failovers and preemptions at each interval.
// Each iteration is one failover and one preemption. It reports the mean
// and worst reaction, the worst outage, and the worst outage as a ratio of
// master down (1 or just over: the outage is at most master down plus the
// reaction):
//
//	go test -run '^$' -bench '^BenchmarkFailover$' -benchtime 20x ./internal/daemon/
func BenchmarkFailover(b *testing.B) {
	for _, c := range []struct {
		name     string
		interval int // centiseconds
	}{{"100ms", 10}, {"20ms", 2}} {
		b.Run(c.name, func(b *testing.B) {
			f := newFailoverPair(b, c.interval)
			p := f.h.startProbe(vip4, time.Millisecond)
			p.waitEchoes(time.Now(), 50)
			var sum, worst, worstGap time.Duration
			n := 0
			for b.Loop() {
				k := f.failOver(p)
				if k.lastHeard.IsZero() {
					b.Fatalf("lb2's capture has no advertisement from lb1 in the second before the link went down")
				}
				r := k.reaction()
				sum, worst, worstGap = sum+r, max(worst, r), max(worstGap, k.fail.gap)
				n++
				f.failBack(p)
			}
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(sum)/float64(n), "reaction-ms")
			b.ReportMetric(ms(worst), "reaction-max-ms")
			b.ReportMetric(ms(worstGap), "outage-max-ms")
			b.ReportMetric(float64(worstGap)/float64(masterDownInterval(c.interval, 100)), "outage/masterdown")
			b.ReportMetric(0, "ns/op") // an iteration's time is mostly waiting for VRRP
		})
	}
}
func lb1IPv4() netip.Addr { return testenv.LB1IPv4 }

// masterDownInterval is RFC 5798's Master_Down_Interval of a backup at
// priority for an advertisement interval in centiseconds, computed in
// centiseconds as internal/vrrp does: 3 x interval + (256 - priority) x
// interval / 256.
func masterDownInterval(interval, priority int) time.Duration {
	return time.Duration(3*interval+(256-priority)*interval/256) * 10 * time.Millisecond
}

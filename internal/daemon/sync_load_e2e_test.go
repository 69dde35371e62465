package daemon_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// minLoadWindow is the least of how long before lb1's link goes down a
// connection may have been opened and still be lost: the sync path's delay
// (the ring buffer's 5 ms poll, the test's 10 ms batch interval, the
// datagram and the install: 14 to 78 ms at most in quiet runs) with a wide
// margin. On a machine so busy that the lags measured in the run itself
// are longer, the window is twice their sum (loadWindowOf). A connection
// opened earlier than the window was on lb2 when lb1 died, and its loss
// would be sync's failure.
const minLoadWindow = 250 * time.Millisecond

// loadWindowOf is the window of a run whose largest send lag at lb1 and
// datagram age at lb2 were send and age.
func loadWindowOf(send, age time.Duration) time.Duration {
	return max(minLoadWindow, 2*(send+age))
}

// loadConn is one connection of the load: when its dial began, and when
// it was opened (its first echo came back).
type loadConn struct {
	*conn
	dialed, opened time.Time
}

// TestSyncUnderLoad: new TCP connections at the highest rate the rig
// makes (8 dialers in the client's namespace, each opening a connection,
// exchanging a line and keeping it open) through lb1, while lb1 dies (link
// down) and lb2 takes over. The nodes' rings differ: backend3 has weight 4
// on lb1 and 1 on lb2 (a reweight that reached lb1 only), so about a third
// of the new flows survive the failover only if sync carried their entry
// to lb2 before lb1 died. After the failover every connection sends a
// line again. A connection opened more than the window before the link
// went down must survive, and so must one dialed after setting the link
// down returned (all of it went through lb2); the loss, the rate and the
// sync lag are reported. A VRRP flap before the link goes down (lb2 master
// while lb1 lives, on a machine too busy) fails the test as such.
func TestSyncUnderLoad(t *testing.T) {
	p := newSyncPair(t, true)
	h, lb1, lb2 := p.h, p.lb1, p.lb2
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	all := h.topo.Backends
	before, after := h.modelRing(all, weightsBefore...), h.modelRing(all, weightsAfter...)
	if err := lb1.client.SetWeight(bg(), web, all[2].IPv4, weightsAfter[2]); err != nil {
		t.Fatal(err)
	}
	lb1.waitRing(web.String(), ringAddrs(after, all))
	lb2.waitRing(web.String(), ringAddrs(before, all))

	var (
		mu       sync.Mutex
		conns    []loadConn
		failed   []time.Time // dials or first exchanges that failed, when they began
		failErrs []error
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	t.Cleanup(func() {
		for _, c := range conns {
			c.c.Close()
		}
	})
	// Every connection stays open, one descriptor each in this process:
	// the dials are paced so that the whole run (2 s, the takeover, 2 s)
	// stays under the open-file limit; an idle machine dials faster than
	// that (about 6000/s here, against a limit of 20000).
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	maxRate := float64(lim.Cur-1024) / 5
	pace := time.NewTicker(time.Duration(float64(time.Second) / maxRate)) // shared by the dialers
	defer pace.Stop()
	const dialers = 8
	for w := range dialers {
		wg.Go(func() {
			src := reweightSources[w%len(reweightSources)]
			// One Do for the whole loop: its thread stays in the
			// client's namespace, and so do the sockets it opens.
			err := h.topo.Client.Do(func() error {
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
				for !stop.Load() {
					<-pace.C
					dialed := time.Now()
					c, err := d.Dial("tcp", netip.AddrPortFrom(vip4, 9000).String())
					var cn *conn
					if err == nil {
						cn = &conn{c: c, r: bufio.NewReader(c)}
						cn.backend, err = cn.exchange("hello")
					}
					now := time.Now()
					mu.Lock()
					if err != nil {
						failed, failErrs = append(failed, dialed), append(failErrs, fmt.Errorf("%s: %w", now.Sub(dialed).Round(time.Millisecond), err))
						if c != nil {
							c.Close()
						}
					} else {
						conns = append(conns, loadConn{cn, dialed, now})
					}
					mu.Unlock()
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(conns) }

	// Two seconds of load at the paced rate (longer where the machine
	// dials slower), then lb1 dies; as many again after the takeover.
	loadN := int(2 * maxRate)
	loaded := func(from int) func() error {
		return func() error {
			if n := count() - from; n < loadN {
				return fmt.Errorf("%d connections opened, want %d (two seconds at the paced rate)", n, loadN)
			}
			return nil
		}
	}
	v0, err := lb2.client.VRRP(bg())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	require.Eventually(t, time.Minute, loaded(0))
	beforeDown := count()
	s1 := lb1.syncStatus()
	v1, err := lb2.client.VRRP(bg())
	if err != nil {
		t.Fatal(err)
	}
	if v1.Transitions != v0.Transitions || v1.State != "backup" {
		// lb2 took over while lb1 lived (both forwarded, by rings that
		// differ): not the failover this test measures.
		stop.Store(true)
		wg.Wait()
		t.Fatalf("VRRP flapped under the load before lb1's link went down: lb2 %s after %d transitions (worst advert gap %s, %d late adverts); the machine is too busy for this test",
			v1.State, v1.Transitions-v0.Transitions, v1.WorstAdvertGap, v1.LateAdverts)
	}
	down := time.Now()
	setLink(t, h.topo.LB1, false)
	// A packet may leave through lb1 until setLink returns: a dial is
	// "after" only if it began then.
	downDone := time.Now()
	lb2.waitVRRP("master", 3*time.Second)
	master := time.Now()
	require.Eventually(t, time.Minute, loaded(count()))
	stop.Store(true)
	wg.Wait()
	end := time.Now()
	s2 := lb2.syncStatus()

	// Every connection speaks again, through lb2.
	lcs := slices.Clone(conns)
	plain := make([]*conn, len(lcs))
	for i, c := range lcs {
		plain[i] = c.conn
	}
	loadWindow := loadWindowOf(s1.SendLag.Max, s2.ReceiveAge.Max)
	var lostBefore, lostWindow, lostAfter, window, moved int // by when opened (see inWindow)
	var firstLost, firstAfter string
	for i, r := range exchangeAll(plain, "after-failover") {
		c := lcs[i]
		ok := r.err == nil && r.backend == c.backend
		// Before the window: every packet of its handshake and first
		// exchange passed lb1 more than loadWindow before it died. After:
		// its dial began once lb1 was gone, so all of it went to lb2.
		inWindow := !c.opened.Before(down.Add(-loadWindow)) && c.dialed.Before(downDone)
		if inWindow {
			window++
		}
		if c.dialed.Before(downDone) && modelBackend(before, all, c.conn) != modelBackend(after, all, c.conn) {
			moved++
		}
		if ok {
			continue
		}
		switch {
		case c.opened.Before(down.Add(-loadWindow)):
			lostBefore++
			if firstLost == "" {
				firstLost = fmt.Sprintf("%s on %s, opened %s before the link went down: %q, %v",
					c.c.LocalAddr(), c.backend, down.Sub(c.opened).Round(time.Millisecond), r.backend, r.err)
			}
		case inWindow:
			lostWindow++
		default:
			lostAfter++
			if firstAfter == "" {
				firstAfter = fmt.Sprintf("%s on %s, dialed %s after the link went down: %q, %v",
					c.c.LocalAddr(), c.backend, c.dialed.Sub(downDone).Round(time.Millisecond), r.backend, r.err)
			}
		}
	}
	preDown := 0
	for _, c := range lcs {
		if c.dialed.Before(downDone) {
			preDown++
		}
	}
	rate := float64(beforeDown) / down.Sub(start).Seconds()
	failedBefore, failedAfter := 0, 0
	var firstFailedAfter string
	for i, f := range failed {
		if f.Before(downDone) {
			failedBefore++
			continue
		}
		failedAfter++
		if firstFailedAfter == "" {
			firstFailedAfter = fmt.Sprintf("dialed %s after the link went down, failed after %v", f.Sub(downDone).Round(time.Millisecond), failErrs[i])
		}
	}
	lost := lostBefore + lostWindow + lostAfter
	t.Logf("dials paced to at most %.0f/s (open-file limit %d)", maxRate, lim.Cur)
	t.Logf("load: %d dialers opened %d connections in %s before lb1's link went down (%.0f connections/s), %d in all over %s; lb2 master %s after the link went down (setting it down took %s)",
		dialers, beforeDown, down.Sub(start).Round(time.Millisecond), rate, len(lcs), end.Sub(start).Round(time.Millisecond), master.Sub(down).Round(time.Millisecond), downDone.Sub(down).Round(100*time.Microsecond))
	t.Logf("of the %d connections dialed through lb1 before the link went down, %d had a slot lb2's ring gives another backend (they live only by sync)", preDown, moved)
	t.Logf("lost after the failover: %d of %d (%.2f%%): %d opened more than %s before the link went down, %d dialed before it and opened within %s of it or later (of %d), %d dialed after; dials (with their first exchange) that failed: %d begun before the link went down, %d after",
		lost, len(lcs), 100*float64(lost)/float64(max(len(lcs), 1)), lostBefore, loadWindow, lostWindow, loadWindow, window, lostAfter, failedBefore, failedAfter)
	t.Logf("sync lag at lb1 (offer to send, a sample): mean %s, max %s over %d; datagram age at lb2: mean %s, max %s; lb1 overflow %v; lb2 installed %d, skipped %v, dropped %v",
		s1.SendLag.Mean(), s1.SendLag.Max, s1.SendLag.Count, s2.ReceiveAge.Mean(), s2.ReceiveAge.Max, s1.Overflow, s2.Installed, s2.Skipped, nonZeroDrops(s2.Dropped))
	if firstFailedAfter != "" {
		t.Logf("first failed dial begun after the link went down: %s", firstFailedAfter)
	}
	if failedAfter > 0 {
		t.Errorf("%d dials begun after lb1's link went down failed; the first: %s", failedAfter, firstFailedAfter)
	}
	if lostBefore > 0 {
		t.Errorf("%d connections opened more than %s before lb1's link went down were lost (first: %s)", lostBefore, loadWindow, firstLost)
	}
	if lostAfter > 0 {
		t.Errorf("%d connections dialed after lb1's link went down, all through lb2, were lost (first: %s)", lostAfter, firstAfter)
	}
	if moved < preDown/5 {
		t.Errorf("only %d of %d connections had a slot the rings disagree on; the test does not measure sync", moved, preDown)
	}
	if beforeDown < 200 {
		t.Errorf("the rig opened %d connections in 2 s; too few for a load", beforeDown)
	}
	if s1.Overflow["ring"] != 0 || s1.Overflow["queue"] != 0 {
		t.Errorf("lb1 lost entries before sending them: %v", s1.Overflow)
	}
}

package daemon_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The least-time end-to-end test's timeline: new connections arrive at
// ltRate from the start; the slow backend's share is taken over
// [ltWarm, ltSlow), when its delay is removed (the recovery); the
// recovered share over [ltSlow+ltBackAfter, ltSlow+ltBackBy], a window
// that ends ltBackBy after the recovery.
const (
	ltRate      = 60 // new connections a second
	ltWarm      = 3 * time.Second
	ltSlow      = 9 * time.Second
	ltBackAfter = 5 * time.Second
	ltBackBy    = 10 * time.Second
)

// TestLeastTimeSlowBackend: real TCP through the daemon to a least-time
// VIP (its defaults: passive response times, a 250 ms half-life) over
// three backends of weight 1 that hold each connection for 1 s, backend3
// answering 20 ms late (fcbackend -delay). Over a steady arrival of new
// connections backend3 gets at most half of its equal share (1/6 of
// them); then its delay is removed (SIGUSR1), and in the window from 5 s
// to 10 s after that it gets at least 0.8 of its equal share (4/15).
// Along the way: `fulcrum vip list` shows least-time, explain says
// least-time decided, and the decisions are counted for the VIP.
func TestLeastTimeSlowBackend(t *testing.T) {
	h := newHarness(t)
	h.slowServer(2, 20*time.Millisecond)
	h.writeConfig(h.holdConfig("least-time"))
	h.startDaemon()

	out, err := h.cli("vip", "list")
	if err != nil || !strings.Contains(out, holdVIP.String()) || !strings.Contains(out, "least-time") {
		t.Fatalf("vip list: %v, want %s shown with least-time:\n%s", err, holdVIP, out)
	}
	// Explain names least-time and lists the three backends compared.
	out, err = h.cli("explain", h.topo.Client.IPv4.String(), vip4.String(), "tcp", "40000", fmt.Sprint(holdVIP.Port), "--syn")
	if err != nil || !strings.Contains(out, " by least-time (") || strings.Count(out, " active ") != len(h.topo.Backends) ||
		!strings.Contains(out, "lower by more than 1/8 of it") {
		t.Fatalf("explain --syn: %v, want least-time comparing %d backends with the margin:\n%s", err, len(h.topo.Backends), out)
	}

	type conn struct {
		at      time.Duration // since the start
		backend string
	}
	var (
		mu     sync.Mutex
		conns  []conn
		failed []error
		wg     sync.WaitGroup
	)
	start := time.Now()
	recovered := false
	tick := time.NewTicker(time.Second / ltRate)
	defer tick.Stop()
	for now := range tick.C {
		since := now.Sub(start)
		if since >= ltSlow+ltBackBy {
			break
		}
		if !recovered && since >= ltSlow {
			// The recovery: backend3's packets no longer pass the
			// delay (fcbackend drops its route rule).
			if err := syscall.Kill(h.servers[2].Process.Pid, syscall.SIGUSR1); err != nil {
				t.Fatalf("signal backend3: %v", err)
			}
			recovered = true
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			name, err := h.namedHoldConn()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, err)
				return
			}
			conns = append(conns, conn{since, name})
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of the connections failed, e.g. %v\ndaemon log:\n%s", len(failed), failed[0], h.log())
	}
	// share returns backend3's part of the connections opened in
	// [from, to), and their number.
	share := func(from, to time.Duration) (float64, int) {
		n, slow := 0, 0
		for _, c := range conns {
			if c.at >= from && c.at < to {
				n++
				if c.backend == "backend3" {
					slow++
				}
			}
		}
		if n == 0 {
			return 0, 0
		}
		return float64(slow) / float64(n), n
	}
	equal := 1.0 / float64(len(h.topo.Backends))
	slowShare, slowN := share(ltWarm, ltSlow)
	rampShare, rampN := share(ltSlow, ltSlow+ltBackAfter)
	backShare, backN := share(ltSlow+ltBackAfter, ltSlow+ltBackBy)
	t.Logf("backend3's share: %.3f of %d while slow (%.2f of equal), %.3f of %d in the 5 s after the recovery, %.3f of %d from 5 s to 10 s after it (%.2f of equal)",
		slowShare, slowN, slowShare/equal, rampShare, rampN, backShare, backN, backShare/equal)
	if slowN < ltRate*int((ltSlow-ltWarm)/time.Second)/2 || backN < ltRate*int((ltBackBy-ltBackAfter)/time.Second)/2 {
		t.Fatalf("windows of %d and %d connections: the arrivals fell far behind %d a second", slowN, backN, ltRate)
	}
	if slowShare > equal/2 {
		t.Errorf("20 ms slower, backend3 got %.3f of the new connections, want at most half of its equal share %.3f", slowShare, equal/2)
	}
	if backShare < 0.8*equal {
		t.Errorf("from 5 s to 10 s after its recovery, backend3 got %.3f of the new connections, want at least 0.8 of its equal share, %.3f", backShare, 0.8*equal)
	}

	body := h.scrape()
	series := fmt.Sprintf(`fulcrum_scheduler_decisions_total{scheduler="least-time",vip="%s"}`, holdVIP)
	if v := metricValue(t, body, series); v < float64(len(conns)) {
		t.Errorf("%s = %v, want at least the %d connections made", series, v, len(conns))
	}
}

// namedHoldConn makes one connection to holdVIP, reads the backend's name
// and then until the backend closes, closes its end, and returns the name.
func (h *harness) namedHoldConn() (string, error) {
	var c net.Conn
	err := h.topo.Client.Do(func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 3 * time.Second}).Dial("tcp", netip.AddrPortFrom(vip4, holdVIP.Port).String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read the backend's name: %w", err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return "", fmt.Errorf("wait for the backend's close: %w", err)
	}
	return strings.TrimSpace(name), nil
}

// slowServer restarts backend i's fcbackend with -delay d, which stays in
// its arguments for any later restart.
func (h *harness) slowServer(i int, d time.Duration) {
	h.serverArgs = map[int][]string{i: {"-delay", d.String()}}
	h.stopServer(i)
	h.startServer(i)
}

package daemon_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// Flapping test timing: probes every flapInterval, rise = fall = flapN, and
// the check port toggled every flapPhase. A phase holds at most
// flapPhase/flapInterval + 1 = 2 probes, so no run of results reaches
// flapN: the state must not change.
const (
	flapInterval = 200 * time.Millisecond
	flapN        = 4
	flapPhase    = 250 * time.Millisecond
	flapTimeout  = 150 * time.Millisecond
)

// portBlock toggles a reject rule for TCP port 9000 to a backend's own
// address, in its namespace (the servers keep running).
type portBlock struct {
	t    *testing.T
	host *testenv.Host
	rule string
}

func newPortBlock(t *testing.T, b *testenv.Host) *portBlock {
	require.Tool(t, "nft")
	p := &portBlock{t: t, host: b, rule: fmt.Sprintf("ip daddr %s tcp dport 9000 reject with tcp reset", b.IPv4)}
	p.nft("add table inet fchealth")
	p.nft("add chain inet fchealth in { type filter hook input priority 0 ; }")
	return p
}

func (p *portBlock) nft(cmd string) {
	p.t.Helper()
	if out, err := p.host.Run(context.Background(), "nft", strings.Fields(cmd)...); err != nil {
		p.t.Fatalf("nft %s in %s: %v\n%s", cmd, p.host.Name, err, out)
	}
}

// set blocks (on) or opens the port.
func (p *portBlock) set(on bool) {
	if on {
		p.nft("add rule inet fchealth in " + p.rule)
	} else {
		p.nft("flush chain inet fchealth in")
	}
}

// flap toggles the port every flapPhase for d, starting blocked, ending
// open if endOpen (else blocked), and returns the longest phase seen.
func (p *portBlock) flap(d time.Duration, endOpen bool) time.Duration {
	var longest time.Duration
	on := true
	last := time.Now()
	p.set(on)
	for end := last.Add(d); time.Now().Before(end); {
		// Pacing the flap is the test: each phase must be shorter than
		// rise or fall probes.
		time.Sleep(time.Until(last.Add(flapPhase)))
		on = !on
		p.set(on)
		now := time.Now()
		longest = max(longest, now.Sub(last))
		last = now
	}
	if on == endOpen {
		p.set(!on)
		longest = max(longest, time.Since(last))
	}
	return longest
}

// upDownLines counts backend i's transition log lines to up and to down.
func (h *harness) upDownLines(i int) (up, down int) {
	b := h.topo.Backends[i]
	for _, l := range strings.Split(h.log(), "\n") {
		if !strings.Contains(l, "backend="+b.IPv4.String()+" ") {
			continue
		}
		if strings.Contains(l, `msg="backend up"`) {
			up++
		}
		if strings.Contains(l, `msg="backend down"`) {
			down++
		}
	}
	return up, down
}

// TestHealthFlapping toggles backend2's check port faster than rise/fall
// allow, with the daemon probing it for real: while up it stays up (the
// probes fail, the state does not move), once held closed it goes down
// after fall probes exactly once, flapping while down keeps it down, and
// held open it comes back after rise probes exactly once. The log, the CLI
// and the metrics show each step; backend1 and backend3 never move.
func TestHealthFlapping(t *testing.T) {
	h := newHarness(t)
	var sb strings.Builder
	fmt.Fprintf(&sb, "instance: e2e\nbpffs: %s\ninterfaces:\n  - name: eth0\napi:\n  socket: %s\nmetrics:\n  address: 127.0.0.1:9542\nvips:\n", h.dir, h.socket)
	fmt.Fprintf(&sb, "  - address: %s\n    port: 9000\n    protocol: tcp\n    health_check: {type: tcp, interval: %s, timeout: %s, rise: %d, fall: %d}\n    backends:\n",
		vip4, flapInterval, flapTimeout, flapN, flapN)
	for _, b := range h.topo.Backends {
		fmt.Fprintf(&sb, "      - address: %s\n", b.IPv4)
	}
	h.writeConfig(sb.String())
	h.startDaemon()
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	for _, name := range []string{"backend1", "backend2", "backend3"} {
		h.waitHealth(web, name, "up", 5*time.Second)
	}
	block := newPortBlock(t, h.topo.Backends[1])
	// tcp probes so far with a result (ok or fail); a series appears with
	// its first probe.
	probes := func(result string) float64 {
		body := h.scrape()
		series := `fulcrum_health_check_duration_seconds_count{kind="tcp",result="` + result + `"}`
		if !strings.Contains(body, series+" ") {
			return 0
		}
		return metricValue(t, body, series)
	}
	fails := func() float64 { return probes("fail") }
	// probed waits until the three backends, probed at the same interval,
	// have had n more probes each: n chances for backend2's state to move.
	probed := func(n int) {
		t.Helper()
		from := probes("ok") + probes("fail")
		require.Eventually(t, 5*time.Second, func() error {
			if got := probes("ok") + probes("fail") - from; got < float64(3*n) {
				return fmt.Errorf("%v probes of the 3 backends, want %d", got, 3*n)
			}
			return nil
		})
	}
	state := func(want string) {
		t.Helper()
		if got := h.backendHealth(web)["backend2"]; got.Health != want {
			t.Fatalf("backend2 is %s (%s), want %s\n%s", got.Health, got.HealthError, want, h.log())
		}
		out, err := h.cli("backend", "list", web.String())
		// WEIGHT, then ACTIVE, INACTIVE and RT, then HEALTH.
		if err != nil || !regexp.MustCompile(`198\.18\.0\.12\s+1\s+\d+\s+\d+\s+\S+\s+`+want).MatchString(out) {
			t.Fatalf("backend list does not show backend2 %s: %v\n%s", want, err, out)
		}
		series := fmt.Sprintf(`fulcrum_backend_health{backend="198.18.0.12",state="%s",vip="%s"}`, want, web)
		if v := metricValue(t, h.scrape(), series); v != 1 {
			t.Fatalf("%s = %v, want 1", series, v)
		}
	}
	failsBefore := fails()

	// 1. Flapping while up: probes fail, the state stays up.
	longest := block.flap(3*time.Second, true)
	if longest > (flapN-2)*flapInterval {
		t.Fatalf("a phase lasted %s: the machine is too slow to toggle the port faster than fall (%d × %s) allows", longest, flapN, flapInterval)
	}
	probed(2)
	state("up")
	if f := fails() - failsBefore; f < 4 {
		t.Fatalf("%v failed probes while flapping, want at least 4: the port did not flap", f)
	}
	if out, _ := h.cli("backend", "list", web.String()); !strings.Contains(out, "connection refused") {
		t.Errorf("backend list does not show the last failure of the flapping backend:\n%s", out)
	}
	if up, down := h.upDownLines(1); up != 1 || down != 0 {
		t.Fatalf("after flapping while up: backend2 logged %d ups and %d downs, want 1 (the first) and 0\n%s", up, down, h.log())
	}
	t.Logf("flapping up: %v failed probes, state held up (longest phase %s)", fails()-failsBefore, longest.Round(time.Millisecond))

	// 2. Held closed: down after fall failures, once.
	block.set(true)
	took := h.waitHealth(web, "backend2", "down", 5*time.Second)
	// fall probes at the interval: the first may come at once, the last
	// (fall-1) intervals later.
	if min := (flapN - 1) * flapInterval; took < min-50*time.Millisecond {
		t.Errorf("down %s after the port closed, faster than fall = %d probes %s apart allow (%s)", took, flapN, flapInterval, min)
	}
	if max := checkBound(flapN, flapInterval, flapTimeout); took > max {
		t.Errorf("down %s after the port closed, want within %s (checkBound)", took, max)
	}
	state("down")
	t.Logf("held closed: down after %s (fall %d × %s)", took.Round(time.Millisecond), flapN, flapInterval)

	// 3. Flapping while down: probes succeed (every open phase is longer
	// than the interval, so it holds one), the state stays down.
	longest = block.flap(3*time.Second, false)
	if longest > (flapN-2)*flapInterval {
		t.Fatalf("a phase lasted %s: the machine is too slow to toggle the port faster than rise (%d × %s) allows", longest, flapN, flapInterval)
	}
	probed(2)
	state("down")
	if up, down := h.upDownLines(1); up != 1 || down != 1 {
		t.Fatalf("after flapping while down: backend2 logged %d ups and %d downs, want 1 and 1\n%s", up, down, h.log())
	}

	// 4. Held open: up after rise successes, once.
	block.set(false)
	took = h.waitHealth(web, "backend2", "up", 5*time.Second)
	if min := (flapN - 1) * flapInterval; took < min-50*time.Millisecond {
		t.Errorf("up %s after the port opened, faster than rise = %d probes %s apart allow (%s)", took, flapN, flapInterval, min)
	}
	if max := checkBound(flapN, flapInterval, flapTimeout); took > max {
		t.Errorf("up %s after the port opened, want within %s (checkBound)", took, max)
	}
	state("up")
	t.Logf("held open: up after %s (rise %d × %s)", took.Round(time.Millisecond), flapN, flapInterval)
	probed(4)
	if up, down := h.upDownLines(1); up != 2 || down != 1 {
		t.Errorf("in all: backend2 logged %d ups and %d downs, want exactly 2 and 1 (rise/fall imply no more)\n%s", up, down, h.log())
	}
	for _, i := range []int{0, 2} {
		if up, down := h.upDownLines(i); up != 1 || down != 0 {
			t.Errorf("backend%d logged %d ups and %d downs, want 1 and 0", i+1, up, down)
		}
	}
}

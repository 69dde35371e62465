package daemon_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// soakDuration is how long TestChurnSoak churns: 20 s in `make test`,
// FULCRUM_SOAK (a Go duration, e.g. 10m) for a longer run.
func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("FULCRUM_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("FULCRUM_SOAK=%q: %v", s, err)
		}
		return d
	}
	return 20 * time.Second
}

// TestChurnSoak runs TCP and UDP traffic through the daemon while the API
// changes backends and VIPs ten times a second. backend1 is never touched:
// every connection on it must survive. The UDP stream's VIP always has
// backend1, so no datagram may be lost, and the fast path must account
// for every one: datagrams sent = packets the VIP forwarded. The daemon's
// file descriptors, threads and RSS must stay level.
func TestChurnSoak(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(h.config())
	h.startDaemon()
	ctx := context.Background()
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	dns := api.VIPRef{Protocol: "udp", Address: vip4, Port: 53}
	b := h.topo.Backends

	conns := h.openConns(40, vip4)
	onB1 := 0
	for _, c := range conns {
		if c.backend == "backend1" {
			onB1++
		}
	}
	if onB1 == 0 {
		t.Fatal("no connection landed on backend1: the survival check would prove nothing")
	}
	statsBefore, err := h.client.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := procUsage(t, h.daemon.Process.Pid)
	stream := h.startProbe(vip4, 2*time.Millisecond)

	// Traffic on the long-lived connections, every 100 ms.
	done := make(chan struct{})
	broken := make(chan string, len(conns))
	go func() {
		defer close(broken)
		for round := 0; ; round++ {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for i, c := range conns {
				if c == nil {
					continue
				}
				got, err := c.exchange(fmt.Sprintf("r%d-%d", round, i))
				switch {
				case err != nil && c.backend == "backend1":
					broken <- fmt.Sprintf("connection %d on backend1 broke in round %d: %v", i, round, err)
					conns[i] = nil
				case err != nil:
					conns[i] = nil // on a backend that churn removed: expected
				case got != c.backend:
					broken <- fmt.Sprintf("connection %d moved from %s to %s", i, c.backend, got)
					conns[i] = nil
				}
			}
		}
	}()

	// Churn: 10 changes a second.
	rng := rand.New(rand.NewPCG(1, 2))
	extra := api.VIP{VIPRef: api.VIPRef{Protocol: "tcp", Address: vip4, Port: 8080}, Mode: "dsr",
		Backends: []api.Backend{{Address: b[0].IPv4, Weight: 1}}}
	changes, extraUp := 0, false
	deadline := time.Now().Add(soakDuration(t))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ; time.Now().Before(deadline); <-tick.C {
		var err error
		switch changes % 6 {
		case 0:
			err = h.client.RemoveBackend(ctx, web, b[1].IPv4)
		case 1:
			err = h.client.AddBackend(ctx, web, api.Backend{Address: b[1].IPv4, Weight: 1})
		case 2:
			err = h.client.SetWeight(ctx, web, b[2].IPv4, uint32(rng.IntN(5)))
		case 3:
			err = h.client.SetWeight(ctx, dns, b[2].IPv4, uint32(rng.IntN(5)))
		case 4:
			if extraUp {
				err = h.client.RemoveVIP(ctx, extra.VIPRef)
			} else {
				err = h.client.AddVIP(ctx, extra)
			}
			extraUp = !extraUp
		case 5:
			err = h.client.SetWeight(ctx, web, b[0].IPv4, uint32(1+rng.IntN(5)))
		}
		if err != nil {
			t.Fatalf("change %d: %v\n%s", changes, err, h.log())
		}
		changes++
	}
	close(done)
	for msg := range broken {
		t.Error(msg)
	}
	sent, lost := stream.stopCounts()
	statsAfter := h.statsAfter(time.Now()) // counters with the stream's last datagram
	after := procUsage(t, h.daemon.Process.Pid)
	t.Logf("soak: %d changes in %s; UDP %d sent, %d lost; daemon fds %d -> %d, threads %d -> %d, RSS %d -> %d kB",
		changes, soakDuration(t), sent, lost, before.fds, after.fds, before.threads, after.threads, before.rssKB, after.rssKB)
	if lost != 0 {
		t.Errorf("UDP stream lost %d of %d datagrams during churn", lost, sent)
	}
	forwarded := vipPackets(statsAfter, dns) - vipPackets(statsBefore, dns)
	var drops uint64
	for name, v := range statsAfter.Verdicts {
		if strings.HasPrefix(name, "drop_") {
			drops += v - statsBefore.Verdicts[name]
		}
	}
	if forwarded+drops != uint64(sent) {
		t.Errorf("counters do not add up: %d datagrams sent, the VIP forwarded %d and the fast path dropped %d", sent, forwarded, drops)
	}
	if after.fds > before.fds+4 || after.threads > before.threads+4 {
		t.Errorf("daemon leaks: fds %d -> %d, threads %d -> %d", before.fds, after.fds, before.threads, after.threads)
	}
	if after.rssKB > before.rssKB+32*1024 {
		t.Errorf("daemon RSS grew from %d to %d kB", before.rssKB, after.rssKB)
	}
}

func vipPackets(s api.Stats, ref api.VIPRef) uint64 {
	for _, v := range s.VIPs {
		if v.VIP == ref {
			return v.Counter.Packets
		}
	}
	return 0
}

type usage struct{ fds, threads, rssKB int }

func procUsage(t *testing.T, pid int) usage {
	t.Helper()
	var u usage
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	u.fds = len(fds)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.Atoi(f[0])
		switch k {
		case "Threads":
			u.threads = n
		case "VmRSS":
			u.rssKB = n
		}
	}
	return u
}

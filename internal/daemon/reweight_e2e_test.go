package daemon_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// The reweight of TestReweight300Connections: backend3 from 1 to 4 of
// 1+1+1 takes its share from a third of the ring to two thirds, the least
// any ring can move for it being a third of the slots.
var (
	weightsBefore = []uint32{1, 1, 1}
	weightsAfter  = []uint32{1, 1, 4}
)

// reweightSources are the client's source addresses, so that the flows
// differ in address as well as port (the flow hash takes both).
var reweightSources = []netip.Addr{
	testenv.ClientIPv4,
	netip.MustParseAddr("198.19.1.3"),
	netip.MustParseAddr("198.19.1.4"),
	netip.MustParseAddr("198.19.1.5"),
}

// TestReweight300Connections runs 300 long-lived TCP connections, from
// four client addresses, through the daemon's fast path to the v4 echo
// VIP, and reweights it through the API so that a third of its ring
// moves (computed with pkg/maglev, and the ring the fast path holds read
// back from the pins). Every connection must keep its backend, held by
// its connection entry where its slot moved; new connections must follow
// the new ring exactly as an independent model (pkg/maglev and
// pkg/flowhash) says. Then backend1 is removed: exactly the connections
// on it break, all others keep their backends.
func TestReweight300Connections(t *testing.T) {
	t.Run("dsr", func(t *testing.T) {
		h := newHarness(t)
		h.reweight300(h.config())
	})
	t.Run("ipip", func(t *testing.T) {
		h := newHarness(t, func(o *testenv.Options) { o.RemoteBackends = true })
		h.startDecap()
		cfg := strings.Replace(h.config(), "vips:\n", fmt.Sprintf("ipip:\n  source_v4: %s\n  source_v6: %s\nvips:\n", testenv.EncapSourceV4, testenv.EncapSourceV6), 1)
		for _, proto := range []string{"tcp", "udp"} {
			cfg = strings.ReplaceAll(cfg, "    protocol: "+proto+"\n", "    protocol: "+proto+"\n    mode: ipip\n")
		}
		h.reweight300(cfg)
	})
}

// reweight300 is the body of TestReweight300Connections, with the daemon
// started on cfg (h.config, in the mode under test).
func (h *harness) reweight300(cfg string) {
	t := h.t
	for _, src := range reweightSources[1:] {
		if err := h.topo.Client.AddAddr(testenv.MainIface, netip.PrefixFrom(src, testenv.ClientNet4.Bits())); err != nil {
			t.Fatal(err)
		}
	}
	h.writeConfig(cfg)
	h.startDaemon()
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	all := h.topo.Backends
	before, after := h.modelRing(all, weightsBefore...), h.modelRing(all, weightsAfter...)
	h.waitRing(web.String(), ringAddrs(before, all))

	moved := 0
	for i := range before {
		if before[i] != after[i] {
			moved++
		}
	}
	share := float64(moved) / float64(len(before))
	t.Logf("the reweight %v -> %v moves %d of %d slots (%.1f%%)", weightsBefore, weightsAfter, moved, len(before), 100*share)
	if share < 0.25 || share > 0.45 {
		t.Fatalf("the reweight moves %.3f of the ring, want a third (between 0.25 and 0.45)", share)
	}

	// 300 connections, each answered by the backend its SYN was sent to
	// (openConns asks explain), which must be the model's.
	start := time.Now()
	var conns []*conn
	for _, src := range reweightSources {
		conns = append(conns, h.openConnsFrom(300/len(reweightSources), src, vip4)...)
	}
	h.checkModel(conns, all, weightsBefore...)
	t.Logf("300 connections opened in %s: %v", time.Since(start).Round(time.Millisecond), perBackend(conns))
	var offRing []int // connections whose slot the reweight moves
	for i, c := range conns {
		if modelBackend(after, all, c) != modelBackend(before, all, c) {
			offRing = append(offRing, i)
		}
	}
	// A third of 300 is expected; below 50 the check would mean little
	// (the chance of that with a third moved is below 1e-8).
	if len(offRing) < 50 {
		t.Fatalf("the reweight moves the slots of %d of 300 connections, want at least 50 for the test to mean something", len(offRing))
	}

	if err := h.client.SetWeight(bg(), web, all[2].IPv4, weightsAfter[2]); err != nil {
		t.Fatalf("reweight backend3 to %d: %v", weightsAfter[2], err)
	}
	h.waitRing(web.String(), ringAddrs(after, all))

	// Not one connection moves, nor is reset; the ones whose slot moved
	// are held by their connection entries.
	h.checkConns(conns, "", "after the reweight")
	h.checkExplain(conns, all, after)
	t.Logf("after the reweight, all 300 connections kept their backends, %d of them held by their entries against the ring", len(offRing))

	// New connections follow the new ring, and enough of them would have
	// gone elsewhere on the old one for that to show.
	fresh := h.openConnsFrom(150, reweightSources[1], vip4)
	h.checkModel(fresh, all, weightsAfter...)
	elsewhere := 0
	for _, c := range fresh {
		if modelBackend(before, all, c) != modelBackend(after, all, c) {
			elsewhere++
		}
	}
	t.Logf("150 new connections after the reweight: %v, %d of them on a backend the old ring would not have chosen", perBackend(fresh), elsewhere)
	if elsewhere < 20 {
		t.Fatalf("%d of 150 new connections are on a moved slot, want at least 20 for the check to mean something", elsewhere)
	}

	// Remove backend1: its connections, and only those, break.
	conns = append(conns, fresh...)
	if err := h.client.RemoveBackend(bg(), web, all[0].IPv4); err != nil {
		t.Fatalf("remove backend1: %v", err)
	}
	rest := all[1:]
	restRing := h.modelRing(rest, weightsAfter[1:]...)
	h.waitRing(web.String(), ringAddrs(restRing, rest))
	var survivors []*conn
	broken, reset, held := 0, 0, 0
	for i, r := range exchangeAll(conns, "after-remove") {
		c := conns[i]
		switch {
		case c.backend == "backend1" && r.err == nil:
			t.Errorf("connection %d (from %s) on the removed backend1 still answers, from %s", i, c.c.LocalAddr(), r.backend)
		case c.backend == "backend1" && !resetOrTimeout(r.err):
			t.Errorf("connection %d (from %s) on the removed backend1 ended with %v, want a reset or a timeout", i, c.c.LocalAddr(), r.err)
		case c.backend == "backend1":
			broken++
			if errors.Is(r.err, unix.ECONNRESET) {
				reset++
			}
		case r.err != nil:
			t.Errorf("connection %d (from %s) on %s broke when backend1 was removed: %v", i, c.c.LocalAddr(), c.backend, r.err)
		case r.backend != c.backend:
			t.Errorf("connection %d (from %s) moved from %s to %s when backend1 was removed", i, c.c.LocalAddr(), c.backend, r.backend)
		default:
			survivors = append(survivors, c)
			if h.names[modelBackend(restRing, rest, c)] != c.backend {
				held++
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	onB1 := perBackend(conns)["backend1"]
	t.Logf("backend1 removed: %d of its %d connections broke (%d of them reset); %d others kept their backends, %d of them against the ring", broken, onB1, reset, len(survivors), held)
	if onB1 < 50 || len(survivors) < 200 || held < 15 {
		t.Fatalf("backend1 held %d connections, %d survived its removal, %d of them against the ring; want at least 50, 200 and 15 for the check to mean something", onB1, len(survivors), held)
	}
	h.checkExplain(survivors, rest, restRing)
}

// checkExplain requires the daemon's explain of every connection's next
// packet to name the connection's backend, with the ring slot the model
// ring (over backends) gives, and to be decided by its connection entry.
func (h *harness) checkExplain(conns []*conn, backends []*testenv.Host, table []uint32) {
	h.t.Helper()
	for i, c := range conns {
		exp := h.explainConn(c)
		ring := modelBackend(table, backends, c)
		if h.names[exp.Backend] != c.backend || exp.RingBackend != ring || exp.Reason != "connection entry" || exp.Entry == nil || exp.Entry.State != "established" {
			h.t.Fatalf("connection %d (from %s, on %s): explain says %+v (entry %+v), want its established connection entry to %s and the model's ring slot, %s",
				i, c.c.LocalAddr(), c.backend, exp, exp.Entry, c.backend, ring)
		}
	}
}

// ringAddrs is a model ring over backends with each slot's backend
// address (IPv4) in place of its index.
func ringAddrs(table []uint32, backends []*testenv.Host) []netip.Addr {
	out := make([]netip.Addr, len(table))
	for i, b := range table {
		out[i] = backends[b].IPv4
	}
	return out
}

// perBackend counts connections by backend name.
func perBackend(conns []*conn) map[string]int {
	n := map[string]int{}
	for _, c := range conns {
		n[c.backend]++
	}
	return n
}

// reply is one connection's answer to exchangeAll.
type reply struct {
	backend string
	err     error
}

// exchangeAll sends a line on every connection at once and returns their
// answers in order: a connection that hangs costs its 3 s deadline once,
// not once per connection.
func exchangeAll(conns []*conn, round string) []reply {
	out := make([]reply, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			out[i].backend, out[i].err = c.exchange(fmt.Sprintf("%s-%d", round, i))
		})
	}
	wg.Wait()
	return out
}

// resetOrTimeout tells whether err is how a connection whose backend is
// gone ends: reset by the backend its packets now reach (which does not
// know it), or silent until the exchange's deadline.
func resetOrTimeout(err error) bool {
	return errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) || errors.Is(err, os.ErrDeadlineExceeded)
}

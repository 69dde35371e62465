package daemon_test

import (
	"strings"
	"testing"
	"time"
)

// refreshTimeout is the tcp VIP's established timeout in the refresh
// test: short, so that the test waits seconds, not the default 15 min.
const refreshTimeout = 4 * time.Second

// shortEstablished gives the tcp VIP of a vrrpConfig its own established
// timeout, refreshTimeout.
func shortEstablished(cfg string) string {
	return strings.Replace(cfg, "    protocol: tcp\n", "    protocol: tcp\n    conntrack: {timeouts: {tcp_established: 4s}}\n", 1)
}

// TestSyncRefresh: a flow that stays busy on lb1 keeps its entry fresh
// there, but lb1's fast path exports an entry only when it is made or
// changes state, so lb2's copy would expire one timeout after it was sent
// (4 s here, 15 min by default). The refresh re-sends busy entries: after
// a reweight that moves a third of the ring, while lb1 carries traffic for
// three timeouts, every connection's copy on lb2 stays (checked each
// timeout, once, without waiting for it to come back), and a failover
// then keeps every connection, the moved ones included.
func TestSyncRefresh(t *testing.T) {
	p := newSyncPair(t, true, shortEstablished)
	h, lb1, lb2 := p.h, p.lb1, p.lb2
	var conns []*conn
	for _, src := range reweightSources {
		conns = append(conns, h.openConnsFrom(300/len(reweightSources), src, vip4)...)
	}
	lb2.entriesOn(conns, 10*time.Second)
	// The reweight first: lb1's table keeps the moved flows on their old
	// backends while their traffic keeps the entries fresh (a flow idle
	// for the 4 s timeout would be gone on both nodes, rightly).
	moved := p.reweight(conns)
	before := lb1.syncStatus()

	// Three timeouts of traffic through lb1, a round every 500 ms: lb1's
	// entries stay fresh; lb2 sees none of it.
	start := time.Now()
	checks := 0
	rounds := time.NewTicker(500 * time.Millisecond)
	defer rounds.Stop()
	for round := 0; time.Since(start) < 3*refreshTimeout; round++ {
		for i, r := range exchangeAll(conns, "busy") {
			if r.err != nil || r.backend != conns[i].backend {
				t.Fatalf("round %d: connection %d on %s through lb1: %q, %v", round, i, conns[i].backend, r.backend, r.err)
			}
		}
		if time.Since(start) > time.Duration(checks+1)*refreshTimeout {
			checks++
			if err := lb2.missingEntries(conns); err != nil {
				s := lb1.syncStatus()
				t.Fatalf("%s after the copies were sent: %v (lb1 made %d refresh walks, %d entries)",
					time.Since(start).Round(time.Millisecond), err, s.Refreshes-before.Refreshes, s.RefreshEntries-before.RefreshEntries)
			}
		}
		<-rounds.C
	}
	s1, s2 := lb1.syncStatus(), lb2.syncStatus()
	walks, sent := s1.Refreshes-before.Refreshes, s1.RefreshEntries-before.RefreshEntries
	t.Logf("%s of traffic through lb1 (timeout %s): lb2 held all 300 copies at each of %d checks; lb1 made %d refresh walks re-sending %d entries; lb2 made %d walks (standby: none expected)",
		time.Since(start).Round(time.Millisecond), refreshTimeout, checks, walks, sent, s2.Refreshes)
	if checks < 2 {
		t.Errorf("lb2's copies checked %d times, want at least 2 (past two timeouts)", checks)
	}
	if walks < 3 || sent < 3*uint64(len(conns)) {
		t.Errorf("lb1 made %d refresh walks re-sending %d entries; want at least 3 walks re-sending every busy connection", walks, sent)
	}
	if s2.Refreshes != 0 {
		t.Errorf("lb2, the standby, made %d refresh walks; a standby holds copies and must not send them back", s2.Refreshes)
	}

	// Straight from the traffic to the failover.
	down := time.Now()
	setLink(t, h.topo.LB1, false)
	lb2.waitVRRP("master", 3*time.Second)
	h.checkConns(conns, "", "through lb2 after the failover, three timeouts after the copies were first sent")
	t.Logf("lb2 master and all 300 answered %s after lb1's link went down", time.Since(down).Round(time.Millisecond))
	t.Logf("all 300 connections answered through lb2 after the failover, %d of them against lb2's ring", moved)
}

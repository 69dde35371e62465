package connsync

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// TestRefresh: a node re-sends, every RefreshInterval, exactly the entries
// that saw a packet since its previous walk (Idle shorter than the time
// since), to every peer; idle ones only reach the peer once (its first
// resync). While Active says false, no walk is made.
func TestRefresh(t *testing.T) {
	all := testEntries(300)
	busy, idle := all[:100], all[100:]
	for i := range busy {
		busy[i].Idle = 0
	}
	for i := range idle {
		idle[i].Idle = time.Hour
	}
	ca, cb := listen(t), listen(t)
	var active atomic.Bool
	var asked atomic.Int64 // refresh rounds that asked whether to walk
	ta := newTable(all...)
	a, _ := start(t, Config{Conn: ca, Peers: []netip.AddrPort{addrOf(cb)},
		RefreshInterval: func() time.Duration { return 50 * time.Millisecond },
		Active:          func() bool { asked.Add(1); return active.Load() }}, ta)
	tb := &countTable{table: newTable()}
	start(t, Config{Conn: cb, Peers: []netip.AddrPort{addrOf(ca)}}, tb)

	// b's first resync carries every entry, once; Idle is not sent.
	sent := make([]Entry, len(all))
	for i, e := range all {
		e.Idle = 0
		sent[i] = e
	}
	require.Eventually(t, 10*time.Second, func() error { return tb.holds(sent) })
	// What must not happen needs time to not happen: four refresh rounds
	// that found the node inactive.
	from := asked.Load()
	require.Eventually(t, 10*time.Second, func() error {
		if n := asked.Load() - from; n < 4 {
			return fmt.Errorf("%d refresh rounds asked whether the node is active, want 4", n)
		}
		return nil
	})
	if s := a.Stats(); s.Refreshes != 0 || s.RefreshEntries != 0 {
		t.Fatalf("inactive node made %d refresh walks (%d entries); want none", s.Refreshes, s.RefreshEntries)
	}

	active.Store(true)
	require.Eventually(t, 10*time.Second, func() error {
		if s := a.Stats(); s.Refreshes < 3 {
			return fmt.Errorf("%d refresh walks", s.Refreshes)
		}
		return nil
	})
	s := a.Stats()
	if s.RefreshEntries != s.Refreshes*uint64(len(busy)) && s.RefreshEntries != (s.Refreshes-1)*uint64(len(busy)) {
		// A walk may be under way when Stats is read: the entries of the
		// finished walks only.
		t.Errorf("%d refresh walks sent %d entries; want %d a walk (the busy ones)", s.Refreshes, s.RefreshEntries, len(busy))
	}
	require.Eventually(t, 10*time.Second, func() error {
		for _, e := range busy {
			if n := tb.count(e); n < 3 {
				return fmt.Errorf("busy %v received %d times, want the resync's and at least 2 refreshes", e, n)
			}
		}
		return nil
	})
	for _, e := range idle {
		if n := tb.count(e); n != 1 {
			t.Fatalf("idle %v received %d times, want once (the resync): a refresh sends only what was seen since the last walk", e, n)
		}
	}
}

// countTable counts how often each entry is received.
type countTable struct {
	*table
	n map[tuple]int
}

func (c *countTable) Install(es []Entry) int {
	c.table.mu.Lock()
	if c.n == nil {
		c.n = map[tuple]int{}
	}
	for _, e := range es {
		c.n[keyOf(e)]++
	}
	c.table.mu.Unlock()
	return c.table.Install(es)
}

func (c *countTable) count(e Entry) int {
	c.table.mu.Lock()
	defer c.table.mu.Unlock()
	return c.n[keyOf(e)]
}

package datapath

import (
	"fmt"
	"testing"
	"time"
)

// TestSyncEntriesIdle: SyncEntries gives each entry its idle time, and an
// entry seen after the walk read the clock (its last-seen time ahead of
// the walk's clock) is idle 0 with its full lifetime, not 49 days idle and
// left out as expired. RefreshTimeout is the shortest established or UDP
// timeout of the VIPs.
func TestSyncEntriesIdle(t *testing.T) {
	d := newCTDatapath(t)
	c := ctCases()[0]
	busy, idle := c.flow(45001), c.flow(45002)
	_, b := c.ring(t, busy)
	// A negative idle time puts last-seen ahead of the clock.
	setEntry(t, d, c.vip, busy, b, ConnEstablished, -2*time.Second)
	setEntry(t, d, c.vip, idle, b, ConnEstablished, 10*time.Second)
	timeout := d.vips[c.vip].cfg.Timeouts.Normal(c.vip.Proto).of(c.vip.Proto, ConnEstablished)
	got := map[Flow]SyncEntry{}
	for e, err := range d.SyncEntries() {
		if err != nil {
			t.Fatal(err)
		}
		got[e.Flow] = e
	}
	if e, ok := got[busy]; !ok || e.Idle != 0 || e.Lifetime != timeout {
		t.Errorf("entry seen after the clock read: %+v (listed %v); want idle 0, lifetime %s", e, ok, timeout)
	}
	if e, ok := got[idle]; !ok || e.Idle < 10*time.Second || e.Idle > 11*time.Second || e.Lifetime != timeout-e.Idle {
		t.Errorf("entry idle 10s: %+v (listed %v); want idle 10s to 11s, lifetime %s less it", e, ok, timeout)
	}

	var want time.Duration
	for vip, v := range d.vips {
		if v.cfg.NoConntrack {
			continue
		}
		n := v.cfg.Timeouts.Normal(vip.Proto)
		for _, x := range []time.Duration{n.Established, n.UDP} {
			if x > 0 && (want == 0 || x < want) {
				want = x
			}
		}
	}
	if got := d.RefreshTimeout(); got != want || got == 0 {
		t.Errorf("RefreshTimeout %s, want %s (the shortest established or udp timeout)", got, want)
	}
}

// BenchmarkSyncEntries1M walks a table of 1 M live entries as connection
// sync's refresh does (SyncEntries, picking the entries seen in the last
// second), to size its interval: `go test -run '^$' -bench
// SyncEntries1M -benchmem ./internal/datapath/`. -benchmem shows what a
// walk allocates: a bounded amount, not a copy of the table.
func BenchmarkSyncEntries1M(b *testing.B) {
	d, placed := loadFilled(b, 1<<20, 4<<20)
	b.ReportAllocs()
	b.ResetTimer()
	walked, busy := 0, 0
	for range b.N {
		walked, busy = 0, 0
		for e, err := range d.SyncEntries() {
			if err != nil {
				b.Fatal(err)
			}
			walked++
			if e.Idle < time.Second {
				busy++
			}
		}
	}
	b.StopTimer()
	if walked != placed {
		b.Fatalf("walked %d entries, want the %d placed", walked, placed)
	}
	b.ReportMetric(float64(walked), "entries")
	fmt.Printf("control sync-walk-1M ms=%.1f busy=%d\n", float64(b.Elapsed().Milliseconds())/float64(b.N), busy)
}

package datapath

import (
	"fmt"
	"testing"
	"time"
)

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

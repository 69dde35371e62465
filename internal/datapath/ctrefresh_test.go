package datapath

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkSyncEntries1M walks a table of 1 M live entries as connection
// sync's refresh does (SyncEntries, picking the entries seen in the last
// second), to size its interval: `go test -run '^$' -bench
// SyncEntries1M -benchmem ./internal/datapath/`.
func BenchmarkSyncEntries1M(b *testing.B) {
	const n = 1 << 20
	d, placed := loadFilled(b, n, 4<<20)
	var before, after runtime.MemStats
	var walked, busy int
	b.ResetTimer()
	runtime.ReadMemStats(&before)
	start := time.Now()
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
	el := time.Since(start)
	runtime.ReadMemStats(&after)
	b.StopTimer()
	if walked != placed {
		b.Fatalf("walked %d entries, want the %d placed", walked, placed)
	}
	b.ReportMetric(float64(walked), "entries")
	fmt.Printf("control sync-walk-1M ms=%.1f allocs=%d bytes=%d busy=%d\n", el.Seconds()*1000/float64(b.N),
		(after.Mallocs-before.Mallocs)/uint64(b.N), (after.TotalAlloc-before.TotalAlloc)/uint64(b.N), busy)
}

package connsync

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// counter is an Installer that counts, and a Source with nothing: the
// benchmark measures sync, not a table.
type counter struct{ n atomic.Int64 }

func (c *counter) Install(es []Entry) int    { c.n.Add(int64(len(es))); return len(es) }
func (c *counter) Snapshot(func(Entry) bool) {}

// benchEntries per iteration of BenchmarkSync.
const benchEntries = 200_000

// syncRates holds each BenchmarkSync run's entries/s, for TestMain.
var syncRates []float64

// BenchmarkSync measures how many entries per second one node can offer,
// batch, authenticate and send over loopback, and a peer receive,
// authenticate, decode and install (into a counting Installer): the
// whole pipeline, both ends on this machine's two CPUs. The entries are
// testEntries' mix (a fifth IPv6, a fifth UDP). An entry lost on the way
// (a full socket buffer) is not counted, and reported.
//
//	go test -count=1 -run '^$' -bench '^BenchmarkSync$' -benchtime 5x ./internal/connsync/
func BenchmarkSync(b *testing.B) {
	ca, cb := listen(b), listen(b)
	for _, c := range []interface{ SetReadBuffer(int) error }{ca, cb} {
		if err := c.SetReadBuffer(recvBuffer); err != nil {
			b.Fatal(err)
		}
	}
	inst := &counter{}
	a, _ := start(b, Config{Conn: ca, Peers: []netip.AddrPort{addrOf(cb)}}, &counter{})
	start(b, Config{Conn: cb, Peers: []netip.AddrPort{addrOf(ca)}}, inst)
	es := testEntries(benchEntries)

	var installed, lost int64
	var took time.Duration
	cpu0 := cpuTime(b)
	for b.Loop() {
		base := inst.n.Load()
		start := time.Now()
		for i := range es {
			for !a.Offer(es[i]) {
				runtime.Gosched() // the queue is full: let the batcher run
			}
		}
		// Wait for the last entry, or for the flow to stop (a loss).
		last, lastAt := base, time.Now()
		for {
			got := inst.n.Load()
			if got-base == benchEntries {
				lastAt = time.Now()
				last = got
				break
			}
			if got != last {
				last, lastAt = got, time.Now()
			} else if time.Since(lastAt) > 500*time.Millisecond {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		installed += last - base
		lost += benchEntries - (last - base)
		took += lastAt.Sub(start)
	}
	if installed == 0 {
		b.Fatal("nothing installed")
	}
	rate := float64(installed) / took.Seconds()
	b.ReportMetric(rate, "entries/s")
	// Per CPU second of both ends together (this process): a figure the
	// other work on a shared machine inflates less than the wall time.
	b.ReportMetric(float64(installed)/(cpuTime(b)-cpu0).Seconds(), "entries/cpu-s")
	b.ReportMetric(float64(lost), "lost")
	syncRates = append(syncRates, rate)
	s := a.Stats()
	b.Logf("sender: %d datagrams, %d entries, send lag mean %s max %s (the producer outruns the batcher, so the lag is the full queue's)",
		s.SentDatagrams, s.SentEntries, s.SendLag.Mean(), s.SendLag.Max)
}

// TestMain prints, after the tests and benchmarks ran, the line scripts
// read (docs/performance.md): `sync entries/s=N`, the median of the
// BenchmarkSync runs.
func TestMain(m *testing.M) {
	code := m.Run()
	if len(syncRates) > 0 {
		s := slices.Sorted(slices.Values(syncRates))
		med := s[len(s)/2]
		if len(s)%2 == 0 {
			med = (s[len(s)/2-1] + s[len(s)/2]) / 2
		}
		fmt.Printf("sync entries/s=%.0f\n", med)
	}
	os.Exit(code)
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

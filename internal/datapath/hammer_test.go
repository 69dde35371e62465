package datapath

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// failures collects what a hammer's readers saw go wrong, from any CPU.
type failures struct {
	mu   sync.Mutex
	list []string
}

func (f *failures) add(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append(f.list, s)
}

// hammer runs write(0), write(1), ... on one goroutine while on every CPU,
// pinned, the step reader(cpu) returns runs for n = 0, 1, ..., until
// enough(rounds written) returns nil, the writer or a reader fails, or
// two minutes pass; then it stops both. It fails t on a writer's error,
// reports the readers' failures (the first 20) as errors, and returns the
// rounds written and enough's last error (nil: the hammer did its work).
func hammer(t *testing.T, write func(i int) error, reader func(cpu int, bad *failures) func(n int) error, enough func(rounds int64) error) (int64, error) {
	t.Helper()
	var stop, readerFailed atomic.Bool
	var rounds atomic.Int64
	writerDone := make(chan struct{})
	var writerErr error
	go func() {
		defer close(writerDone)
		for i := 0; !stop.Load(); i++ {
			if err := write(i); err != nil {
				writerErr = err
				return
			}
			rounds.Add(1)
		}
	}()
	var bad failures
	var wg sync.WaitGroup
	for cpu := range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := onCPU(cpu, func() error {
				step := reader(cpu, &bad)
				for n := 0; !stop.Load(); n++ {
					if err := step(n); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				readerFailed.Store(true)
				bad.add(fmt.Sprintf("cpu %d: %v", cpu, err))
			}
		}()
	}
	_, short := require.Poll(2*time.Minute, func() error {
		select {
		case <-writerDone: // failed: no more rounds will come
			return nil
		default:
		}
		if readerFailed.Load() {
			return nil
		}
		return enough(rounds.Load())
	})
	stop.Store(true)
	wg.Wait()
	<-writerDone
	if writerErr != nil {
		t.Fatalf("writer: %v", writerErr)
	}
	for i, b := range bad.list {
		if i == 20 {
			t.Errorf("... and %d more", len(bad.list)-i)
			break
		}
		t.Error(b)
	}
	return rounds.Load(), short
}

// ways counts a hammer's packets, each of which must reach one of some
// backends (by MAC).
type ways struct {
	macs           [][]byte
	packets, wrong atomic.Int64
	seen           []atomic.Int64 // by macs' index
}

func newWays(macs ...[]byte) *ways {
	return &ways{macs: macs, seen: make([]atomic.Int64, len(macs))}
}

// send runs frame through d's program on this CPU and counts where it
// went; what names the packet in a failure.
func (w *ways) send(d *Datapath, frame, out []byte, cpu int, what string, bad *failures) error {
	opts := ebpf.RunOptions{Data: frame, DataOut: out}
	v, err := d.Program().Run(&opts)
	if err != nil {
		return err
	}
	w.packets.Add(1)
	if v != xdpTX {
		w.wrong.Add(1)
		bad.add(fmt.Sprintf("cpu %d: %s: verdict %s", cpu, what, verdictNames[v]))
		return nil
	}
	for i, mac := range w.macs {
		if bytes.Equal(out[:6], mac) {
			w.seen[i].Add(1)
			return nil
		}
	}
	w.wrong.Add(1)
	bad.add(fmt.Sprintf("cpu %d: %s sent to MAC %x, none of its %d backends", cpu, what, out[:6], len(w.macs)))
	return nil
}

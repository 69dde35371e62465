// Command connclient is the client of pkg/perf's connection-rate benchmark,
// run in the client's network namespace as a process of its own (so that
// its goroutines need not be locked to threads that entered a namespace).
// Each of -clients loops connects to the next -addr in turn, writes a
// payload, reads the echo to EOF, checks it and closes, until -duration has
// passed or -max connections were made. It prints the outcome as JSON:
//
//	{"ok":31250,"failed":0,"wall_ns":2000123456,"error":""}
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what the client prints.
type Result struct {
	OK     uint64 `json:"ok"`
	Failed uint64 `json:"failed"`
	WallNS int64  `json:"wall_ns"`
	// Error is the first failure, if any.
	Error string `json:"error"`
}

var payload = []byte("fulcrum connection-rate probe\n")

func main() {
	addrs := flag.String("addr", "", "comma-separated host:port targets, used in turn (required)")
	clients := flag.Int("clients", 32, "concurrent connection loops")
	duration := flag.Duration("duration", 2*time.Second, "how long to run")
	maxConns := flag.Int64("max", 0, "stop after this many connections in all (0: no limit)")
	timeout := flag.Duration("timeout", 3*time.Second, "per connection")
	flag.Parse()
	targets := strings.Split(*addrs, ",")
	if *addrs == "" || *clients < 1 {
		fmt.Fprintln(os.Stderr, "connclient: -addr and -clients >= 1 are required")
		os.Exit(2)
	}
	res := run(targets, *clients, *duration, *maxConns, *timeout)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		os.Exit(1)
	}
}

func run(targets []string, clients int, d time.Duration, maxConns int64, timeout time.Duration) Result {
	var (
		ok, failed atomic.Uint64
		next       atomic.Int64
		once       sync.Once
		firstErr   string
		wg         sync.WaitGroup
	)
	dialer := &net.Dialer{Timeout: timeout}
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				n := next.Add(1)
				if maxConns > 0 && n > maxConns {
					return
				}
				if err := exchange(dialer, targets[int(n-1)%len(targets)], timeout); err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err.Error() })
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return Result{OK: ok.Load(), Failed: failed.Load(), WallNS: int64(time.Since(start)), Error: firstErr}
}

// exchange makes one connection: connect, write, read the echo to EOF,
// close.
func exchange(d *net.Dialer, addr string, timeout time.Duration) error {
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(payload); err != nil {
		return err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo from %s: got %q, want %q", addr, got, payload)
	}
	return nil
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/decap"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

func TestDecapUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"decap"}, "fulcrum: decap: missing --interface: want the interface that receives the encapsulated traffic, e.g. --interface eth0"},
		{[]string{"decap", "--vip", "203.0.113.10"}, "fulcrum: decap: missing --interface: want the interface that receives the encapsulated traffic, e.g. --interface eth0"},
		{[]string{"decap", "--interface", "eth0"}, "fulcrum: decap: missing --vip: want at least one VIP address, e.g. --vip 203.0.113.10"},
		{[]string{"decap", "-i", "eth0", "--vip", "web"}, `fulcrum: decap: --vip: "web" is not an IP address`},
		{[]string{"decap", "-i", "eth0", "--vip", "203.0.113.10", "--vip", "203.0.113.0/24"}, `fulcrum: decap: --vip: "203.0.113.0/24" is not an IP address`},
		{[]string{"decap", "-i", "eth0", "--vip", "203.0.113.10,203.0.113.11"}, `fulcrum: decap: --vip: "203.0.113.10,203.0.113.11" is not an IP address`},
		{[]string{"decap", "-i", "eth0", "--vip", "::ffff:203.0.113.10"}, "fulcrum: decap: --vip: ::ffff:203.0.113.10 is IPv4-mapped: write it as 203.0.113.10"},
		{[]string{"decap", "-i", "eth0", "--vip", "224.0.0.5"}, "fulcrum: decap: --vip: 224.0.0.5 is not a unicast address"},
		{[]string{"decap", "-i", "eth0", "--vip", "0.0.0.0"}, "fulcrum: decap: --vip: 0.0.0.0 is not a unicast address"},
		{[]string{"decap", "-i", "eth0", "--vip", "203.0.113.10", "extra"}, `fulcrum: decap: unexpected argument "extra" (usage: fulcrum decap)`},
		{[]string{"decap", "-i", "eth0", "--vip", "203.0.113.10", "--bogus"}, "fulcrum: decap: unknown flag --bogus (see 'fulcrum decap --help')"},
		{[]string{"decap", "--vip", "203.0.113.10", "--interface"}, "fulcrum: decap: flag --interface needs a value (see 'fulcrum decap --help')"},
	} {
		runCLI(t, tt.args...).fails(t, exitUsage, tt.want)
	}
}

func TestDecapNoSuchInterface(t *testing.T) {
	require.Root(t) // decap checks for root before it looks the interface up
	runCLI(t, "decap", "-i", "fcnosuch0", "--vip", "203.0.113.10").fails(t, exitError, "fulcrum decap: interface fcnosuch0: route ip+net: no such network interface")
}

// TestDecapRuns runs the command inside a throwaway namespace until its
// context ends: it attaches to the interface, logs one line, and on the way
// out detaches and prints its counters.
func TestDecapRuns(t *testing.T) {
	require.BPF(t)
	require.Netns(t)
	for _, format := range []string{"table", "json"} {
		t.Run(format, func(t *testing.T) {
			env := testenv.NewEnv(t)
			a, err := env.NewNamespace("peer")
			if err != nil {
				t.Fatal(err)
			}
			be, err := env.NewNamespace("backend")
			if err != nil {
				t.Fatal(err)
			}
			if err := testenv.VethPair(a, be, "eth0", "eth0"); err != nil {
				t.Fatal(err)
			}
			attached := func() bool {
				l, err := be.Link("eth0")
				if err != nil {
					t.Fatal(err)
				}
				return l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := -1
			done := make(chan error, 1)
			go func() {
				// The interface name resolves in the namespace of the
				// thread that runs the command.
				done <- be.Do(func() error {
					code = run(ctx, []string{"fulcrum", "-o", format, "decap", "--interface", "eth0",
						"--vip", "203.0.113.10", "--vip", "2001:db8:ffff::10"}, &stdout, &stderr)
					return nil
				})
			}()
			deadline := time.Now().Add(5 * time.Second)
			for !attached() {
				select {
				case err := <-done:
					t.Fatalf("decap ended before attaching (code %d, err %v): %s", code, err, stderr.String())
				case <-time.After(20 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatal("decap did not attach within 5s")
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if code != exitOK {
				t.Fatalf("exit code %d, want 0; stderr:\n%s", code, stderr.String())
			}
			if attached() {
				t.Error("XDP still attached after decap ended")
			}
			l, err := be.Link("eth0")
			if err != nil {
				t.Fatal(err)
			}
			// The one log line, but for its time.
			log := regexp.MustCompile(`^time=\S+ `).ReplaceAllString(stderr.String(), "")
			if want := fmt.Sprintf("level=INFO msg=decapsulating interface=eth0 ifindex=%d xdp=native vips=203.0.113.10,2001:db8:ffff::10\n", l.Attrs().Index); log != want {
				t.Errorf("log %q, want %q", log, want)
			}
			// The counters are whatever the interface saw (IPv6 neighbour
			// discovery, say): every counter, once, in the program's order.
			counters := map[string]uint64{}
			if format == "json" {
				if err := json.Unmarshal(stdout.Bytes(), &counters); err != nil {
					t.Fatalf("JSON counters: %v\n%s", err, stdout.String())
				}
				if names := slices.Sorted(maps.Keys(counters)); !slices.Equal(names, slices.Sorted(slices.Values(decap.CounterNames()))) {
					t.Errorf("JSON counters %v, want %v", names, decap.CounterNames())
				}
				return
			}
			for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n")[1:] {
				var name string
				var n uint64
				if _, err := fmt.Sscan(line, &name, &n); err != nil {
					t.Fatalf("counter row %q: %v", line, err)
				}
				counters[name] = n
			}
			var want bytes.Buffer
			printDecapCounters(&want, counters)
			if stdout.String() != want.String() {
				t.Errorf("counter table:\n%s\nwant:\n%s", stdout.String(), want.String())
			}
		})
	}
}

func TestDecapCounterTable(t *testing.T) {
	counters := map[string]uint64{}
	for i, name := range decap.CounterNames() {
		counters[name] = uint64(i * 1000)
	}
	var buf bytes.Buffer
	printDecapCounters(&buf, counters)
	golden(t, "decap_counters.golden", buf.String())
}

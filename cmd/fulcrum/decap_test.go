package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/decap"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

func TestDecapUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"decap"}, "fulcrum: decap: missing --interface: want the interface that receives the encapsulated traffic, e.g. --interface eth0"},
		{[]string{"decap", "--vip", "203.0.113.10"}, "fulcrum: decap: missing --interface:"},
		{[]string{"decap", "--interface", "eth0"}, "fulcrum: decap: missing --vip: want at least one VIP address, e.g. --vip 203.0.113.10"},
		{[]string{"decap", "-i", "eth0", "--vip", "web"}, `fulcrum: decap: --vip: "web" is not an IP address`},
		{[]string{"decap", "-i", "eth0", "--vip", "203.0.113.10", "--vip", "203.0.113.0/24"}, `fulcrum: decap: --vip: "203.0.113.0/24" is not an IP address`},
		{[]string{"decap", "-i", "eth0", "--vip", "203.0.113.10,203.0.113.11"}, `fulcrum: decap: --vip: "203.0.113.10,203.0.113.11" is not an IP address`},
		{[]string{"decap", "-i", "eth0", "--vip", "::ffff:203.0.113.10"}, "fulcrum: decap: --vip: ::ffff:203.0.113.10 is IPv4-mapped: write it as 203.0.113.10"},
		{[]string{"decap", "-i", "eth0", "--vip", "224.0.0.5"}, "fulcrum: decap: --vip: 224.0.0.5 is not a unicast address"},
		{[]string{"decap", "-i", "eth0", "--vip", "0.0.0.0"}, "fulcrum: decap: --vip: 0.0.0.0 is not a unicast address"},
		{[]string{"decap", "-i", "eth0", "--vip", "203.0.113.10", "extra"}, `fulcrum: decap: unexpected argument "extra"`},
		{[]string{"decap", "-i", "eth0", "--vip", "203.0.113.10", "--bogus"}, "fulcrum: decap: unknown flag --bogus (see 'fulcrum decap --help')"},
		{[]string{"decap", "--vip", "203.0.113.10", "--interface"}, "fulcrum: decap: flag --interface needs a value"},
	} {
		r := runCLI(t, tt.args...)
		r.expect(t, exitUsage, nil, tt.want)
		if r.stdout != "" {
			t.Errorf("%v: stdout %q, want none", tt.args, r.stdout)
		}
	}
}

func TestDecapNoSuchInterface(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: decap checks for root before it looks the interface up")
	}
	r := runCLI(t, "decap", "-i", "fcnosuch0", "--vip", "203.0.113.10")
	r.expect(t, exitError, nil, "fulcrum decap: interface fcnosuch0: ")
}

// TestDecapRuns runs the command inside a throwaway namespace until its
// context ends: it attaches to the interface, logs one line, and on the way
// out detaches and prints its counters.
func TestDecapRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: decap loads a BPF program and makes namespaces, which needs root")
	}
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
			log := strings.TrimSpace(stderr.String())
			if strings.Count(log, "\n") != 0 || !strings.Contains(log, `msg=decapsulating interface=eth0`) ||
				!strings.Contains(log, "xdp=native vips=203.0.113.10,2001:db8:ffff::10") {
				t.Errorf("log is not the one expected line:\n%s", log)
			}
			if format == "json" {
				var counters map[string]uint64
				decodeJSON(t, stdout.String(), &counters)
				if len(counters) != len(decap.CounterNames()) {
					t.Errorf("JSON counters %v, want the %d counters %v", counters, len(decap.CounterNames()), decap.CounterNames())
				}
				return
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if len(lines) != 1+len(decap.CounterNames()) || !strings.HasPrefix(lines[0], "COUNTER") {
				t.Fatalf("counter table:\n%s", stdout.String())
			}
			for i, name := range decap.CounterNames() {
				if f := strings.Fields(lines[1+i]); len(f) != 2 || f[0] != name {
					t.Errorf("row %d = %q, want counter %s and a number", i+1, lines[1+i], name)
				}
			}
		})
	}
}

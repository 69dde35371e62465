package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// TestConnList: the table (a fixed layout, printed as entries arrive) and
// the JSON lines, with the filter passed to the daemon as given.
func TestConnList(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "conn", "list").checkGolden(t, "conn_list.golden")
	if got := d.fake.lastCall(); got != "Conns " {
		t.Errorf("conn list: daemon call %q, want an unfiltered Conns", got)
	}
	d.run(t, "conn", "ls", "tcp/203.0.113.10:80", "--backend", "198.18.0.11", "--state", "Active", "--limit", "2").checkGolden(t, "conn_list_filtered.golden")
	if got, want := d.fake.lastCall(), "Conns ?backend=198.18.0.11&limit=2&state=active&vip=tcp%2F203.0.113.10%3A80"; got != want {
		t.Errorf("conn list with filters: daemon call %q, want %q", got, want)
	}

	r := d.run(t, "conn", "list", "-o", "json")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("conn list -o json: exit %d, stderr %q", r.code, r.stderr)
	}
	var got []api.Conn
	for line := range strings.Lines(r.stdout) {
		var c api.Conn
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("conn list -o json: line %q: %v", line, err)
		}
		got = append(got, c)
	}
	if fmt.Sprint(got) != fmt.Sprint(newFake().conns) {
		t.Errorf("conn list -o json:\n got %v\nwant %v", got, newFake().conns)
	}

	d.fake.update(func(f *fakeController) { f.conns = nil })
	d.run(t, "conn", "list").check(t, 0, "PRO  STATE           IDLE  EXPIRES  CLIENT                 VIRTUAL                BACKEND\n0 entries\n", "")
	d.fake.update(func(f *fakeController) {
		f.err = fmt.Errorf("walk connection table ct_v4: %w", errors.New("bad things"))
	})
	d.run(t, "conn", "list").check(t, exitError, "PRO  STATE           IDLE  EXPIRES  CLIENT                 VIRTUAL                BACKEND\n",
		"fulcrum: walk connection table ct_v4: bad things\n")

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"203.0.113.10:80"}, `fulcrum: conn list: vip "203.0.113.10:80": want PROTO/ADDRESS:PORT, e.g. tcp/203.0.113.10:80 or udp/[2001:db8::1]:53`},
		{[]string{"--backend", "web1"}, `fulcrum: conn list: backend "web1" is not an IP address: want the backend's IP address, e.g. 198.18.0.12`},
		{[]string{"--state", "open"}, `fulcrum: conn list: --state "open": want active, inactive, established, syn, fin or closed`},
		{[]string{"--limit", "-1"}, `fulcrum: conn list: invalid value "-1" for flag --limit: want a whole number (see 'fulcrum conn list --help')`},
		{[]string{"tcp/203.0.113.10:80", "x"}, `fulcrum: conn list: unexpected argument "x" (usage: fulcrum conn list [VIP])`},
	} {
		runCLI(t, append([]string{"--socket", "/nonexistent/api.sock", "conn", "list"}, tt.args...)...).fails(t, exitUsage, tt.want)
	}
}

// TestConnFlush: --yes deletes at once; without it a terminal is asked
// (and only y or yes goes ahead), and anything else is refused.
func TestConnFlush(t *testing.T) {
	d := startDaemon(t)
	d.fake.update(func(f *fakeController) { f.flushed = 12 })
	d.run(t, "conn", "flush", "tcp/203.0.113.10:80", "--yes").check(t, 0, "deleted 12 connection entries of tcp/203.0.113.10:80\n", "")
	if got, want := d.fake.lastCall(), "FlushConns ?vip=tcp%2F203.0.113.10%3A80"; got != want {
		t.Errorf("conn flush VIP: daemon call %q, want %q", got, want)
	}
	d.run(t, "conn", "flush", "--backend", "198.18.0.12", "-y", "-o", "json").check(t, 0, "{\n  \"deleted\": 12\n}\n", "")
	if got, want := d.fake.lastCall(), "FlushConns ?backend=198.18.0.12"; got != want {
		t.Errorf("conn flush --backend: daemon call %q, want %q", got, want)
	}

	// Without a terminal and without --yes: refused, nothing sent.
	terminal, in := stdinTerminal, stdin
	t.Cleanup(func() { stdinTerminal, stdin = terminal, in })
	stdinTerminal = func() bool { return false }
	calls := len(d.fake.calls)
	d.run(t, "conn", "flush", "tcp/203.0.113.10:80").fails(t, exitUsage,
		"fulcrum: conn flush: stdin is not a terminal, so it cannot ask; pass --yes to delete the entries of tcp/203.0.113.10:80")

	// On a terminal: asked; "n" (or nothing) deletes nothing, "y" does.
	stdinTerminal = func() bool { return true }
	prompt := "delete the connection entries of tcp/203.0.113.10:80 backend 198.18.0.12? Their flows will take the ring again. [y/N] "
	stdin = strings.NewReader("n\n")
	d.run(t, "conn", "flush", "tcp/203.0.113.10:80", "--backend", "198.18.0.12").check(t, exitError, "",
		prompt+"fulcrum: conn flush: not confirmed; nothing deleted\n")
	stdin = strings.NewReader("")
	d.run(t, "conn", "flush", "tcp/203.0.113.10:80", "--backend", "198.18.0.12").check(t, exitError, "",
		prompt+"fulcrum: conn flush: not confirmed; nothing deleted\n")
	if len(d.fake.calls) != calls {
		t.Errorf("unconfirmed flushes called the daemon: %v", d.fake.calls[calls:])
	}
	d.fake.update(func(f *fakeController) { f.flushed = 1 })
	stdin = strings.NewReader("yes\n")
	d.run(t, "conn", "flush", "tcp/203.0.113.10:80", "--backend", "198.18.0.12").check(t, 0,
		"deleted 1 connection entry of tcp/203.0.113.10:80 backend 198.18.0.12\n", prompt)

	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "fulcrum: conn flush: give a VIP, --backend ADDRESS, or both (a flush of the whole table is not offered)"},
		{[]string{"--yes"}, "fulcrum: conn flush: give a VIP, --backend ADDRESS, or both (a flush of the whole table is not offered)"},
		{[]string{"tcp/x:80", "--yes"}, `fulcrum: conn flush: vip "tcp/x:80": ParseAddr("x"): unable to parse IP (want ADDRESS:PORT, IPv6 in brackets)`},
		{[]string{"--backend", "nope", "--yes"}, `fulcrum: conn flush: backend "nope" is not an IP address: want the backend's IP address, e.g. 198.18.0.12`},
		{[]string{"--state", "syn", "--yes"}, "fulcrum: conn flush: unknown flag --state (see 'fulcrum conn flush --help')"},
	} {
		runCLI(t, append([]string{"--socket", "/nonexistent/api.sock", "conn", "flush"}, tt.args...)...).fails(t, exitUsage, tt.want)
	}
}

// TestBackendDrainWait: --wait asks the daemon to drain and wait for
// --timeout; no active connection left exits 0, some left exits 3.
func TestBackendDrainWait(t *testing.T) {
	d := startDaemon(t)
	d.fake.update(func(f *fakeController) {
		f.backendConns = api.BackendConns{Empty: true, Inactive: 2, Waited: 1500 * time.Millisecond}
	})
	d.run(t, "backend", "drain", "tcp/203.0.113.10:80", "198.18.0.12", "--wait", "--timeout", "20s").check(t, 0,
		"drained backend 198.18.0.12 of tcp/203.0.113.10:80: no active connection left after 1.5s (2 inactive)\n", unsavedNotice+"\n")
	n := len(d.fake.calls)
	if got := strings.Join(d.fake.calls[n-2:], "; "); got != "SetWeight tcp/203.0.113.10:80 198.18.0.12 0; BackendConns tcp/203.0.113.10:80 198.18.0.12 wait=20s" {
		t.Errorf("drain --wait: daemon calls %q", got)
	}
	d.fake.update(func(f *fakeController) {
		f.backendConns = api.BackendConns{Active: 2, Inactive: 1, Waited: 20 * time.Second}
	})
	d.run(t, "backend", "drain", "tcp/203.0.113.10:80", "198.18.0.12", "--wait", "--timeout", "20s").check(t, exitTimeout, "",
		unsavedNotice+"\nfulcrum: backend drain: backend 198.18.0.12 of tcp/203.0.113.10:80 still holds 2 active connections after 20s (it takes no new flows)\n")
	r := d.run(t, "-o", "json", "backend", "drain", "tcp/203.0.113.10:80", "198.18.0.12", "--wait")
	if r.code != exitTimeout || !strings.Contains(r.stdout, `"active": 2`) {
		t.Errorf("drain --wait -o json, still active: exit %d, stdout %q; want %d and the counts", r.code, r.stdout, exitTimeout)
	}
	if got := d.fake.lastCall(); got != "BackendConns tcp/203.0.113.10:80 198.18.0.12 wait=5m0s" {
		t.Errorf("drain --wait without --timeout: daemon call %q, want a wait of 5m0s", got)
	}
	// Without --wait, drain is the weight change it always was.
	d.run(t, "backend", "drain", "tcp/203.0.113.10:80", "198.18.0.11").check(t, 0,
		"draining backend 198.18.0.11 of tcp/203.0.113.10:80: no new flows, established flows stay\n", unsavedNotice+"\n")
	if got := d.fake.lastCall(); got != "SetWeight tcp/203.0.113.10:80 198.18.0.11 0" {
		t.Errorf("drain: daemon call %q", got)
	}
	runCLI(t, "--socket", "/nonexistent/api.sock", "backend", "drain", "tcp/203.0.113.10:80", "198.18.0.11", "--wait", "--timeout", "0s").fails(t, exitUsage,
		"fulcrum: backend drain: --timeout 0s: want a duration above 0 and at most 24h0m0s")
}

// Package require holds what tests need from the machine and how they wait.
//
// A test that needs root, a kernel feature or a tool says so with one call
// (Root, BPF, Netns, Tool). What is missing is named with the command or
// package that provides it. Outside `make test` the test then skips; with
// FULCRUM_TEST_STRICT=1 in the environment, as `make test` (and so CI) sets
// it, the same message fails the test: there a skip would leave untested
// what the run claims to have tested.
//
// Eventually polls a condition with a deadline instead of sleeping for a
// guessed time, and a failure says what the condition last saw.
package require

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// StrictEnv is the environment variable that turns a missing privilege,
// kernel feature or tool into a test failure. Any value but "" and "0"
// counts, so that FULCRUM_TEST_STRICT=true does not quietly skip.
const StrictEnv = "FULCRUM_TEST_STRICT"

// Strict reports whether StrictEnv is set.
func Strict() bool {
	v := os.Getenv(StrictEnv)
	return v != "" && v != "0"
}

// missing skips tb, or fails it under StrictEnv, with the same text.
func missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...) + " (" + StrictEnv + "=1 turns this skip into a failure)"
	if Strict() {
		tb.Fatal(msg)
		return // only for a testing.TB whose Fatal returns
	}
	tb.Skip(msg)
}

// Root requires an effective user id of 0: the privileged tests make network
// namespaces, load BPF programs, open raw sockets and set socket marks, and
// root is what gives all of those (CAP_SYS_ADMIN, CAP_BPF, CAP_NET_ADMIN,
// CAP_NET_RAW).
func Root(tb testing.TB) {
	tb.Helper()
	if uid := os.Geteuid(); uid != 0 {
		missing(tb, "needs root (namespaces, BPF, raw sockets), running as uid %d: run the tests as root (sudo -E go test)", uid)
	}
}

// BPF requires that this process can load XDP programs and run them with
// BPF_PROG_RUN: root, and a kernel built with BPF and XDP (Linux 5.x with
// CONFIG_BPF_SYSCALL; the balancer is tested on 6.x).
func BPF(tb testing.TB) {
	tb.Helper()
	Root(tb)
	if err := features.HaveProgramType(ebpf.XDP); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			missing(tb, "the kernel cannot load XDP programs (%v): needs a kernel with CONFIG_BPF_SYSCALL and XDP", err)
			return
		}
		missing(tb, "probing for XDP support: %v", err)
	}
}

// Netns requires that this process can make network namespaces: root, and
// a kernel with CONFIG_NET_NS.
func Netns(tb testing.TB) {
	tb.Helper()
	Root(tb)
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		missing(tb, "no network namespace support (%v): needs a kernel with CONFIG_NET_NS", err)
	}
}

// packages names the Debian/Ubuntu package that installs each tool the
// tests run.
var packages = map[string]string{
	"bash":            "bash",
	"bgpd":            "frr",
	"bird":            "bird2",
	"birdc":           "bird2",
	"bridge":          "iproute2",
	"dpkg-deb":        "dpkg",
	"ethtool":         "ethtool",
	"haproxy":         "haproxy",
	"ip":              "iproute2",
	"keepalived":      "keepalived",
	"nft":             "nftables",
	"setpriv":         "util-linux",
	"ss":              "iproute2",
	"stdbuf":          "coreutils",
	"systemd-analyze": "systemd",
	"tc":              "iproute2",
	"vtysh":           "frr",
}

// CPUs requires that this process may run on at least n CPUs (its
// affinity mask): a test of work spread over CPUs means nothing on fewer.
func CPUs(tb testing.TB, n int) {
	tb.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		missing(tb, "CPU affinity: %v", err)
		return
	}
	if got := set.Count(); got < n {
		missing(tb, "%d CPUs: this test needs at least %d", got, n)
	}
}

// sbin is where administration tools live that a non-root PATH may lack.
var sbin = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// Tool requires the program name and returns its path: from PATH, or from
// an sbin directory that PATH may lack.
func Tool(tb testing.TB, name string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range sbin {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	pkg := packages[name]
	if pkg == "" {
		pkg = name
	}
	missing(tb, "%s not found in PATH or %v: apt-get install %s", name, sbin, pkg)
	return ""
}

// pollMax is the longest pause between two looks at a condition: short
// enough that a wait ends within a few milliseconds of the condition.
const pollMax = 10 * time.Millisecond

// Poll calls cond until it returns nil or timeout has passed, and returns
// how long that took. On timeout the error is cond's last one. The first
// looks come quickly (1 ms apart, doubling to pollMax), so that a condition
// that holds almost at once is seen at once.
func Poll(timeout time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	pause := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if !time.Now().Before(deadline) {
			return time.Since(start), fmt.Errorf("not within %s: %w", timeout, err)
		}
		time.Sleep(min(pause, time.Until(deadline)))
		pause = min(2*pause, pollMax)
	}
}

// Eventually is Poll that fails tb on timeout, with what cond last said.
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) time.Duration {
	tb.Helper()
	took, err := Poll(timeout, cond)
	if err != nil {
		tb.Fatal(err)
	}
	return took
}

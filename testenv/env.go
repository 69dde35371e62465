package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// Env is a set of namespaces that share a name prefix and a lifetime. It is
// the lower-level builder under Topology: create hosts with NewNamespace,
// join them with VethPair, and so on. Close removes everything.
type Env struct {
	// Prefix starts the name of every namespace of this Env.
	Prefix string

	mu     sync.Mutex
	closed bool
	names  []string // namespaces to delete, in creation order
	hosts  []*Host
	procs  []*exec.Cmd
	pass   *ebpf.Program // pass-through XDP program, loaded on first use
	// cleanups run after the processes are killed: files and
	// directories they used (addCleanup).
	cleanups []func() error
	mounts   []string // OwnMount's, recorded in the owner file (orphans.go)
}

var prefixRE = regexp.MustCompile(`^fc[0-9a-f]{6}$`)

// NewPrefix returns a fresh random prefix: "fc" and six hex digits.
func NewPrefix() (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "fc" + hex.EncodeToString(b[:]), nil
}

// Open returns an empty Env. An empty prefix picks a random one. The caller
// must Close it; tests use NewEnv instead.
func Open(prefix string) (*Env, error) {
	if prefix == "" {
		p, err := NewPrefix()
		if err != nil {
			return nil, err
		}
		prefix = p
	}
	if strings.ContainsAny(prefix, "/\x00") {
		return nil, fmt.Errorf("testenv: bad prefix %q", prefix)
	}
	// What a killed run left goes before this one adds its own.
	if err := reapOrphans(); err != nil {
		return nil, fmt.Errorf("remove what a dead test process left: %w", err)
	}
	if err := claim(prefix, nil); err != nil {
		return nil, err
	}
	return &Env{Prefix: prefix}, nil
}

// NewEnv returns an empty Env with a random prefix whose Close is already
// registered with tb.Cleanup, so nothing it creates outlives the test.
func NewEnv(tb testing.TB) *Env {
	tb.Helper()
	e, err := Open("")
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() {
		if err := e.Close(); err != nil {
			tb.Errorf("testenv: cleanup of %s: %v", e.Prefix, err)
		}
	})
	return e
}

// Hosts returns the hosts created so far, in creation order.
func (e *Env) Hosts() []*Host {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Host(nil), e.hosts...)
}

// Namespaces returns the names of the namespaces created so far.
func (e *Env) Namespaces() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.names...)
}

// Close kills the processes started through Host.Start, releases the loaded
// XDP program and netlink handles, and deletes every namespace of the Env.
// It is idempotent: later calls do nothing and return nil.
func (e *Env) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	procs, hosts, names, pass, cleanups := e.procs, e.hosts, e.names, e.pass, e.cleanups
	e.procs, e.hosts, e.pass, e.cleanups = nil, nil, nil, nil
	e.mu.Unlock()

	var errs []error
	for _, cmd := range procs {
		if err := killProcess(cmd); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range cleanups {
		if err := f(); err != nil {
			errs = append(errs, err)
		}
	}
	if pass != nil {
		if err := pass.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close XDP program: %w", err))
		}
	}
	for _, h := range hosts {
		h.release()
	}
	// Delete in reverse creation order; the order does not matter to the
	// kernel but it reads better in traces.
	for i := len(names) - 1; i >= 0; i-- {
		if err := deleteNamed(names[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		// With something left, the owner file stays, so that the reaper
		// of a later run tries again once this process is gone.
		errs = append(errs, unclaim(e.Prefix))
	}
	return errors.Join(errs...)
}

// addCleanup registers f to run when the Env closes, after its processes
// are killed.
func (e *Env) addCleanup(f func() error) {
	e.mu.Lock()
	closed := e.closed
	if !closed {
		e.cleanups = append(e.cleanups, f)
	}
	e.mu.Unlock()
	if closed {
		_ = f()
	}
}

func (e *Env) addProc(cmd *exec.Cmd) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("testenv: environment is closed")
	}
	e.procs = append(e.procs, cmd)
	return nil
}

// killProcess SIGKILLs the process group of a process started by Host.Start
// (its own group, see Host.Command) and waits until it has exited. It does
// not reap it: that stays with whoever calls cmd.Wait.
func killProcess(cmd *exec.Cmd) error {
	p := cmd.Process
	if p == nil {
		return nil
	}
	// Signal goes through the pidfd: it cannot hit a recycled PID and says
	// ErrProcessDone once the caller has reaped the process.
	if err := p.Signal(syscall.Signal(0)); err != nil {
		return nil
	}
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		// Not a group leader after all: kill the process alone.
		if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("kill pid %d: %w", p.Pid, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if exited(p.Pid) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("pid %d still running 5s after SIGKILL", p.Pid)
}

// exited reports whether pid is gone or a zombie.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain spaces or parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	switch s[i+2] {
	case 'Z', 'X', 'x':
		return true
	}
	return false
}

// RemovePrefix deletes every namespace named <prefix>-* under /run/netns. It
// is for topologies left up on purpose (the testenv command's "up"); prefix
// must look like one this package makes ("fc" and six hex digits).
func RemovePrefix(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("testenv: %q is not a testenv prefix (want fc and six hex digits)", prefix)
	}
	matches, err := filepath.Glob(filepath.Join(netnsDir, prefix+"-*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range matches {
		if err := deleteNamed(filepath.Base(m)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// Host is one network namespace of an Env, plus a description of its main
// interface (filled by SetPrimary; the canonical builder does it).
type Host struct {
	Name    string // namespace name, as `ip netns` knows it
	Iface   string // main interface inside the namespace, e.g. "eth0"
	IPv4    netip.Addr
	IPv6    netip.Addr
	MAC     net.HardwareAddr
	Ifindex int // of Iface, inside the namespace

	env  *Env
	role string // Name without the prefix, e.g. "backend1"

	mu sync.RWMutex
	ns netns.NsHandle  // -1 once released
	nl *netlink.Handle // netlink sockets opened inside the namespace
}

// Role is the host's name without the Env prefix, e.g. "client".
func (h *Host) Role() string { return h.role }

// Handle returns a netlink handle whose sockets live in the host's
// namespace; interface names and indexes passed to it are the host's.
func (h *Host) Handle() *netlink.Handle { return h.nl }

// NsHandle returns the namespace file descriptor. It stays owned by the Host.
func (h *Host) NsHandle() netns.NsHandle {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.ns
}

func (h *Host) String() string { return h.Name }

// release closes the handles; the namespace itself is deleted by Env.Close.
func (h *Host) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nl != nil {
		h.nl.Close()
	}
	if h.ns.IsOpen() {
		h.ns.Close()
	}
	h.ns = netns.None()
}

// NewNamespace creates the namespace <prefix>-<role>, bind-mounted under
// /run/netns so that `ip netns exec` finds it, brings its lo up and sets the
// defaults every test namespace gets: IPv6 DAD off (accept_dad=0 on all and
// default, so interfaces created later inherit it) and rp_filter=0.
func (e *Env) NewNamespace(role string) (*Host, error) {
	if role == "" || filepath.Base(role) != role {
		return nil, fmt.Errorf("testenv: bad namespace role %q", role)
	}
	name := e.Prefix + "-" + role

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, errors.New("testenv: environment is closed")
	}
	e.mu.Unlock()

	ns, created, err := createNamed(name)
	if created {
		e.mu.Lock()
		e.names = append(e.names, name)
		closed := e.closed
		e.mu.Unlock()
		if closed { // Close ran meanwhile: do not leak this one.
			if ns.IsOpen() {
				ns.Close()
			}
			_ = deleteNamed(name)
			return nil, errors.New("testenv: environment is closed")
		}
	}
	if err != nil {
		return nil, err
	}

	h := &Host{Name: name, env: e, role: role, ns: ns}
	h.nl, err = netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("testenv: netlink handle in %s: %w", name, err)
	}
	e.mu.Lock()
	e.hosts = append(e.hosts, h)
	e.mu.Unlock()

	lo, err := h.nl.LinkByName("lo")
	if err == nil {
		err = h.nl.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: lo up: %w", name, err)
	}
	if err := h.Sysctls(map[string]string{
		"net.ipv6.conf.all.accept_dad":     "0",
		"net.ipv6.conf.default.accept_dad": "0",
		"net.ipv4.conf.all.rp_filter":      "0",
		"net.ipv4.conf.default.rp_filter":  "0",
	}); err != nil {
		return nil, err
	}
	return h, nil
}

var sharedOnce sync.Once

// makeNetnsDirShared does what `ip netns add` does on first use: make
// /run/netns a shared mount point, so that deleting a namespace's bind mount
// propagates into the mount namespaces of running `ip netns exec` children
// (which are slaves of the root one) instead of keeping it alive there.
// Failing that is not fatal; namespaces then just linger until such
// processes exit.
func makeNetnsDirShared() {
	sharedOnce.Do(func() {
		if err := os.MkdirAll(netnsDir, 0o755); err != nil {
			return
		}
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == unix.EINVAL { // not a mount point yet
			if unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, "") == nil {
				_ = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
			}
		}
	})
}

// createNamed creates a named network namespace and returns a handle to it.
// created reports whether /run/netns/name was made by this call (and so must
// be removed later even if err != nil).
func createNamed(name string) (ns netns.NsHandle, created bool, err error) {
	makeNetnsDirShared()

	type result struct {
		ns      netns.NsHandle
		created bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		// netns.NewNamed unshares the calling thread into the new
		// namespace; do it on a locked thread and switch back.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{ns: netns.None(), err: fmt.Errorf("testenv: current netns: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		res := result{ns: ns, err: err}
		if err != nil {
			// NewNamed fails with EEXIST before touching anything when the
			// name is taken; any later failure may leave the file behind.
			res.created = !errors.Is(err, fs.ErrExist)
			res.err = fmt.Errorf("testenv: create netns %s: %w", name, err)
		} else {
			res.created = true
		}
		if err := netns.Set(orig); err != nil {
			// This thread is stuck in another namespace: keep it locked
			// so that the runtime kills it when this goroutine returns.
			res.err = errors.Join(res.err, fmt.Errorf("testenv: restore netns: %w", err))
			done <- res
			return
		}
		runtime.UnlockOSThread()
		done <- res
	}()
	r := <-done
	return r.ns, r.created, r.err
}

// deleteNamed removes the bind mount and the file of a named namespace.
// Missing ones are not an error.
func deleteNamed(name string) error {
	p := filepath.Join(netnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("testenv: unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("testenv: %w", err)
	}
	return nil
}

// errGoexit is returned by Do when fn ended its goroutine with
// runtime.Goexit, which is what t.FailNow does off the test goroutine.
var errGoexit = errors.New("testenv: function passed to Do called runtime.Goexit (t.FailNow off the test goroutine?)")

// Do runs fn on a fresh goroutine whose OS thread has entered h's network
// namespace, and returns fn's error. Sockets fn opens stay in that namespace
// and remain usable after Do returns; ifindexes fn resolves are h's. The
// thread goes back to its original namespace afterwards; if that fails the
// thread stays locked, so the runtime terminates it instead of reusing it. A
// panic in fn is re-raised on the caller's goroutine.
func (h *Host) Do(fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("testenv: current netns: %w", err)}
			return
		}
		defer orig.Close()

		h.mu.RLock()
		if !h.ns.IsOpen() {
			h.mu.RUnlock()
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("testenv: %s is closed", h.Name)}
			return
		}
		err = netns.Set(h.ns)
		h.mu.RUnlock()
		if err != nil {
			// setns failed, so the thread is still where it was.
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("testenv: enter %s: %w", h.Name, err)}
			return
		}

		var res result
		returned := false
		defer func() {
			if !returned {
				if v := recover(); v != nil {
					res.panicked, res.value = true, v
				} else {
					res.err = errGoexit
				}
			}
			if err := netns.Set(orig); err != nil {
				res.err = errors.Join(res.err, fmt.Errorf("testenv: leave %s: %w", h.Name, err))
				// Thread stays locked and dies with this goroutine.
			} else {
				runtime.UnlockOSThread()
			}
			done <- res
		}()
		res.err = fn()
		returned = true
	}()
	res := <-done
	if res.panicked {
		panic(res.value)
	}
	return res.err
}

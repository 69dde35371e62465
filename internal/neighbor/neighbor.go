// Package neighbor resolves the hardware address of a host on an attached
// network, for dsr backends whose MAC the configuration does not give, and
// follows it when it changes. It reads the kernel's neighbour table and, on
// a miss, makes the kernel resolve the address by sending it one UDP
// datagram to the discard port.
//
// Every address resolved is followed: the resolver keeps its MAC, and Watch
// takes the kernel's neighbour updates (an ARP or neighbour advertisement
// from a replaced NIC or VM with the same address), so that a changed MAC
// is seen as soon as the kernel learns it. Reresolve makes the kernel ask
// again, for a host that changed without announcing it.
package neighbor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Resolver resolves addresses in the network namespace it was created in.
// Its methods may be called concurrently.
type Resolver struct {
	h  *netlink.Handle
	ns netns.NsHandle // the namespace of h, for Watch's subscription
	// Poll is how often the table is read while resolution runs.
	Poll time.Duration

	mu sync.Mutex
	// macs holds the followed addresses and their MACs; nil while an
	// address has none yet (its resolution runs, or failed).
	macs map[netip.Addr]net.HardwareAddr
}

// New returns a resolver for the calling thread's network namespace.
func New() (*Resolver, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("neighbor: open network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("neighbor: open netlink: %w", err)
	}
	return &Resolver{h: h, ns: ns, Poll: 20 * time.Millisecond, macs: make(map[netip.Addr]net.HardwareAddr)}, nil
}

// Close releases the netlink socket.
func (r *Resolver) Close() {
	r.h.Close()
	r.ns.Close()
}

// usable neighbour states: the entry holds a MAC that was confirmed or is
// being re-confirmed.
const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

// macOf returns the address and MAC of a usable IP neighbour entry.
func macOf(n netlink.Neigh) (netip.Addr, net.HardwareAddr, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok || n.State&usable == 0 || len(n.HardwareAddr) != 6 {
		return netip.Addr{}, nil, false
	}
	return a.Unmap(), n.HardwareAddr, true
}

func family(addr netip.Addr) int {
	if addr.Is6() {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// Lookup returns the MAC the neighbour table holds for addr, if any.
func (r *Resolver) Lookup(addr netip.Addr) (net.HardwareAddr, bool, error) {
	neighs, err := r.h.NeighList(0, family(addr))
	if err != nil {
		return nil, false, fmt.Errorf("neighbor: list: %w", err)
	}
	for _, n := range neighs {
		if a, mac, ok := macOf(n); ok && a == addr {
			return mac, true, nil
		}
	}
	return nil, false, nil
}

// Cached returns the MAC last resolved or followed for addr, without
// asking the kernel.
func (r *Resolver) Cached(addr netip.Addr) (net.HardwareAddr, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	mac := r.macs[addr]
	return mac, mac != nil
}

// Resolve returns addr's MAC, asking the kernel to resolve it if needed,
// until ctx ends. From then on addr is followed: Cached returns its MAC,
// and Watch reports its changes. It must be called in the resolver's
// network namespace (the datagram goes out of the calling thread's).
func (r *Resolver) Resolve(ctx context.Context, addr netip.Addr) (net.HardwareAddr, error) {
	r.mu.Lock()
	if _, ok := r.macs[addr]; !ok {
		r.macs[addr] = nil
	}
	r.mu.Unlock()
	mac, err := r.resolve(ctx, addr)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A followed MAC changes only in Watch, which reports the change; if
	// Resolve replaced it here, Watch would find the update it is about to
	// take already in place and report nothing. Watch also has the last
	// word on an address it filled while the kernel was asked: its
	// updates come in the kernel's order.
	if cur := r.macs[addr]; cur != nil {
		return cur, nil
	}
	r.macs[addr] = mac
	return mac, nil
}

func (r *Resolver) resolve(ctx context.Context, addr netip.Addr) (net.HardwareAddr, error) {
	if mac, ok, err := r.Lookup(addr); err != nil || ok {
		return mac, err
	}
	conn, err := dialDiscard(addr)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", addr, err)
	}
	defer conn.Close()
	tick := time.NewTicker(r.Poll)
	defer tick.Stop()
	for {
		// Writing makes the kernel resolve the next hop; repeat in case
		// the first probe was lost.
		conn.Write(nil)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("resolve %s: no answer to ARP/neighbour solicitation (dsr backends must share the LB's L2 segment; or set its mac): %w", addr, ctx.Err())
		case <-tick.C:
		}
		if mac, ok, err := r.Lookup(addr); err != nil || ok {
			return mac, err
		}
	}
}

// dialDiscard returns a UDP socket towards addr's discard port: a datagram
// written to it makes the kernel resolve addr.
func dialDiscard(addr netip.Addr) (*net.UDPConn, error) {
	network := "udp4"
	if addr.Is6() {
		network = "udp6"
	}
	return net.DialUDP(network, nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 9)))
}

// Reresolve makes the kernel ask again for the MAC of addr, a followed
// address, for a host that may have changed without announcing it: the
// kernel's entry is deleted (unless it is permanent or noarp, set by hand)
// and a datagram sent, so that the kernel solicits afresh and Watch sees
// the answer. It does not wait for it; until Watch sees a different MAC,
// the one cached stays. An address that is not followed is left alone.
// Like Resolve, it must be called in the resolver's network namespace.
func (r *Resolver) Reresolve(addr netip.Addr) error {
	r.mu.Lock()
	_, followed := r.macs[addr]
	r.mu.Unlock()
	if !followed {
		return nil
	}
	neighs, err := r.h.NeighList(0, family(addr))
	if err != nil {
		return fmt.Errorf("neighbor: list: %w", err)
	}
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a.Unmap() != addr || n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
			continue
		}
		if err := r.h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("neighbor: re-resolve %s: delete the kernel's entry: %w", addr, err)
		}
	}
	conn, err := dialDiscard(addr)
	if err != nil {
		return fmt.Errorf("neighbor: re-resolve %s: %w", addr, err)
	}
	defer conn.Close()
	// One datagram is enough: the kernel repeats its solicitations.
	conn.Write(nil)
	return nil
}

// Watch follows the kernel's neighbour table until ctx ends. When the
// entry of a followed address takes another MAC, the resolver keeps the
// new one and calls changed with ctx, the address and that MAC (from
// Watch's goroutine, one call at a time). The subscription starts with a dump of
// the table, so a change made before it is caught too; if the subscription
// is lost (its socket overran), Watch subscribes again, dump included. It
// returns an error if it cannot subscribe.
func (r *Resolver) Watch(ctx context.Context, changed func(context.Context, netip.Addr, net.HardwareAddr)) error {
	for {
		if err := r.follow(ctx, changed); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond): // no busy loop if subscriptions keep failing
		}
	}
}

// follow runs one subscription until ctx ends or the subscription is lost
// (both nil: Watch decides); the error is a failure to subscribe.
func (r *Resolver) follow(ctx context.Context, changed func(context.Context, netip.Addr, net.HardwareAddr)) error {
	ch := make(chan netlink.NeighUpdate, 256)
	done := make(chan struct{})
	err := netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{
		Namespace:    &r.ns,
		ListExisting: true,
		// A failed receive closes ch, which ends this subscription. An
		// interrupted dump needs nothing: the updates that interrupted
		// it come next.
		ErrorCallback: func(error) {},
	})
	if err != nil {
		close(done)
		return fmt.Errorf("neighbor: subscribe to neighbour updates: %w", err)
	}
	defer func() {
		close(done)
		for range ch { // the subscription's goroutine ends by closing ch
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-ch:
			if !ok {
				return nil
			}
			if u.Type == unix.RTM_NEWNEIGH {
				r.update(ctx, u.Neigh, changed)
			}
		}
	}
}

// update takes one neighbour entry: a followed address whose MAC differs
// gets the new one, and changed is told if it had one before.
func (r *Resolver) update(ctx context.Context, n netlink.Neigh, changed func(context.Context, netip.Addr, net.HardwareAddr)) {
	a, mac, ok := macOf(n)
	if !ok {
		return
	}
	r.mu.Lock()
	old, followed := r.macs[a]
	if !followed || bytes.Equal(old, mac) {
		r.mu.Unlock()
		return
	}
	mac = slices.Clone(mac)
	r.macs[a] = mac
	r.mu.Unlock()
	if old != nil {
		changed(ctx, a, mac)
	}
}

// Package neighbor resolves the hardware address of a host on an attached
// network, for dsr backends whose MAC the configuration does not give. It
// reads the kernel's neighbour table and, on a miss, makes the kernel
// resolve the address by sending it one UDP datagram to the discard port.
package neighbor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Resolver resolves addresses in the network namespace it was created in.
type Resolver struct {
	h *netlink.Handle
	// Poll is how often the table is read while resolution runs.
	Poll time.Duration
}

// New returns a resolver for the calling thread's network namespace.
func New() (*Resolver, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("neighbor: open netlink: %w", err)
	}
	return &Resolver{h: h, Poll: 20 * time.Millisecond}, nil
}

// Close releases the netlink socket.
func (r *Resolver) Close() { r.h.Close() }

// usable neighbour states: the entry holds a MAC that was confirmed or is
// being re-confirmed.
const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

// Lookup returns the MAC the neighbour table holds for addr, if any.
func (r *Resolver) Lookup(addr netip.Addr) (net.HardwareAddr, bool, error) {
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := r.h.NeighList(0, family)
	if err != nil {
		return nil, false, fmt.Errorf("neighbor: list: %w", err)
	}
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a.Unmap() != addr || n.State&usable == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		return n.HardwareAddr, true, nil
	}
	return nil, false, nil
}

// Resolve returns addr's MAC, asking the kernel to resolve it if needed,
// until ctx ends.
func (r *Resolver) Resolve(ctx context.Context, addr netip.Addr) (net.HardwareAddr, error) {
	if mac, ok, err := r.Lookup(addr); err != nil || ok {
		return mac, err
	}
	network := "udp4"
	if addr.Is6() {
		network = "udp6"
	}
	conn, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 9)))
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

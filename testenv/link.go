package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VethOption adjusts VethPair.
type VethOption func(*vethConfig)

type vethConfig struct {
	aMAC, bMAC net.HardwareAddr
	queues     int
	down       bool
}

// WithMACs sets the MAC addresses of the two ends; nil keeps a random one.
func WithMACs(a, b net.HardwareAddr) VethOption {
	return func(c *vethConfig) { c.aMAC, c.bMAC = a, b }
}

// WithQueues gives both ends n TX and n RX queues (multi-queue veth, for
// spreading XDP work over CPUs).
func WithQueues(n int) VethOption {
	return func(c *vethConfig) { c.queues = n }
}

// LeaveDown leaves both ends administratively down.
func LeaveDown() VethOption {
	return func(c *vethConfig) { c.down = true }
}

// VethPair creates a veth pair with end aName in a's namespace and end bName
// in b's, and brings both up. The pair is created by a netlink request sent
// from inside a's namespace with the peer placed into b's, so neither end
// ever exists in the root namespace.
func VethPair(a, b *Host, aName, bName string, opts ...VethOption) error {
	var c vethConfig
	for _, o := range opts {
		o(&c)
	}
	for _, n := range []string{aName, bName} {
		if n == "" || len(n) >= unix.IFNAMSIZ {
			return fmt.Errorf("testenv: bad interface name %q", n)
		}
	}
	la := netlink.NewLinkAttrs()
	la.Name = aName
	la.HardwareAddr = c.aMAC
	if c.queues > 0 {
		la.NumTxQueues, la.NumRxQueues = c.queues, c.queues
	}
	b.mu.RLock()
	bns := b.ns
	b.mu.RUnlock()
	if !bns.IsOpen() {
		return fmt.Errorf("testenv: %s is closed", b.Name)
	}
	veth := &netlink.Veth{
		LinkAttrs:        la,
		PeerName:         bName,
		PeerHardwareAddr: c.bMAC,
		PeerNamespace:    netlink.NsFd(int(bns)),
	}
	if err := a.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("testenv: veth %s/%s -- %s/%s: %w", a.Name, aName, b.Name, bName, err)
	}
	if c.down {
		return nil
	}
	if err := a.LinkUp(aName); err != nil {
		return err
	}
	return b.LinkUp(bName)
}

// Link returns the named interface of the host.
func (h *Host) Link(iface string) (netlink.Link, error) {
	l, err := h.nl.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: link %s: %w", h.Name, iface, err)
	}
	return l, nil
}

// LinkUp sets the interface administratively up.
func (h *Host) LinkUp(iface string) error {
	l, err := h.Link(iface)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("testenv: %s: %s up: %w", h.Name, iface, err)
	}
	return nil
}

// SetMAC sets the interface's MAC address.
func (h *Host) SetMAC(iface string, mac net.HardwareAddr) error {
	l, err := h.Link(iface)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetHardwareAddr(l, mac); err != nil {
		return fmt.Errorf("testenv: %s: %s address %s: %w", h.Name, iface, mac, err)
	}
	return nil
}

// AddBridge creates a bridge (STP off, multicast snooping off) and sets it up.
func (h *Host) AddBridge(name string) error {
	snoop := false
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := h.nl.LinkAdd(&netlink.Bridge{LinkAttrs: la, MulticastSnooping: &snoop}); err != nil {
		return fmt.Errorf("testenv: %s: bridge %s: %w", h.Name, name, err)
	}
	if err := h.noBridgeNetfilter(); err != nil {
		return err
	}
	return h.LinkUp(name)
}

// noBridgeNetfilter keeps bridged frames out of the IP firewall hooks in
// h's namespace. With br_netfilter loaded (by anyone, for containers) every
// new namespace starts with bridge-nf-call-iptables=1, and each frame the
// bridge forwards goes through netfilter's IP hooks: a test switch is not a
// firewall, and under a packet flood that work (a fifth of the softirq time
// a VRRP advertisement's send call paid for, measured with perf) would land
// on the tests' CPUs. The sysctls are per namespace; without br_netfilter
// they do not exist and there is nothing to do.
func (h *Host) noBridgeNetfilter() error {
	return h.Do(func() error {
		for _, k := range []string{"iptables", "ip6tables", "arptables"} {
			key := "net.bridge.bridge-nf-call-" + k
			if _, err := os.Stat(sysctlPath(key)); errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err := writeSysctl(h, key, "0"); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetMaster enslaves iface to bridge.
func (h *Host) SetMaster(iface, bridge string) error {
	l, err := h.Link(iface)
	if err != nil {
		return err
	}
	br, err := h.Link(bridge)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("testenv: %s: %s master %s: %w", h.Name, iface, bridge, err)
	}
	return nil
}

// AddAddr adds an address to the interface. IPv6 addresses are added with
// IFA_F_NODAD so that they are usable at once.
func (h *Host) AddAddr(iface string, p netip.Prefix) error {
	l, err := h.Link(iface)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: prefixToIPNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("testenv: %s: add %s to %s: %w", h.Name, p, iface, err)
	}
	return nil
}

// AddRoute adds a route to dst via the gateway gw; the kernel picks the
// interface from the gateway's connected route.
func (h *Host) AddRoute(dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{Dst: prefixToIPNet(dst), Gw: net.IP(gw.AsSlice())}
	if dst.Addr().Is4() {
		r.Family = netlink.FAMILY_V4
	} else {
		r.Family = netlink.FAMILY_V6
	}
	if err := h.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("testenv: %s: route %s via %s: %w", h.Name, dst, gw, err)
	}
	return nil
}

// AddDefaultRoute adds a default route via gw (IPv4 or IPv6 after gw).
func (h *Host) AddDefaultRoute(gw netip.Addr) error {
	if gw.Is4() {
		return h.AddRoute(netip.PrefixFrom(netip.IPv4Unspecified(), 0), gw)
	}
	return h.AddRoute(netip.PrefixFrom(netip.IPv6Unspecified(), 0), gw)
}

// AddNeighbor adds a permanent neighbour (ARP or NDP) entry ip -> mac on
// iface.
func (h *Host) AddNeighbor(iface string, ip netip.Addr, mac net.HardwareAddr) error {
	l, err := h.Link(iface)
	if err != nil {
		return err
	}
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	n := &netlink.Neigh{
		LinkIndex:    l.Attrs().Index,
		Family:       fam,
		State:        netlink.NUD_PERMANENT,
		IP:           net.IP(ip.AsSlice()),
		HardwareAddr: mac,
	}
	if err := h.nl.NeighSet(n); err != nil {
		return fmt.Errorf("testenv: %s: neighbour %s -> %s on %s: %w", h.Name, ip, mac, iface, err)
	}
	return nil
}

// WaitAddrs waits until no IPv6 address in the namespace is tentative. It
// fails at once if duplicate address detection failed on one.
func (h *Host) WaitAddrs(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		addrs, err := h.nl.AddrList(nil, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("testenv: %s: list addresses: %w", h.Name, err)
		}
		var tentative []string
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("testenv: %s: DAD failed for %s", h.Name, a.IPNet)
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = append(tentative, a.IPNet.String())
			}
		}
		if len(tentative) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testenv: %s: addresses still tentative after %v: %v", h.Name, timeout, tentative)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SetPrimary records iface as the host's main interface with the given
// addresses (either may be the zero Addr) and reads its MAC and ifindex.
func (h *Host) SetPrimary(iface string, v4, v6 netip.Addr) error {
	l, err := h.Link(iface)
	if err != nil {
		return err
	}
	h.Iface, h.IPv4, h.IPv6 = iface, v4, v6
	h.MAC = append(net.HardwareAddr(nil), l.Attrs().HardwareAddr...)
	h.Ifindex = l.Attrs().Index
	return nil
}

// PassProgram returns the Env's pass-through XDP program (return XDP_PASS),
// loading it on first use. It is closed by Env.Close.
func (e *Env) PassProgram() (*ebpf.Program, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errors.New("testenv: environment is closed")
	}
	if e.pass != nil {
		return e.pass, nil
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "testenv_pass",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("testenv: load pass-through XDP program: %w", err)
	}
	e.pass = prog
	return prog, nil
}

// AttachPassXDP attaches the pass-through XDP program to iface in native
// (driver) mode. A veth end needs an XDP program for frames that its peer
// sends with XDP_TX or XDP_REDIRECT to arrive. The attachment is made through
// netlink from inside the namespace, so it lasts until the interface goes
// away or someone replaces it.
func (h *Host) AttachPassXDP(iface string) error {
	prog, err := h.env.PassProgram()
	if err != nil {
		return err
	}
	l, err := h.Link(iface)
	if err != nil {
		return err
	}
	idx := l.Attrs().Index
	return h.Do(func() error {
		// The package-level call opens its netlink socket in the calling
		// thread's namespace, which Do has made h's.
		la := netlink.NewLinkAttrs()
		la.Index = idx
		err := netlink.LinkSetXdpFdWithFlags(&netlink.Device{LinkAttrs: la}, prog.FD(), unix.XDP_FLAGS_DRV_MODE)
		if err != nil {
			return fmt.Errorf("testenv: %s: attach XDP to %s: %w", h.Name, iface, err)
		}
		return nil
	})
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	a := p.Addr()
	bits := 32
	if a.Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

package vrrp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hold puts the virtual addresses on the interface. An address that is
// already there and that we did not add (the address owner's own, at
// priority 255) is left alone, now and when leaving Master.
func (r *Router) hold() {
	link, err := r.nl.LinkByIndex(r.ifindex)
	if err != nil {
		r.log.Warn("vrrp: add virtual addresses", "err", err)
		return
	}
	present := r.present(link)
	for i, p := range r.vips {
		if present[p.Addr()] && !r.added[i] {
			continue
		}
		a := &netlink.Addr{IPNet: prefixNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := r.nl.AddrReplace(link, a); err != nil {
			r.log.Warn("vrrp: add virtual address", "address", p, "err", err)
			continue
		}
		r.added[i] = true
	}
}

// present returns the addresses on the interface.
func (r *Router) present(link netlink.Link) map[netip.Addr]bool {
	addrs, err := r.nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		r.log.Warn("vrrp: list addresses", "err", err)
	}
	m := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			m[ip.Unmap()] = true
		}
	}
	return m
}

// release removes the virtual addresses we put on the interface. At
// startup (stale) it also removes any left behind by an earlier run that
// did not stop cleanly, as keepalived does, except for an address owner
// (priority 255), whose virtual addresses are its own.
func (r *Router) release(stale bool) {
	stale = stale && r.cfg.Priority != 255
	if !stale && !slices.Contains(r.added, true) {
		return
	}
	link, err := r.nl.LinkByIndex(r.ifindex)
	if err != nil {
		r.log.Warn("vrrp: remove virtual addresses", "err", err)
		return
	}
	for i, p := range r.vips {
		if !stale && !r.added[i] {
			continue
		}
		r.added[i] = false
		err := r.nl.AddrDel(link, &netlink.Addr{IPNet: prefixNet(p)})
		if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			r.log.Warn("vrrp: remove virtual address", "address", p, "err", err)
		}
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// announce sends one gratuitous ARP or unsolicited NA per virtual address.
func (r *Router) announce() {
	sa := unix.SockaddrLinklayer{Ifindex: r.ifindex, Halen: 6}
	for _, f := range r.frames {
		sa.Protocol = htons(uint16(f[12])<<8 | uint16(f[13]))
		copy(sa.Addr[:], f[:6])
		if err := unix.Sendto(r.pkt, f, 0, &sa); err != nil {
			r.sendErrors.Add(1)
			r.log.Debug("vrrp: send gratuitous announcement", "err", err)
			continue
		}
		r.garpSent.Add(1)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// refresh reads the interface's MAC and our source address, and rebuilds
// the announcement frames.
func (r *Router) refresh() error {
	link, err := r.nl.LinkByIndex(r.ifindex)
	if err != nil {
		return fmt.Errorf("vrrp: interface %s: %w", r.cfg.Interface, err)
	}
	r.mac = link.Attrs().HardwareAddr
	src, err := r.primaryAddress()
	if err != nil {
		return err
	}
	r.sendMu.Lock() // the guards send from r.src (guard.go)
	r.src = src
	r.sock.setSource(src)
	r.sendMu.Unlock()
	r.m.primary = src
	var ll netip.Addr
	if r.v6 {
		ll = src
	} else if slices.ContainsFunc(r.vips, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		ll, _ = r.linkLocal()
	}
	r.frames = r.frames[:0]
	if len(r.mac) != 6 {
		return nil // no Ethernet: nothing to announce
	}
	for _, p := range r.vips {
		if p.Addr().Is4() {
			r.frames = append(r.frames, garpFrame(r.mac, p.Addr()))
		} else {
			r.frames = append(r.frames, naFrame(r.mac, ll, p.Addr()))
		}
	}
	return nil
}

// primaryAddress is the advertisements' source: for IPv4 the interface's
// primary address (its first that is not secondary, as keepalived does),
// for IPv6 its link-local address (RFC 5798 §5.1.2.1).
func (r *Router) primaryAddress() (netip.Addr, error) {
	if r.v6 {
		return r.linkLocal()
	}
	addrs, err := r.nl.AddrList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: r.ifindex}}, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vrrp: addresses of %s: %w", r.cfg.Interface, err)
	}
	var virtual netip.Addr // an address owner's primary may be virtual
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.Flags&unix.IFA_F_SECONDARY != 0 {
			continue
		}
		if ip = ip.Unmap(); !r.isVirtual(ip) {
			return ip, nil
		}
		if !virtual.IsValid() {
			virtual = ip
		}
	}
	if virtual.IsValid() {
		return virtual, nil
	}
	return netip.Addr{}, fmt.Errorf("vrrp: %s has no IPv4 address to send advertisements from", r.cfg.Interface)
}

func (r *Router) linkLocal() (netip.Addr, error) {
	addrs, err := r.nl.AddrList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: r.ifindex}}, netlink.FAMILY_V6)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vrrp: addresses of %s: %w", r.cfg.Interface, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("vrrp: %s has no IPv6 link-local address to send advertisements from", r.cfg.Interface)
}

func (r *Router) isVirtual(a netip.Addr) bool {
	return slices.ContainsFunc(r.vips, func(p netip.Prefix) bool { return p.Addr() == a })
}

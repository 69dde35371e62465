package vrrp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const ipv4HeaderLen = 20

// socket is the raw IP socket (protocol 112) advertisements go out and come
// in on. It is bound to the interface and non-blocking; the Router's loop
// waits for it with ppoll and uses it with direct system calls.
type socket struct {
	fd      int
	v6      bool
	ifindex int

	// Destinations: the group, or the unicast peers.
	dsts []netip.Addr
	sa4  []*unix.SockaddrInet4
	sa6  []unix.RawSockaddrInet6

	// IPv6 sendmsg state, kept here so that sending does not allocate.
	msg unix.Msghdr
	iov unix.Iovec
	oob []byte // IPV6_PKTINFO: the source address and the interface

	// Receive buffers, used by the Router's loop only.
	rbuf, roob []byte

	closeOnce sync.Once
}

// openSocket opens the advertisement socket on the interface. For IPv4 the
// socket sends with IP_HDRINCL, so that the source address, TTL and TOS are
// exactly what the checksum and keepalived expect. For IPv6 the source
// comes from IPV6_PKTINFO on each send, and the hop limit and destination
// of received packets from control messages.
func openSocket(iface string, ifindex int, v6, multicast bool, peers []netip.Addr) (s *socket, err error) {
	domain := unix.AF_INET
	if v6 {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, Protocol)
	if err != nil {
		return nil, fmt.Errorf("raw socket for protocol %d: %w", Protocol, err)
	}
	s = &socket{fd: fd, v6: v6, ifindex: ifindex, rbuf: make([]byte, 65536), roob: make([]byte, 256)}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	type opt struct {
		level, name, value int
		what               string
	}
	opts := []opt{
		{unix.SOL_SOCKET, unix.SO_RCVBUF, 1 << 20, "SO_RCVBUF"},
		{unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS"},
	}
	if v6 {
		opts = append(opts,
			opt{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, TTL, "IPV6_MULTICAST_HOPS"},
			opt{unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, TTL, "IPV6_UNICAST_HOPS"},
			opt{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0, "IPV6_MULTICAST_LOOP"},
			opt{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifindex, "IPV6_MULTICAST_IF"},
			opt{unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1, "IPV6_RECVHOPLIMIT"},
			opt{unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1, "IPV6_RECVPKTINFO"},
			opt{unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 0xc0, "IPV6_TCLASS"},
		)
	} else {
		opts = append(opts,
			opt{unix.IPPROTO_IP, unix.IP_HDRINCL, 1, "IP_HDRINCL"},
			opt{unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, TTL, "IP_MULTICAST_TTL"},
			opt{unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0, "IP_MULTICAST_LOOP"},
			opt{unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0, "IP_MULTICAST_ALL"},
		)
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.name, o.value); err != nil {
			return nil, fmt.Errorf("set %s: %w", o.what, err)
		}
	}
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface); err != nil {
		return nil, fmt.Errorf("bind to device: %w", err)
	}
	if !v6 {
		if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF,
			&unix.IPMreqn{Ifindex: int32(ifindex)}); err != nil {
			return nil, fmt.Errorf("set IP_MULTICAST_IF: %w", err)
		}
	}
	switch {
	case multicast && v6:
		if err := unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP,
			&unix.IPv6Mreq{Multiaddr: GroupIPv6.As16(), Interface: uint32(ifindex)}); err != nil {
			return nil, fmt.Errorf("join %s: %w", GroupIPv6, err)
		}
	case multicast:
		if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP,
			&unix.IPMreqn{Multiaddr: GroupIPv4.As4(), Ifindex: int32(ifindex)}); err != nil {
			return nil, fmt.Errorf("join %s: %w", GroupIPv4, err)
		}
	}

	if multicast {
		s.dsts = []netip.Addr{GroupIPv4}
		if v6 {
			s.dsts = []netip.Addr{GroupIPv6}
		}
	} else {
		for _, p := range peers {
			s.dsts = append(s.dsts, p.Unmap())
		}
	}
	for _, d := range s.dsts {
		if v6 {
			sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: d.As16()}
			if d.IsLinkLocalUnicast() || d.IsLinkLocalMulticast() {
				sa.Scope_id = uint32(ifindex)
			}
			s.sa6 = append(s.sa6, sa)
		} else {
			s.sa4 = append(s.sa4, &unix.SockaddrInet4{Addr: d.As4()})
		}
	}
	if v6 {
		s.oob = make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&s.oob[0]))
		h.Level = unix.IPPROTO_IPV6
		h.Type = unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		s.msg.Namelen = unix.SizeofSockaddrInet6
		s.msg.Iov = &s.iov
		s.msg.SetIovlen(1)
		s.msg.Control = &s.oob[0]
		s.msg.SetControllen(len(s.oob))
	}

	return s, nil
}

// close closes the socket. It is idempotent.
func (s *socket) close() {
	s.closeOnce.Do(func() { unix.Close(s.fd) })
}

// setSource sets the IPv6 source address sent in IPV6_PKTINFO.
func (s *socket) setSource(src netip.Addr) {
	if !s.v6 {
		return
	}
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&s.oob[unix.CmsgLen(0)]))
	pi.Addr = src.As16()
	pi.Ifindex = uint32(s.ifindex)
}

// send sends adv from src to every destination, building each packet in
// buf (which must have room for an IPv4 header and the message). It returns
// how many went out and the last error. It does not allocate.
func (s *socket) send(adv *Advert, src netip.Addr, buf []byte) (sent int, err error) {
	hdr := 0
	if !s.v6 {
		hdr = ipv4HeaderLen
	}
	for i, dst := range s.dsts {
		b, merr := adv.Append(buf[:hdr], src, dst)
		if merr != nil {
			err = merr
			continue
		}
		if s.v6 {
			s.iov.Base = &b[0]
			s.iov.SetLen(len(b))
			s.msg.Name = (*byte)(unsafe.Pointer(&s.sa6[i]))
			_, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msg)), 0)
			if errno != 0 {
				err = errno
				continue
			}
		} else {
			putIPv4Header(b, src, dst)
			if serr := unix.Sendto(s.fd, b, 0, s.sa4[i]); serr != nil {
				err = serr
				continue
			}
		}
		sent++
	}
	return sent, err
}

// putIPv4Header fills the first 20 bytes of b, an IPv4 packet carrying a
// VRRP message: TOS 0xc0 (internetwork control, as keepalived), TTL 255,
// protocol 112. The kernel fills the identification and the header
// checksum.
func putIPv4Header(b []byte, src, dst netip.Addr) {
	b[0] = 0x45
	b[1] = 0xc0
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint32(b[4:], 0) // id, flags, fragment offset
	b[8] = TTL
	b[9] = Protocol
	b[10], b[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
}

// packet is a received IP packet's VRRP message with what the checks need
// from its IP header.
type packet struct {
	src, dst netip.Addr
	ttl      int
	msg      []byte
	short    bool      // the IP header itself is truncated or inconsistent
	at       time.Time // when the kernel received it
}

// readNow takes the next waiting packet without blocking; ok is false when
// there is none (or on an error). The message is valid until the next call.
func (s *socket) readNow() (p packet, ok bool, err error) {
	n, oobn, _, from, err := unix.Recvmsg(s.fd, s.rbuf, s.roob, unix.MSG_DONTWAIT)
	if err != nil {
		if err == unix.EAGAIN {
			err = nil
		}
		return packet{}, false, err
	}
	now := time.Now()
	if s.v6 {
		p = parse6(s.rbuf[:n], from)
	} else {
		p = parse4(s.rbuf[:n])
	}
	p.at = now
	control(&p, s.roob[:oobn], now)
	if s.v6 && (!p.src.IsValid() || !p.dst.IsValid()) {
		p.short = true
	}
	return p, true, nil
}

// parse4 takes an IPv4 packet apart (a raw IPv4 socket delivers the header).
func parse4(b []byte) packet {
	if len(b) < ipv4HeaderLen {
		return packet{short: true}
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	p := packet{
		src: netip.AddrFrom4([4]byte(b[12:16])),
		dst: netip.AddrFrom4([4]byte(b[16:20])),
		ttl: int(b[8]),
	}
	if ihl < ipv4HeaderLen || total < ihl || total > len(b) {
		p.short = true
		return p
	}
	p.msg = b[ihl:total]
	return p
}

// parse6 takes the source from the socket address (a raw IPv6 socket
// delivers no header); the destination and hop limit come from control
// messages.
func parse6(b []byte, from unix.Sockaddr) packet {
	p := packet{msg: b, ttl: -1}
	if sa, ok := from.(*unix.SockaddrInet6); ok {
		p.src = netip.AddrFrom16(sa.Addr)
	}
	return p
}

// control reads the control messages: the kernel's receive time, and for
// IPv6 the hop limit and the destination address.
func control(p *packet, oob []byte, now time.Time) {
	for len(oob) >= unix.CmsgLen(0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			return
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= int(unsafe.Sizeof(unix.Timespec{})):
			ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
			// The kernel stamps with the wall clock: turn that into an
			// age, so that p.at keeps now's monotonic reading. After a
			// wall clock step the age is nonsense; then it counts as 0.
			if age := now.Sub(time.Unix(ts.Unix())); age > 0 && age < time.Second {
				p.at = now.Add(-age)
			}
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT && len(data) >= 4:
			p.ttl = int(int32(binary.NativeEndian.Uint32(data)))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			p.dst = netip.AddrFrom16([16]byte(data[:16]))
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			return
		}
		oob = oob[next:]
	}
}

// garpFrame is a gratuitous ARP for ip: a broadcast request whose sender
// and target addresses are both ip and whose target MAC is the broadcast
// address, as keepalived sends it.
func garpFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	f := make([]byte, 0, 42)
	bcast := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	f = append(f, bcast...)
	f = append(f, mac...)
	f = append(f, 0x08, 0x06)          // ARP
	f = append(f, 0, 1, 0x08, 0, 6, 4) // Ethernet, IPv4, lengths
	f = append(f, 0, 1)                // request
	f = append(f, mac...)
	f = appendIP(f, ip)
	f = append(f, bcast...)
	return appendIP(f, ip)
}

var allNodes = netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 15: 0x01})

// naFrame is an unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) for
// target, to all nodes, with the Override flag and the target link-layer
// address option. src is the IPv6 source (the interface's link-local
// address; the target itself if there is none).
func naFrame(mac net.HardwareAddr, src, target netip.Addr) []byte {
	if !src.IsValid() {
		src = target
	}
	const icmpLen = 4 + 4 + 16 + 8
	f := make([]byte, 0, 14+40+icmpLen)
	f = append(f, 0x33, 0x33, 0, 0, 0, 1)
	f = append(f, mac...)
	f = append(f, 0x86, 0xdd)
	f = append(f, 0x60, 0, 0, 0) // version 6, traffic class 0, flow 0
	f = binary.BigEndian.AppendUint16(f, icmpLen)
	f = append(f, unix.IPPROTO_ICMPV6, 255)
	f = appendIP(f, src)
	f = appendIP(f, allNodes)
	icmp := len(f)
	f = append(f, 136, 0, 0, 0)  // neighbor advertisement, code, checksum
	f = append(f, 0x20, 0, 0, 0) // flags: Override
	f = appendIP(f, target)
	f = append(f, 2, 1) // option: target link-layer address, 8 bytes
	f = append(f, mac...)
	var sum uint32
	s, d := src.As16(), allNodes.As16()
	sum = sum16(sum, s[:])
	sum = sum16(sum, d[:])
	sum += icmpLen + unix.IPPROTO_ICMPV6
	sum = sum16(sum, f[icmp:])
	binary.BigEndian.PutUint16(f[icmp+2:], ^fold(sum))
	return f
}

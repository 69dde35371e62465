package testenv

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Ping sends ICMP or ICMPv6 echo requests from the host's namespace to dst
// until one is answered or ctx ends (2 s if ctx has no deadline). It uses a
// raw socket, so it needs no ping binary (this machine has none).
func (h *Host) Ping(ctx context.Context, dst netip.Addr) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
	}
	dst = dst.Unmap()
	network, reqType, replyType := "ip4:icmp", byte(8), byte(0)
	if dst.Is6() {
		network, reqType, replyType = "ip6:ipv6-icmp", 128, 129
	}
	var conn net.PacketConn
	if err := h.Do(func() error {
		var err error
		conn, err = net.ListenPacket(network, "")
		return err
	}); err != nil {
		return fmt.Errorf("testenv: %s: ping socket: %w", h.Name, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	to := &net.IPAddr{IP: net.IP(dst.AsSlice())}
	buf := make([]byte, 1500)
	for seq := uint16(1); ; seq++ {
		if ctx.Err() != nil {
			return fmt.Errorf("testenv: %s: no echo reply from %s: %w", h.Name, dst, ctx.Err())
		}
		msg := echoMessage(reqType, id, seq, !dst.Is6())
		if _, err := conn.WriteTo(msg, to); err != nil {
			return fmt.Errorf("testenv: %s: ping %s: %w", h.Name, dst, err)
		}
		// Wait up to 250 ms for this request's reply, then send another.
		conn.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return fmt.Errorf("testenv: %s: ping %s: %w", h.Name, dst, err)
			}
			// Go strips the IPv4 header for ip4 raw sockets; IPv6 raw
			// sockets never deliver it.
			b := buf[:n]
			if len(b) < 8 || b[0] != replyType {
				continue
			}
			if binary.BigEndian.Uint16(b[4:]) != id {
				continue
			}
			if fa, ok := from.(*net.IPAddr); ok {
				if a, ok := netip.AddrFromSlice(fa.IP); !ok || a.Unmap() != dst {
					continue
				}
			}
			return nil
		}
	}
}

// echoMessage builds an echo request. The kernel computes ICMPv6 checksums
// of raw sockets itself; ICMP ones are ours to fill in.
func echoMessage(typ byte, id, seq uint16, withChecksum bool) []byte {
	m := make([]byte, 8+16)
	m[0] = typ
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], "fulcrum-testenv!")
	if withChecksum {
		binary.BigEndian.PutUint16(m[2:], inetChecksum(m))
	}
	return m
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

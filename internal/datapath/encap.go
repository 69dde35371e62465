package datapath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
)

// EncapConfig is how ipip VIPs build their outer headers.
type EncapConfig struct {
	// SourceV4 and SourceV6 are the prefixes outer source addresses come
	// from: the prefix's bits plus host bits from the flow hash, so a
	// backend's NIC (RSS) and the network's ECMP spread outer flows the way
	// the inner ones are spread. An ipip VIP needs the prefix of each of its
	// backends' families. Use prefixes routed back to the LB and not
	// assigned to any interface.
	SourceV4, SourceV6 netip.Prefix
	// GatewayMAC, if set, is the next hop for encapsulated packets whose
	// route has no resolved neighbour (counted fib_gateway). Without it
	// such packets are dropped (drop_no_route).
	GatewayMAC net.HardwareAddr
}

// SetEncap sets the encapsulation configuration. It refuses to remove a
// source prefix that an ipip VIP's backends need.
func (d *Datapath) SetEncap(c EncapConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.SourceV4.IsValid() && (!c.SourceV4.Addr().Is4() || c.SourceV4.Masked() != c.SourceV4) {
		return fmt.Errorf("encapsulation source %s: want an IPv4 prefix with no host bits set, e.g. 198.18.1.0/24", c.SourceV4)
	}
	if c.SourceV6.IsValid() && (!c.SourceV6.Addr().Is6() || c.SourceV6.Addr().Is4In6() || c.SourceV6.Masked() != c.SourceV6) {
		return fmt.Errorf("encapsulation source %s: want an IPv6 prefix with no host bits set, e.g. 2001:db8:4::/64", c.SourceV6)
	}
	if len(c.GatewayMAC) != 0 && (len(c.GatewayMAC) != 6 || c.GatewayMAC[0]&1 == 1 || bytes.Equal(c.GatewayMAC, make([]byte, 6))) {
		return fmt.Errorf("gateway MAC %q: want a unicast Ethernet address", c.GatewayMAC)
	}
	for _, e := range d.vips {
		if e.cfg.Mode != ModeIPIP {
			continue
		}
		for _, b := range e.backends {
			if err := encapCovers(c, b.Addr); err != nil {
				return fmt.Errorf("vip %s: backend %s: %w", e.vip, b.Addr, err)
			}
		}
	}
	old := d.encap
	d.encap = c
	if err := d.syncGlobals(); err != nil {
		d.encap = old
		return err
	}
	return nil
}

// Encap returns the encapsulation configuration.
func (d *Datapath) Encap() EncapConfig {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.encap
}

func encapCovers(c EncapConfig, backend netip.Addr) error {
	if backend.Is4() && !c.SourceV4.IsValid() {
		return fmt.Errorf("ipip to an IPv4 backend needs an IPv4 encapsulation source prefix (ipip.source_v4)")
	}
	if backend.Is6() && !c.SourceV6.IsValid() {
		return fmt.Errorf("ipip to an IPv6 backend needs an IPv6 encapsulation source prefix (ipip.source_v6)")
	}
	return nil
}

// fillEncap writes c into the C configuration.
func fillEncap(cfg *balancerLbConfig, c EncapConfig) {
	if c.SourceV4.IsValid() {
		cfg.Src4 = be32(c.SourceV4.Addr())
		cfg.Src4Host = hostMask4(c.SourceV4.Bits())
	}
	if c.SourceV6.IsValid() {
		cfg.Src6 = be128(c.SourceV6.Addr())
		cfg.Src6Host = hostMask6(c.SourceV6.Bits())
	}
	if len(c.GatewayMAC) == 6 {
		copy(cfg.GwMac[:], c.GatewayMAC)
		cfg.Flags |= uint32(balancerFulcrumConfigFlagsCONFIG_F_GW_MAC)
	}
}

// encapFrom reads the configuration back (adoption).
func encapFrom(cfg balancerLbConfig) EncapConfig {
	var c EncapConfig
	if ones := bits.OnesCount32(cfg.Src4Host); cfg.Src4 != 0 || ones != 0 {
		c.SourceV4 = netip.PrefixFrom(netip.AddrFrom4(le4(cfg.Src4)), 32-ones)
	}
	ones := 0
	for _, w := range cfg.Src6Host {
		ones += bits.OnesCount32(w)
	}
	if cfg.Src6 != [4]uint32{} || ones != 0 {
		c.SourceV6 = netip.PrefixFrom(netip.AddrFrom16(le16(cfg.Src6)), 128-ones)
	}
	if cfg.Flags&uint32(balancerFulcrumConfigFlagsCONFIG_F_GW_MAC) != 0 {
		c.GatewayMAC = net.HardwareAddr(bytes.Clone(cfg.GwMac[:]))
	}
	return c
}

// hostMask4 returns the host bits of a /bits IPv4 prefix as the C struct
// holds an address.
func hostMask4(prefixBits int) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], ^uint32(0)>>prefixBits)
	if prefixBits == 0 {
		binary.BigEndian.PutUint32(b[:], ^uint32(0))
	}
	return binary.LittleEndian.Uint32(b[:])
}

func hostMask6(prefixBits int) (out [4]uint32) {
	for i := range out {
		lo := i * 32
		switch {
		case prefixBits <= lo:
			out[i] = ^uint32(0)
		case prefixBits >= lo+32:
			out[i] = 0
		default:
			out[i] = hostMask4(prefixBits - lo)
		}
	}
	return out
}

// OuterSource returns the outer source address the fast path uses for a
// flow hash towards a backend of the given family: Go's twin of
// outer_source() in bpf/encap.h.
func OuterSource(c EncapConfig, hash uint32, v6 bool) netip.Addr {
	var cfg balancerLbConfig
	fillEncap(&cfg, c)
	if !v6 {
		return netip.AddrFrom4(le4(cfg.Src4 | (hash & cfg.Src4Host)))
	}
	var w [4]uint32
	for i := range w {
		w[i] = cfg.Src6[i] | (hash & cfg.Src6Host[i])
	}
	return netip.AddrFrom16(le16(w))
}

// SetNewFlowLimit bounds the connection entries each CPU creates per
// second (0 = no bound). Over the bound, new flows are still balanced by
// the ring but get no entry (counted ct_guard), so a SYN flood cannot evict
// established flows from the connection table. Katran has the same guard.
func (d *Datapath) SetNewFlowLimit(perCPU uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.newFlowLimit
	d.newFlowLimit = perCPU
	if err := d.syncGlobals(); err != nil {
		d.newFlowLimit = old
		return err
	}
	return nil
}

package datapath

// Source ranges: a VIP's allow-list of client prefixes, kept in the
// src_prefixes LPM trie under the VIP's index (kind SRC_KIND_ALLOW). The
// fast path looks the trie up only for a VIP whose vip_meta carries
// VIP_F_SOURCE_RANGES, and drops a client in none of the ranges
// (STAT_DROP_SOURCE_RANGE) before the ring and the connection table.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
)

// SourceRanges is a VIP's set of allowed client prefixes in a canonical
// form: masked, sorted, without duplicates. It is a value that compares
// with ==, so that VIPConfig stays comparable. The zero value has no
// ranges: every client is allowed.
type SourceRanges struct {
	s string // the prefixes in text form, joined by ","
}

// NewSourceRanges returns the set of the given prefixes. Host bits are
// masked off. A prefix must be valid and plain (no v4-mapped IPv6 form,
// which would make an IPv4 range that matches IPv6 clients).
func NewSourceRanges(ps []netip.Prefix) (SourceRanges, error) {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if !p.IsValid() {
			return SourceRanges{}, fmt.Errorf("source range %v is not a valid prefix", p)
		}
		if p.Addr().Is4In6() {
			return SourceRanges{}, fmt.Errorf("source range %s is v4-mapped; write the IPv4 form", p)
		}
		if p.Addr().Zone() != "" {
			return SourceRanges{}, fmt.Errorf("source range %s has a zone", p)
		}
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, comparePrefix)
	out = slices.Compact(out)
	texts := make([]string, len(out))
	for i, p := range out {
		texts[i] = p.String()
	}
	return SourceRanges{s: strings.Join(texts, ",")}, nil
}

// comparePrefix orders prefixes by address, then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Prefixes returns the ranges, sorted; nil when there are none.
func (r SourceRanges) Prefixes() []netip.Prefix {
	if r.s == "" {
		return nil
	}
	texts := strings.Split(r.s, ",")
	out := make([]netip.Prefix, len(texts))
	for i, t := range texts {
		// Written by NewSourceRanges from valid prefixes only.
		out[i] = netip.MustParsePrefix(t)
	}
	return out
}

// without returns the ranges of r that o does not have.
func (r SourceRanges) without(o SourceRanges) []netip.Prefix {
	drop := make(map[netip.Prefix]bool)
	for _, p := range o.Prefixes() {
		drop[p] = true
	}
	return slices.DeleteFunc(r.Prefixes(), func(p netip.Prefix) bool { return drop[p] })
}

// IsZero reports whether there are no ranges: every client is allowed.
func (r SourceRanges) IsZero() bool { return r.s == "" }

// String returns the ranges joined by ",", or "" when there are none.
func (r SourceRanges) String() string { return r.s }

// Allows reports whether a client address may reach the VIP: there are no
// ranges, or one of them contains it.
func (r SourceRanges) Allows(a netip.Addr) bool {
	if r.IsZero() {
		return true
	}
	a = a.Unmap()
	for _, p := range r.Prefixes() {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// checkSourceRanges refuses ranges of the other family than the VIP's:
// the fast path finds a VIP by its destination address, so its clients
// are of its family and such a range could never match.
func checkSourceRanges(vip VIP, r SourceRanges) error {
	for _, p := range r.Prefixes() {
		if p.Addr().Is4() != vip.Addr.Is4() {
			return fmt.Errorf("vip %s: source range %s is %s but the vip is %s; its clients are %s", vip, p,
				addrFamily(p.Addr()), addrFamily(vip.Addr), addrFamily(vip.Addr))
		}
	}
	return nil
}

// srcPrefixKey is the trie key of prefix p of kind under a VIP index.
func srcPrefixKey(index uint16, kind balancerFulcrumSrcKind, p netip.Prefix) balancerSrcPrefixKey {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96 // stored v4-mapped
	}
	return balancerSrcPrefixKey{
		Prefixlen: uint32(srcPrefixHeadBits + bits),
		VipIndex:  index,
		Kind:      uint8(kind),
		Addr:      netip.AddrFrom16(p.Addr().As16()).As16(),
	}
}

// srcPrefixHeadBits is SRC_PREFIX_HEAD_BITS: the key's bits before the
// address (vip_index, kind, pad), which every entry matches whole.
const srcPrefixHeadBits = 32

// prefixOf is the prefix a trie key holds.
func prefixOf(k balancerSrcPrefixKey) (netip.Prefix, bool) {
	bits := int(k.Prefixlen) - srcPrefixHeadBits
	a := netip.AddrFrom16(k.Addr)
	if a.Is4In6() {
		a, bits = a.Unmap(), bits-96
	}
	p, err := a.Prefix(bits)
	return p, err == nil && bits >= 0
}

// addSourceRanges writes the prefixes of next that prev lacks, under the
// VIP's index. It runs before the VIP's new vip_meta is written, so a
// client allowed before and after is never refused in between.
func (d *Datapath) addSourceRanges(index uint16, prev, next SourceRanges) error {
	var added []balancerSrcPrefixKey
	for _, p := range next.without(prev) {
		k := srcPrefixKey(index, balancerFulcrumSrcKindSRC_KIND_ALLOW, p)
		if err := d.objs.SrcPrefixes.Put(k, balancerSrcPrefixValue{}); err != nil {
			// Take back what this change added: the VIP stays as it was.
			for _, a := range added {
				_ = d.objs.SrcPrefixes.Delete(a)
			}
			return fmt.Errorf("write source range %s: %w", p, err)
		}
		added = append(added, k)
	}
	return nil
}

// removeSourceRanges deletes the prefixes of prev that next lacks. It runs
// after the VIP's new vip_meta is written (for a removed VIP, next is
// zero).
func (d *Datapath) removeSourceRanges(index uint16, prev, next SourceRanges) error {
	var errs []error
	for _, p := range prev.without(next) {
		err := d.objs.SrcPrefixes.Delete(srcPrefixKey(index, balancerFulcrumSrcKindSRC_KIND_ALLOW, p))
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete source range %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// adoptSourceRanges gives the adopted VIPs with VIP_F_SOURCE_RANGES the
// ranges the trie holds under their index, and deletes the entries of
// other indexes: left by a crash between writes, they would otherwise
// restrict the next VIP given that index.
func (d *Datapath) adoptSourceRanges(flagged map[uint16]*vipEntry) error {
	ranges := make(map[uint16][]netip.Prefix)
	var stale []balancerSrcPrefixKey
	var k balancerSrcPrefixKey
	var v balancerSrcPrefixValue
	it := d.objs.SrcPrefixes.Iterate()
	for it.Next(&k, &v) {
		if k.Kind == uint8(balancerFulcrumSrcKindSRC_KIND_POOL) {
			continue // adoptPools'
		}
		p, ok := prefixOf(k)
		e := flagged[k.VipIndex]
		if !ok || e == nil || k.Kind != uint8(balancerFulcrumSrcKindSRC_KIND_ALLOW) {
			stale = append(stale, k)
			continue
		}
		ranges[k.VipIndex] = append(ranges[k.VipIndex], p)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s: %w", balancerMapSrcPrefixes, err)
	}
	for idx, e := range flagged {
		r, err := NewSourceRanges(ranges[idx])
		if err != nil {
			return fmt.Errorf("read source ranges of vip %s: %w", e.vip, err)
		}
		e.cfg.SourceRanges = r
		if r.IsZero() {
			// The flag without entries refuses every client, which no
			// configuration means (the writes' order never leaves it):
			// clear the flag, as the zero ranges say.
			if err := d.writeMeta(e); err != nil {
				return err
			}
		}
	}
	for _, k := range stale {
		if err := d.objs.SrcPrefixes.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete stale source range of vip index %d: %w", k.VipIndex, err)
		}
	}
	return nil
}

// writeMeta writes an adopted VIP's vip_meta as its Go view says.
func (d *Datapath) writeMeta(e *vipEntry) error {
	hz, err := d.hz()
	if err != nil {
		return err
	}
	meta := vipMeta(e, hz)
	if err := d.objs.VipState.Put(uint32(e.index), meta); err != nil {
		return fmt.Errorf("vip %s: write vip state: %w", e.vip, err)
	}
	if err := d.putVIPKey(e, meta); err != nil {
		return fmt.Errorf("vip %s: write vip: %w", e.vip, err)
	}
	return nil
}

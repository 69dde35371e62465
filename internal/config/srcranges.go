package config

import (
	"fmt"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A VIP's source ranges (YAML "source_ranges"): the client prefixes it
// serves, like Kubernetes' loadBalancerSourceRanges. Clients outside them
// are dropped by the fast path and counted (drop_source_range). An absent
// or empty list allows every client.

const sourceRangesWhat = "a list of client prefixes, e.g. [198.51.100.0/24, 203.0.113.128/25]"

// scalar is one item of a list of scalars, with a way to report a problem
// at it.
type scalar struct {
	text string
	errf func(format string, args ...any)
}

func (f *fields) scalars(key, what, item string) []scalar {
	nodes := f.seq(key, what)
	out := make([]scalar, 0, len(nodes))
	for i, n := range nodes {
		path := index(f.at(key), i)
		if n.Kind != yaml.ScalarNode {
			f.d.add(path, n, "want %s, got %s", item, describe(n))
			continue
		}
		out = append(out, scalar{text: n.Value, errf: func(format string, args ...any) { f.d.add(path, n, format, args...) }})
	}
	return out
}

func (f *typed) scalars(key, _, _ string) []scalar {
	texts, _ := f.vals[key].([]string)
	out := make([]scalar, len(texts))
	for i, s := range texts {
		path := index(f.at(key), i)
		out[i] = scalar{text: s, errf: func(format string, args ...any) { f.d.add(path, nil, format, args...) }}
	}
	return out
}

// sourceRanges decodes a VIP's source ranges. Each must be a prefix in its
// canonical form (no bits past its length, which is more often a typo
// than meant), listed once, and of the VIP's family: the VIP is found by
// its destination address, so its clients are of its family, and a range
// of the other family would never match (it is refused, not ignored). vip
// is checked against when vipOK.
func sourceRanges(f source, vip netip.Addr, vipOK bool) []netip.Prefix {
	items := f.scalars("source_ranges", sourceRangesWhat, "a prefix such as 198.51.100.0/24")
	if len(items) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(items))
	seen := map[netip.Prefix]int{}
	for i, it := range items {
		p, ok := vipPrefix(it.text, vip, vipOK, it.errf)
		if !ok {
			continue
		}
		if j, dup := seen[p]; dup {
			it.errf("%s is already source_ranges[%d]; list each range once", p, j)
			continue
		}
		seen[p] = i
		out = append(out, p)
	}
	return out
}

// vipPrefix parses a client prefix of a VIP: in its canonical form (no
// bits past its length, which is more often a typo than meant), not
// v4-mapped, and of the VIP's family (checked when vipOK). A problem is
// reported through errf.
func vipPrefix(text string, vip netip.Addr, vipOK bool, errf func(format string, args ...any)) (netip.Prefix, bool) {
	s := strings.TrimSpace(text)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		hint := "write an address and a length, e.g. 198.51.100.0/24 or 2001:db8::/32"
		if a, aerr := netip.ParseAddr(s); aerr == nil {
			hint = fmt.Sprintf("for the one address write %s", netip.PrefixFrom(a, a.BitLen()))
		}
		errf("%q is not a prefix; %s", text, hint)
		return p, false
	}
	switch {
	case p.Addr().Is4In6():
		errf("%q is an IPv4-mapped IPv6 prefix; write it as IPv4, e.g. %s", s, netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0)).Masked())
	case p != p.Masked():
		errf("%q has address bits set past its length %d; write %s", s, p.Bits(), p.Masked())
	case vipOK && p.Addr().Is4() != vip.Is4():
		errf("%s is %s but the vip is %s; a vip's clients are of its own family", p, family(p.Addr()), family(vip))
	default:
		return p, true
	}
	return p, false
}

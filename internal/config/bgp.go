package config

import (
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The bgp section: the embedded speaker (internal/bgp) that announces each
// VIP's address as a /32 or /128 to the upstream routers while this node
// can serve it, so that several active nodes share the traffic by ECMP.
// docs/scale-out.md is the operator's page.

// BGP defaults.
const (
	DefaultBGPHoldTime  = 9 * time.Second
	DefaultBGPKeepalive = 3 * time.Second
	// MinBGPHoldTime is RFC 4271's smallest non-zero hold time.
	MinBGPHoldTime = 3 * time.Second
	// MaxBGPHoldTime is the largest the OPEN message's 16-bit field holds.
	MaxBGPHoldTime = 65535 * time.Second
	// asTrans is RFC 6793's AS_TRANS, never a real AS.
	asTrans = 23456
)

var (
	bgpKeys     = []string{"asn", "router_id", "listen_port", "communities", "med", "peers", "vips"}
	bgpPeerKeys = []string{"address", "asn", "password_file", "hold_time", "keepalive", "multihop"}
	bgpVIPKeys  = []string{"address", "communities", "med"}
)

// BGP configures the embedded BGP speaker. Every prefix is announced with
// this node's address on the session as its next hop (next hop self).
type BGP struct {
	// ASN is this node's AS number (1..4294967295, not 23456).
	ASN uint32
	// RouterID is the speaker's BGP identifier, an IPv4 address.
	RouterID netip.Addr
	// ListenPort is the TCP port the speaker accepts sessions on; 0 =
	// it does not listen and only dials its peers (the default).
	ListenPort int
	// Communities and MED are the defaults of every announced VIP
	// address; MED nil = none sent.
	Communities []Community
	MED         *uint32
	Peers       []BGPPeer
	// VIPs override Communities and MED for some VIP addresses.
	VIPs []BGPVIP
}

// BGPPeer is one router the speaker keeps a session with.
type BGPPeer struct {
	Address netip.Addr
	ASN     uint32
	// PasswordFile holds the TCP MD5 (RFC 2385) password; "" = none. It is
	// read when the speaker starts.
	PasswordFile string
	// HoldTime 0 disables keepalives (RFC 4271); otherwise at least 3s.
	// The session uses the smaller of ours and the peer's.
	HoldTime  time.Duration
	Keepalive time.Duration
	// Multihop is the TTL of an eBGP session to a peer that is not
	// directly connected; 0 = directly connected (TTL 1).
	Multihop int
}

// IBGP reports whether the session is internal (same AS on both ends).
func (p BGPPeer) IBGP(local uint32) bool { return p.ASN == local }

// BGPVIP gives one VIP address its own path attributes.
type BGPVIP struct {
	Address     netip.Addr
	Communities []Community // nil = bgp.communities
	MED         *uint32     // nil = bgp.med
}

// Community is a standard BGP community (RFC 1997), written "AS:value" or
// by its well-known name.
type Community uint32

var wellKnownCommunities = map[string]Community{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"blackhole":           0xFFFF029A,
}

func (c Community) String() string {
	for name, v := range wellKnownCommunities {
		if v == c {
			return name
		}
	}
	return fmt.Sprintf("%d:%d", uint32(c)>>16, uint32(c)&0xffff)
}

// ParseCommunity reads "AS:value" (each 0..65535) or a well-known name
// (no-export, no-advertise, no-export-subconfed, blackhole).
func ParseCommunity(s string) (Community, error) {
	if c, ok := wellKnownCommunities[strings.ToLower(strings.TrimSpace(s))]; ok {
		return c, nil
	}
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), ":")
	a, errA := strconv.ParseUint(hi, 10, 16)
	b, errB := strconv.ParseUint(lo, 10, 16)
	if !ok || errA != nil || errB != nil {
		return 0, fmt.Errorf("%q is not a community; write AS:value with both parts 0..65535, e.g. 65000:100, or no-export", s)
	}
	return Community(a<<16 | b), nil
}

// AttributesOf returns the communities and MED that addr is announced
// with: its bgp.vips entry, or the section's defaults.
func (b *BGP) AttributesOf(addr netip.Addr) ([]Community, *uint32) {
	comm, med := b.Communities, b.MED
	for _, v := range b.VIPs {
		if v.Address == addr {
			if v.Communities != nil {
				comm = v.Communities
			}
			if v.MED != nil {
				med = v.MED
			}
		}
	}
	return comm, med
}

// Restartable returns b without what the daemon applies on reload (the
// path attributes), for comparing what only a restart can change.
func (b *BGP) Restartable() *BGP {
	if b == nil {
		return nil
	}
	c := *b
	c.Communities, c.MED, c.VIPs = nil, nil, nil
	return &c
}

func (d *decoder) bgp(f *fields) *BGP {
	if !f.ok {
		return nil
	}
	b := &BGP{}
	if f.require("asn", "set this node's AS number, e.g. 65010") {
		b.ASN = d.asn(f, "asn")
	}
	if f.require("router_id", "set the BGP identifier, an IPv4 address of this node, e.g. 198.18.0.2") {
		if a, ok := f.addr("router_id"); ok {
			switch {
			case !a.Is4():
				f.errf("router_id", "%s is not IPv4; the BGP identifier is an IPv4 address (an IPv6-only node may use any unique one, e.g. 10.0.0.2)", a)
			case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
				f.errf("router_id", "%s cannot identify a BGP speaker; use one of this node's unicast IPv4 addresses", a)
			default:
				b.RouterID = a
			}
		}
	}
	if port := f.integer("listen_port", 0, -1, 65535); port > 0 {
		b.ListenPort = int(port)
	}
	b.Communities = d.communities(f, "communities")
	b.MED = d.med(f, "med")

	seen := map[netip.Addr]int{}
	for i, pf := range f.items("peers", "a list of peers, e.g. [{address: 198.18.0.1, asn: 65000}]",
		"a peer mapping such as {address: 198.18.0.1, asn: 65000}", bgpPeerKeys) {
		b.Peers = append(b.Peers, d.bgpPeer(pf.(*fields), b.ASN, seen, i))
	}
	if f.ok && len(b.Peers) == 0 && (!f.has("peers") || f.vals["peers"].Kind == yaml.SequenceNode) {
		f.errf("peers", "is empty; list the routers to announce the VIPs to, e.g. [{address: 198.18.0.1, asn: 65000}]")
	}

	seenVIP := map[netip.Addr]int{}
	for i, vf := range f.items("vips", "a list of VIP addresses with their attributes, e.g. [{address: 203.0.113.10, med: 10}]",
		"a mapping such as {address: 203.0.113.10, communities: [\"65000:100\"]}", bgpVIPKeys) {
		g := vf.(*fields)
		var v BGPVIP
		if g.require("address", "set the VIP address these attributes are for") {
			if a, ok := g.addr("address"); ok {
				if j, dup := seenVIP[a]; dup {
					g.errf("address", "%s is already bgp.vips[%d]; list each address once", a, j)
				} else {
					seenVIP[a] = i
					v.Address = a
				}
			}
		}
		v.Communities = d.communities(g, "communities")
		v.MED = d.med(g, "med")
		b.VIPs = append(b.VIPs, v)
	}
	return b
}

func (d *decoder) bgpPeer(f *fields, localASN uint32, seen map[netip.Addr]int, i int) BGPPeer {
	var p BGPPeer
	if f.require("address", "set the router's address, e.g. 198.18.0.1") {
		if a, ok := f.addr("address"); ok {
			j, dup := seen[a]
			switch {
			case checkUnicast(a) != "":
				f.errf("address", "%s %s; use the router's unicast address", a, checkUnicast(a))
			case dup:
				f.errf("address", "%s is already bgp.peers[%d]; list each peer once", a, j)
			default:
				seen[a], p.Address = i, a
			}
		}
	}
	if f.require("asn", "set the router's AS number, e.g. 65000") {
		p.ASN = d.asn(f, "asn")
	}
	if f.has("password_file") {
		p.PasswordFile = f.str("password_file", "")
		if msg := checkAbsPath(p.PasswordFile); msg != "" {
			f.errf("password_file", "%q %s", p.PasswordFile, msg)
		} else {
			p.PasswordFile = filepath.Clean(p.PasswordFile)
		}
	}
	p.HoldTime = f.duration("hold_time", DefaultBGPHoldTime, false)
	if p.HoldTime != 0 && p.HoldTime < MinBGPHoldTime || p.HoldTime > MaxBGPHoldTime {
		f.errf("hold_time", "%s is outside 3s..65535s; use 0 (no keepalives) or a hold time in that range", p.HoldTime)
	} else if p.HoldTime%time.Second != 0 {
		f.errf("hold_time", "%s is not whole seconds; BGP carries the hold time in seconds", p.HoldTime)
	}
	defKeepalive := min(DefaultBGPKeepalive, p.HoldTime/3).Truncate(time.Second)
	p.Keepalive = f.duration("keepalive", defKeepalive, false)
	switch {
	case !f.has("keepalive"):
	case p.Keepalive%time.Second != 0:
		f.errf("keepalive", "%s is not whole seconds; use e.g. 3s", p.Keepalive)
	case p.HoldTime == 0 && p.Keepalive != 0:
		f.errf("keepalive", "%s is set but hold_time is 0, which turns keepalives off; remove keepalive or set a hold_time", p.Keepalive)
	case p.HoldTime != 0 && (p.Keepalive == 0 || p.Keepalive >= p.HoldTime):
		f.errf("keepalive", "%s must be above zero and below hold_time %s; a third of it is usual", p.Keepalive, p.HoldTime)
	}
	p.Multihop = int(f.integer("multihop", 0, 0, 255))
	if p.Multihop == 1 {
		f.errf("multihop", "1 is a directly connected peer, the default; remove it or set the TTL the path needs (2..255)")
	}
	if p.Multihop > 0 && localASN != 0 && p.ASN == localASN {
		f.errf("multihop", "applies to eBGP sessions, and this peer is in our own AS %d (iBGP is not TTL-limited); remove it", localASN)
	}
	return p
}

// asn reads an AS number.
func (d *decoder) asn(f *fields, key string) uint32 {
	n, ok := f.integerOK(key, 0, 1, math.MaxUint32)
	if ok && n == asTrans {
		f.errf(key, "23456 is AS_TRANS (RFC 6793), a placeholder that is never a real AS; use your AS number")
		return 0
	}
	return uint32(n)
}

func (d *decoder) communities(f *fields, key string) []Community {
	if !f.has(key) {
		return nil
	}
	out := []Community{}
	for i, it := range f.seq(key, `a list of communities, e.g. ["65000:100", no-export]`) {
		p := index(f.at(key), i)
		if it.Kind != yaml.ScalarNode {
			d.add(p, it, "want a community such as \"65000:100\", got %s", describe(it))
			continue
		}
		c, err := ParseCommunity(it.Value)
		if err != nil {
			d.add(p, it, "%s", err)
			continue
		}
		if slices.Contains(out, c) {
			d.add(p, it, "%s is listed twice; list each community once", c)
			continue
		}
		out = append(out, c)
	}
	return out
}

func (d *decoder) med(f *fields, key string) *uint32 {
	if !f.has(key) {
		return nil
	}
	n, ok := f.integerOK(key, 0, 0, math.MaxUint32)
	if !ok {
		return nil
	}
	v := uint32(n)
	return &v
}

// doc renders b for Marshal.
func (b *BGP) doc() map[string]any {
	m := map[string]any{"asn": b.ASN, "router_id": b.RouterID.String(), "listen_port": b.ListenPort}
	if b.Communities != nil {
		m["communities"] = communityStrings(b.Communities)
	}
	if b.MED != nil {
		m["med"] = *b.MED
	}
	peers := []map[string]any{}
	for _, p := range b.Peers {
		pm := map[string]any{"address": p.Address.String(), "asn": p.ASN,
			"hold_time": p.HoldTime.String(), "multihop": p.Multihop}
		if p.HoldTime != 0 {
			pm["keepalive"] = p.Keepalive.String()
		}
		if p.PasswordFile != "" {
			pm["password_file"] = p.PasswordFile
		}
		peers = append(peers, pm)
	}
	m["peers"] = peers
	if len(b.VIPs) > 0 {
		vips := []map[string]any{}
		for _, v := range b.VIPs {
			vm := map[string]any{"address": v.Address.String()}
			if v.Communities != nil {
				vm["communities"] = communityStrings(v.Communities)
			}
			if v.MED != nil {
				vm["med"] = *v.MED
			}
			vips = append(vips, vm)
		}
		m["vips"] = vips
	}
	return m
}

func communityStrings(cs []Community) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* fulcrum_decap runs on a backend. It removes the outer IPv4 or IPv6 header
 * that the balancer's ipip mode put in front of a client's packet (4in4,
 * 6in4, 4in6, 6in6) when the inner destination is one of the configured
 * VIPs, and passes the inner packet to the host stack, where the VIP is held
 * on lo. Everything else goes to the stack untouched, except encapsulated
 * packets with broken headers, which are dropped. docs/decap.md has the
 * exact rules. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "parse.h"
#include "decap.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Anchor the enum in BTF so bpf2go exports it to Go. */
const enum decap_stat _decap_stat __attribute__((unused));

/* The VIP sets: inner destination address -> flags (none defined yet; Go
 * writes 0). Go (internal/decap) is their only writer. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u32);
	__uint(max_entries, DECAP_MAX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} decap_vips_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct in6_addr);
	__type(value, __u32);
	__uint(max_entries, DECAP_MAX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} decap_vips_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct decap_stat_table);
	__uint(max_entries, 1);
} decap_stats SEC(".maps");

/* ECN codepoints (RFC 3168), the low two bits of TOS / traffic class. */
#define ECN_MASK 3
#define ECN_NOT_ECT 0
#define ECN_CE 3

enum outer_result {
	OUTER_ENCAP,     /* a well-formed outer header with protocol 4 or 41 */
	OUTER_NOT_ENCAP, /* anything else: not ours to judge */
	OUTER_MALFORMED, /* protocol 4 or 41, but the header is broken */
};

/* outer describes the outer header of a candidate packet. */
struct outer {
	__u32 len;       /* bytes of outer header */
	__u32 inner_len; /* bytes the outer header says follow it */
	__u8 next;       /* IPPROTO_IPIP or IPPROTO_IPV6 */
	__u8 ecn;        /* the outer ECN field */
	__u8 v6;         /* the outer header is IPv6 */
};

/* l2hdr holds the L2 header while the outer header is removed. */
struct l2hdr {
	struct ethhdr eth;
	struct vlan_hdr vlan[MAX_VLAN_TAGS];
};

static __always_inline int verdict(struct decap_stat_table *st, enum decap_stat reason, int action)
{
	if (reason < DECAP_STAT_MAX)
		st->count[reason]++;
	return action;
}

static __always_inline int is_tunnel_proto(__u8 p)
{
	return p == IPPROTO_IPIP || p == IPPROTO_IPV6;
}

/* outer_ipv4 reads the IPv4 header at l3. A fragment is malformed: the
 * balancer sets DF, and this host has no tunnel driver that could use a
 * reassembled packet. */
static __always_inline enum outer_result outer_ipv4(void *l3, void *end, struct outer *o)
{
	struct iphdr *ip = l3;
	__u32 hlen, tot;

	if ((void *)(ip + 1) > end)
		return OUTER_NOT_ENCAP;
	if (!is_tunnel_proto(ip->protocol))
		return OUTER_NOT_ENCAP;
	hlen = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	if (ip->version != 4 || hlen < sizeof(*ip) || tot < hlen || l3 + tot > end)
		return OUTER_MALFORMED;
	if (ip->frag_off & bpf_htons(0x3fff)) /* MF or a fragment offset */
		return OUTER_MALFORMED;
	o->len = hlen;
	o->inner_len = tot - hlen;
	o->next = ip->protocol;
	o->ecn = ip->tos & ECN_MASK;
	o->v6 = 0;
	return OUTER_ENCAP;
}

/* outer_ipv6 reads the IPv6 header at l3. Only a next header of 4 or 41
 * right after the fixed header is a candidate: the balancer adds no
 * extension headers. */
static __always_inline enum outer_result outer_ipv6(void *l3, void *end, struct outer *o)
{
	struct ipv6hdr *ip6 = l3;
	__u32 plen;

	if ((void *)(ip6 + 1) > end)
		return OUTER_NOT_ENCAP;
	if (!is_tunnel_proto(ip6->nexthdr))
		return OUTER_NOT_ENCAP;
	plen = bpf_ntohs(ip6->payload_len);
	if (ip6->version != 6 || l3 + sizeof(*ip6) + plen > end)
		return OUTER_MALFORMED;
	o->len = sizeof(*ip6);
	o->inner_len = plen;
	o->next = ip6->nexthdr;
	o->ecn = (ip6->flow_lbl[0] >> 4) & ECN_MASK;
	o->v6 = 1;
	return OUTER_ENCAP;
}

/* ipv4_set_ce marks an IPv4 header CE and updates its checksum
 * incrementally (RFC 1624, eqn. 3) over the 16-bit word that holds TOS. */
static __always_inline void ipv4_set_ce(struct iphdr *ip)
{
	__u16 *word = (__u16 *)ip;
	__u16 old = *word;
	__u32 sum;

	ip->tos |= ECN_CE;
	sum = (__u16)~ip->check + (__u16)~old + *word;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = ~sum;
}

/* strip removes olen bytes of outer header behind the l2len-byte L2
 * header and sets the innermost EtherType to proto. It returns 0, or -1 if
 * the kernel refused to move the packet start (it cannot: more than
 * ETH_HLEN bytes remain). */
static __always_inline int strip(struct xdp_md *ctx, __u32 l2len, __u32 olen, __be16 proto)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct l2hdr hdr;

	/* Save the L2 header: it moves forward by olen, which may be less
	 * than its own length (20 < 22), so it cannot be copied in place. */
	if (data + sizeof(hdr) > end)
		return -1;
	__builtin_memcpy(&hdr, data, sizeof(hdr));
	if (l2len == sizeof(struct ethhdr))
		hdr.eth.h_proto = proto;
	else if (l2len == sizeof(struct ethhdr) + sizeof(struct vlan_hdr))
		hdr.vlan[0].encap_proto = proto;
	else
		hdr.vlan[1].encap_proto = proto;

	if (bpf_xdp_adjust_head(ctx, (int)olen))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	/* l2len + at least 20 bytes of inner header remain. */
	if (data + sizeof(hdr) > end)
		return -1;
	__builtin_memcpy(data, &hdr.eth, sizeof(hdr.eth));
	if (l2len > sizeof(struct ethhdr))
		__builtin_memcpy(data + sizeof(hdr.eth), &hdr.vlan[0], sizeof(hdr.vlan[0]));
	if (l2len > sizeof(struct ethhdr) + sizeof(struct vlan_hdr))
		__builtin_memcpy(data + sizeof(hdr.eth) + sizeof(hdr.vlan[0]), &hdr.vlan[1], sizeof(hdr.vlan[1]));
	return 0;
}

SEC("xdp")
int fulcrum_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	enum decap_stat family;
	struct decap_stat_table *st;
	__u32 zero = 0, l2len = 0;
	struct outer o = {};
	enum outer_result r;
	__u8 inner_ecn;
	__be16 proto;
	void *inner;

	st = bpf_map_lookup_elem(&decap_stats, &zero);
	if (!st)
		return XDP_PASS;

	proto = parse_eth(data, end, &l2len);
	if (l2len > sizeof(struct l2hdr))
		return verdict(st, DECAP_STAT_PASS_NOT_ENCAP, XDP_PASS);
	if (proto == bpf_htons(ETH_P_IP))
		r = outer_ipv4(data + l2len, end, &o);
	else if (proto == bpf_htons(ETH_P_IPV6))
		r = outer_ipv6(data + l2len, end, &o);
	else
		r = OUTER_NOT_ENCAP;
	if (r == OUTER_NOT_ENCAP)
		return verdict(st, DECAP_STAT_PASS_NOT_ENCAP, XDP_PASS);
	if (r != OUTER_ENCAP)
		return verdict(st, DECAP_STAT_DROP_MALFORMED, XDP_DROP);

	/* o.len <= 60 and o.inner_len was checked against the frame. */
	inner = data + l2len + o.len;
	if (o.next == IPPROTO_IPIP) {
		struct iphdr *ip = inner;
		__u32 hlen, tot;
		__be32 dst;

		if ((void *)(ip + 1) > end || o.inner_len < sizeof(*ip))
			return verdict(st, DECAP_STAT_DROP_MALFORMED, XDP_DROP);
		hlen = ip->ihl * 4;
		tot = bpf_ntohs(ip->tot_len);
		if (ip->version != 4 || hlen < sizeof(*ip) || tot < hlen || tot > o.inner_len)
			return verdict(st, DECAP_STAT_DROP_MALFORMED, XDP_DROP);
		dst = ip->daddr;
		if (!bpf_map_lookup_elem(&decap_vips_v4, &dst))
			return verdict(st, DECAP_STAT_PASS_FOREIGN, XDP_PASS);
		inner_ecn = ip->tos & ECN_MASK;
		if (o.ecn == ECN_CE && inner_ecn != ECN_CE) {
			if (inner_ecn == ECN_NOT_ECT)
				return verdict(st, DECAP_STAT_DROP_ECN, XDP_DROP);
			ipv4_set_ce(ip);
			st->count[DECAP_STAT_CE]++;
		}
		proto = bpf_htons(ETH_P_IP);
		family = o.v6 ? DECAP_STAT_DECAP_4IN6 : DECAP_STAT_DECAP_4IN4;
	} else {
		struct ipv6hdr *ip6 = inner;
		struct in6_addr dst;

		if ((void *)(ip6 + 1) > end || o.inner_len < sizeof(*ip6))
			return verdict(st, DECAP_STAT_DROP_MALFORMED, XDP_DROP);
		if (ip6->version != 6 || sizeof(*ip6) + bpf_ntohs(ip6->payload_len) > o.inner_len)
			return verdict(st, DECAP_STAT_DROP_MALFORMED, XDP_DROP);
		__builtin_memcpy(&dst, &ip6->daddr, sizeof(dst));
		if (!bpf_map_lookup_elem(&decap_vips_v6, &dst))
			return verdict(st, DECAP_STAT_PASS_FOREIGN, XDP_PASS);
		inner_ecn = (ip6->flow_lbl[0] >> 4) & ECN_MASK;
		if (o.ecn == ECN_CE && inner_ecn != ECN_CE) {
			if (inner_ecn == ECN_NOT_ECT)
				return verdict(st, DECAP_STAT_DROP_ECN, XDP_DROP);
			ip6->flow_lbl[0] |= ECN_CE << 4;
			st->count[DECAP_STAT_CE]++;
		}
		proto = bpf_htons(ETH_P_IPV6);
		family = o.v6 ? DECAP_STAT_DECAP_6IN6 : DECAP_STAT_DECAP_6IN4;
	}

	if (strip(ctx, l2len, o.len, proto))
		return verdict(st, DECAP_STAT_DROP_MALFORMED, XDP_DROP);
	st->count[family]++;
	return verdict(st, DECAP_STAT_DECAP, XDP_PASS);
}

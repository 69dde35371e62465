/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing: one bounds-checked step per layer. Each step returns a
 * parse_result saying whether the packet is a candidate for balancing. */
#ifndef FULCRUM_PARSE_H
#define FULCRUM_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "consts.h"

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IP,        /* no IP header we can read */
	PARSE_NOT_L4,        /* IP, but neither TCP nor UDP */
	PARSE_FRAGMENT,      /* IP fragment: no ports to balance on */
	PARSE_MALFORMED,     /* IP header readable, the rest is not */
};

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* flow is what the balancer needs of a parsed packet. */
struct flow {
	union {
		__be32 v4;
		__be32 v6[4];
	} src, dst;
	__u32 ports;    /* source and destination port as loaded (sport low) */
	__u8 proto;
	__u8 syn;       /* TCP SYN without ACK */
	__u8 tcp_flags; /* TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); 0 for UDP */
	__u8 tos;       /* IPv4 TOS or IPv6 traffic class */
	__u8 family;    /* 4 or 6 */
	__u8 pad[3];
	__u16 l3off;    /* bytes of L2 header before the IP header */
	__u16 l3len;    /* the IP packet's length by its header */
};

/* parse_eth skips Ethernet and up to MAX_VLAN_TAGS VLAN tags and returns
 * the EtherType in network order, or 0 if the frame is too short. */
static __always_inline __be16 parse_eth(void *data, void *end, __u32 *l3off)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > end)
		return 0;
	proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_hdr *vh = data + off;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > end)
			return 0;
		proto = vh->encap_proto;
		off += sizeof(*vh);
	}
	*l3off = off;
	return proto;
}

/* parse_l4 reads the ports of a TCP or UDP header at l4 and checks that
 * the header and its length fields fit the IP packet: l4len is what the IP
 * header says is left after the network headers. The frame may hold more
 * (Ethernet padding, or junk): that is not part of the packet. */
static __always_inline enum parse_result parse_l4(void *l4, void *end, __u32 l4len, struct flow *f)
{
	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > end || l4len < sizeof(*tcp))
			return PARSE_MALFORMED;
		if (tcp->doff < 5 || tcp->doff * 4 > l4len)
			return PARSE_MALFORMED;
		f->ports = *(__u32 *)tcp;
		f->tcp_flags = ((__u8 *)tcp)[13];
		f->syn = tcp->syn && !tcp->ack;
		return PARSE_OK;
	}
	if (f->proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		__u32 ulen;

		if ((void *)(udp + 1) > end || l4len < sizeof(*udp))
			return PARSE_MALFORMED;
		ulen = bpf_ntohs(udp->len);
		if (ulen < sizeof(*udp) || ulen > l4len)
			return PARSE_MALFORMED;
		f->ports = *(__u32 *)udp;
		f->syn = 0;
		f->tcp_flags = 0;
		return PARSE_OK;
	}
	return PARSE_NOT_L4;
}

/* parse_ipv4 fills f from the IPv4 packet at l3. On PARSE_FRAGMENT and
 * PARSE_MALFORMED, f->dst and f->proto are valid (the policy lookup needs
 * them). */
static __always_inline enum parse_result parse_ipv4(void *l3, void *end, struct flow *f)
{
	struct iphdr *ip = l3;
	__u32 hlen, tot;

	if ((void *)(ip + 1) > end)
		return PARSE_NOT_IP;
	f->dst.v4 = ip->daddr;
	f->src.v4 = ip->saddr;
	f->proto = ip->protocol;
	if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP)
		return PARSE_NOT_L4;
	hlen = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	if (ip->version != 4 || hlen < sizeof(*ip) || tot < hlen || l3 + tot > end)
		return PARSE_MALFORMED;
	f->tos = ip->tos;
	f->l3len = tot;
	f->family = 4;
	if (ip->frag_off & bpf_htons(0x3fff)) /* MF or a fragment offset */
		return PARSE_FRAGMENT;
	return parse_l4(l3 + hlen, end, tot - hlen, f);
}

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
/* Bound on the extension header chain, to keep offsets verifiable. */
#define IPV6_MAX_EXT_BYTES 512

struct ipv6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
	__be16 frag_off; /* fragment header only */
	__be32 id;
};

/* parse_ipv6 fills f from the IPv6 packet at l3, walking at most
 * IPV6_MAX_EXT_HEADERS extension headers. */
static __always_inline enum parse_result parse_ipv6(void *l3, void *end, struct flow *f)
{
	struct ipv6hdr *ip6 = l3;
	__u32 off = sizeof(*ip6);
	__u8 next;

	if ((void *)(ip6 + 1) > end)
		return PARSE_NOT_IP;
	__builtin_memcpy(f->dst.v6, &ip6->daddr, 16);
	__builtin_memcpy(f->src.v6, &ip6->saddr, 16);
	next = ip6->nexthdr;
	if (ip6->version != 6)
		return PARSE_MALFORMED;
	if (l3 + sizeof(*ip6) + bpf_ntohs(ip6->payload_len) > end)
		return PARSE_MALFORMED;
	f->l3len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	f->family = 6;
	f->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);

#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT_HEADERS; i++) {
		struct ipv6_ext *ext = l3 + off;

		if (next == IPPROTO_TCP || next == IPPROTO_UDP)
			break;
		if (next != NEXTHDR_HOP && next != NEXTHDR_ROUTING && next != NEXTHDR_DEST &&
		    next != NEXTHDR_FRAGMENT && next != NEXTHDR_AUTH) {
			f->proto = next;
			return PARSE_NOT_L4;
		}
		if ((void *)(ext + 1) > end || off + sizeof(*ext) > f->l3len) {
			f->proto = next;
			return PARSE_MALFORMED;
		}
		if (next == NEXTHDR_FRAGMENT) {
			/* Offset or M flag set: a real fragment. An atomic
			 * fragment (both zero) is a whole packet. */
			if (ext->frag_off & bpf_htons(0xfff9)) {
				f->proto = ext->nexthdr;
				return PARSE_FRAGMENT;
			}
			off += 8;
		} else if (next == NEXTHDR_AUTH) {
			off += (ext->hdrlen + 2) * 4;
		} else {
			off += (ext->hdrlen + 1) * 8;
		}
		next = ext->nexthdr;
		if (off > IPV6_MAX_EXT_BYTES) {
			f->proto = next;
			return PARSE_MALFORMED;
		}
	}
	f->proto = next;
	if (next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_DEST ||
	    next == NEXTHDR_FRAGMENT || next == NEXTHDR_AUTH)
		return PARSE_MALFORMED; /* a chain longer than we walk */
	if (off > f->l3len)
		return PARSE_MALFORMED; /* the last header runs past the packet */
	return parse_l4(l3 + off, end, f->l3len - off, f);
}

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding by a VIP's mode once the backend is known: dsr rewrites the
 * MAC addresses, ipip encapsulates (encap.h finds the next hop). */
#ifndef FULCRUM_FORWARD_H
#define FULCRUM_FORWARD_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "types.h"
#include "maps.h"
#include "parse.h"
#include "encap.h"
#include "stats.h"

/* copy_l2 moves the L2 header (14, 18 or 22 bytes) from src down to dst,
 * two bytes at a time in ascending order, which is safe when the regions
 * overlap and dst < src. */
static __always_inline void copy_l2(__u16 *dst, const __u16 *src, __u32 len)
{
#pragma unroll
	for (int i = 0; i < 11; i++)
		if (i < len / 2)
			dst[i] = src[i];
}

/* encap_ipip wraps the packet's IP packet in an outer IPv4 or IPv6 header
 * for the backend (all four family combinations) and sends it to the next
 * hop the FIB gives. */
static __always_inline int encap_ipip(struct xdp_md *ctx, struct stat_table *st,
				      const struct lb_config *cfg, const struct vip_meta *vip, __u32 id,
				      const struct backend *be, const struct flow *f, __u32 hash)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 outer_len, l2len = f->l3off, sent_len;
	__u64 frame_len;
	__u8 inner_proto = f->family == 4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	struct next_hop hop = {};
	__be32 src[4] = {};
	__be16 *etype;

	if ((void *)(eth + 1) > end)
		return verdict(st, STAT_DROP_MALFORMED, XDP_DROP);
	if (l2len != 14 && l2len != 18 && l2len != 22)
		return verdict(st, STAT_DROP_MALFORMED, XDP_DROP);
	outer_len = be->family == AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	outer_source(cfg, be->family, hash, src);
	/* What leaves after L2 is the outer header and everything after the
	 * L2 header, bytes past the IP packet (Ethernet padding, junk) too:
	 * that, not the outer IP length, must fit the egress MTU. */
	frame_len = end - data;
	barrier_var(frame_len); /* keep the pointer difference 64-bit */
	sent_len = frame_len - l2len + outer_len;

	switch (find_next_hop(ctx, cfg, be, id, src, sent_len, eth->h_dest, &hop)) {
	case HOP_TOO_BIG:
		return verdict(st, STAT_DROP_TOO_BIG, XDP_DROP);
	case HOP_NO_ROUTE:
		return verdict(st, STAT_DROP_NO_ROUTE, XDP_DROP);
	case HOP_GATEWAY:
		st->count[STAT_FIB_GATEWAY]++;
		break;
	default:
		break;
	}

	if (bpf_xdp_adjust_head(ctx, -(int)outer_len))
		return verdict(st, STAT_DROP_ENCAP, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if (data + outer_len + 22 > end || data + 22 > end)
		return verdict(st, STAT_DROP_ENCAP, XDP_DROP);
	copy_l2(data, data + outer_len, l2len);
	/* The innermost EtherType, at a constant offset per tag count (the
	 * verifier takes those; data + 22 <= end was checked). */
	etype = data + 12;
	if (l2len == 18)
		etype = data + 16;
	else if (l2len == 22)
		etype = data + 20;
	*etype = be->family == AF_INET ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
	__builtin_memcpy(eth->h_dest, hop.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, hop.smac, ETH_ALEN);

	if (be->family == AF_INET) {
		struct iphdr *o = data + l2len;

		if ((void *)(o + 1) > end)
			return verdict(st, STAT_DROP_ENCAP, XDP_DROP);
		o->version = 4;
		o->ihl = 5;
		o->tos = f->tos;
		o->tot_len = bpf_htons(f->l3len + sizeof(*o));
		o->id = 0;
		o->frag_off = bpf_htons(IP_DF);
		o->ttl = OUTER_TTL;
		o->protocol = inner_proto;
		o->check = 0;
		o->saddr = src[0];
		o->daddr = be->addr[0];
		o->check = ipv4_csum(o);
	} else {
		struct ipv6hdr *o = data + l2len;

		if ((void *)(o + 1) > end)
			return verdict(st, STAT_DROP_ENCAP, XDP_DROP);
		/* version 6, the inner traffic class, a flow label from the
		 * hash so ECMP and RSS spread outer flows like inner ones. */
		*(__be32 *)o = bpf_htonl((6 << 28) | ((__u32)f->tos << 20) | (hash & 0xfffff));
		o->payload_len = bpf_htons(f->l3len);
		o->nexthdr = inner_proto;
		o->hop_limit = OUTER_TTL;
		__builtin_memcpy(&o->saddr, src, 16);
		__builtin_memcpy(&o->daddr, be->addr, 16);
	}

	count(&vip_stats, vip->index, end - data);
	count(&backend_stats, id, end - data);
	if (hop.ifindex == ctx->ingress_ifindex)
		return verdict(st, STAT_TX_IPIP, XDP_TX);
	st->count[STAT_TX_IPIP]++;
	return bpf_redirect(hop.ifindex, 0);
}

/* forward sends the packet to backend id by the VIP's mode and counts it.
 * hash is the flow's hash, for the outer header of ipip. */
static __always_inline int forward(struct xdp_md *ctx, struct stat_table *st,
				   const struct lb_config *cfg, const struct vip_meta *vip, __u32 id,
				   const struct backend *be, const struct flow *f, __u32 hash)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u64 bytes = end - data;

	if ((void *)(eth + 1) > end)
		return verdict(st, STAT_DROP_MALFORMED, XDP_DROP);

	switch (vip->mode) {
	case MODE_DSR:
		/* We received the frame, so its destination MAC is ours: it
		 * becomes the source. The backend holds the VIP on lo. */
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
		count(&vip_stats, vip->index, bytes);
		count(&backend_stats, id, bytes);
		return verdict(st, STAT_TX_DSR, XDP_TX);
	case MODE_IPIP:
		return encap_ipip(ctx, st, cfg, vip, id, be, f, hash);
	default:
		return verdict(st, STAT_DROP_BAD_MODE, XDP_DROP);
	}
}

#endif

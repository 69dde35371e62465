// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* The Fulcrum XDP balancer. Per packet: parse, connection table, VIP,
 * Maglev ring, forward by the VIP's mode, count. Anything that is not for a
 * VIP goes to the host stack untouched (XDP_PASS). */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "types.h"
#include "maps.h"
#include "parse.h"
#include "flowhash.h"
#include "encap.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define UNASSIGNED 0xffffffff

/* Anchor the enums in BTF so bpf2go exports them to Go. */
const enum fulcrum_stat _stat __attribute__((unused));
const enum fulcrum_mode _mode __attribute__((unused));
const enum fulcrum_vip_flags _vip_flags __attribute__((unused));
const enum fulcrum_backend_flags _backend_flags __attribute__((unused));
const enum fulcrum_config_flags _config_flags __attribute__((unused));

static __always_inline int verdict(struct stat_table *st, enum fulcrum_stat reason, int action)
{
	if (reason < STAT_MAX)
		st->count[reason]++;
	return action;
}

static __always_inline void count(void *map, __u32 index, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(map, &index);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* unparseable decides what happens to a fragment or bad packet: the policy
 * of its destination address when that address has a VIP, otherwise the
 * host stack gets it. */
static __always_inline int unparseable(struct stat_table *st, __u32 *policy, enum parse_result r)
{
	if (!policy)
		return verdict(st, STAT_PASS_NO_VIP, XDP_PASS);
	if (*policy & VIP_F_PASS_UNPARSEABLE)
		return verdict(st, STAT_PASS_UNPARSEABLE, XDP_PASS);
	if (r == PARSE_FRAGMENT)
		return verdict(st, STAT_DROP_FRAGMENT, XDP_DROP);
	return verdict(st, STAT_DROP_MALFORMED, XDP_DROP);
}

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

/* hash_of returns the 5-tuple hash of a parsed flow. */
static __always_inline __u32 hash_of(const struct flow *f)
{
	if (f->family == 4)
		return flow_hash(f->src.v4, f->dst.v4, f->ports, f->proto);
	return flow_hash(fold6(f->src.v6), fold6(f->dst.v6), f->ports, f->proto);
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

static __always_inline __u32 now_jiffies(void)
{
	return (__u32)bpf_jiffies64();
}

/* pick returns the ring's backend for hash, or UNASSIGNED. */
static __always_inline __u32 pick(const struct vip_meta *vip, __u32 hash)
{
	__u32 idx = vip->index;
	__u32 slot, *id;
	void *ring;

	ring = bpf_map_lookup_elem(&rings, &idx);
	if (!ring)
		return UNASSIGNED;
	slot = ring_slot(hash, vip->ring_size);
	id = bpf_map_lookup_elem(ring, &slot);
	return id ? *id : UNASSIGNED;
}

/* live_backend returns backend id if it may take packets. */
static __always_inline const struct backend *live_backend(__u32 id)
{
	struct backend *be = bpf_map_lookup_elem(&backends, &id);

	if (!be || !(be->flags & BACKEND_F_LIVE))
		return 0;
	return be;
}

static __always_inline int ct_wanted(const struct lb_config *cfg, __u8 proto)
{
	if (proto == IPPROTO_TCP)
		return cfg->flags & CONFIG_F_CT_TCP;
	return cfg->flags & CONFIG_F_CT_UDP;
}

/* over_flow_limit counts one new connection entry on this CPU and reports
 * whether the configured per-CPU rate is exceeded. */
static __always_inline int over_flow_limit(const struct lb_config *cfg)
{
	__u32 zero = 0;
	struct flow_guard *g;
	__u64 now;

	if (!cfg->new_flow_limit)
		return 0;
	g = bpf_map_lookup_elem(&flow_guard, &zero);
	if (!g)
		return 0;
	now = bpf_ktime_get_coarse_ns();
	if (now - g->window_start >= 1000000000ULL) {
		g->window_start = now;
		g->count = 0;
	}
	return ++g->count > cfg->new_flow_limit;
}

/* balance is the family-independent part once the VIP is known: ring
 * lookup, connection entry, forward. ct_map/ct_key are the family's table. */
static __always_inline int balance(struct xdp_md *ctx, struct stat_table *st,
				   const struct lb_config *cfg,
				   const struct vip_meta *vip, const struct flow *f, __u32 hash,
				   void *ct_map, const void *ct_key,
				   enum fulcrum_stat ct_event)
{
	const struct backend *be;
	__u32 id = pick(vip, hash);

	if (id == UNASSIGNED)
		return verdict(st, STAT_DROP_NO_BACKEND, XDP_DROP);
	be = live_backend(id);
	if (!be)
		return verdict(st, STAT_DROP_NO_BACKEND, XDP_DROP);

	if (vip->flags & VIP_F_NO_CONNTRACK) {
		st->count[STAT_CT_BYPASS]++;
	} else if (over_flow_limit(cfg)) {
		st->count[STAT_CT_GUARD]++;
	} else {
		struct ct_value ct = {
			.backend = id,
			.backend_gen = be->gen,
			.last_seen = now_jiffies(),
		};

		if (bpf_map_update_elem(ct_map, ct_key, &ct, BPF_ANY))
			st->count[STAT_CT_INSERT_FAILED]++;
		if (ct_event < STAT_MAX)
			st->count[ct_event]++;
	}
	if ((vip->flags & VIP_F_SOURCE_HASH) && vip->mode == MODE_IPIP)
		hash = hash_of(f); /* the outer header spreads by 5-tuple */
	return forward(ctx, st, cfg, vip, id, be, f, hash);
}

/* ct_hit forwards by a connection entry, or returns -1 if the entry is
 * stale (its VIP or backend is gone) and the packet must be re-hashed. */
static __always_inline int ct_hit(struct xdp_md *ctx, struct stat_table *st,
				  const struct lb_config *cfg, struct ct_value *ct,
				  const struct flow *f)
{
	const struct backend *be = live_backend(ct->backend);
	struct vip_meta *vip;
	__u32 now, idx;

	if (!be || be->gen != ct->backend_gen)
		return -1;
	idx = be->vip_index;
	vip = bpf_map_lookup_elem(&vip_state, &idx);
	if (!vip || vip->gen == 0 || (vip->flags & VIP_F_NO_CONNTRACK))
		return -1;
	/* Write only when the coarse clock moved: no store per packet. */
	now = now_jiffies();
	if (ct->last_seen != now)
		ct->last_seen = now;
	st->count[STAT_CT_HIT]++;
	return forward(ctx, st, cfg, vip, ct->backend, be, f, vip->mode == MODE_IPIP ? hash_of(f) : 0);
}

static __always_inline int balance_v4(struct xdp_md *ctx, struct stat_table *st,
					      const struct lb_config *cfg, void *l3,
					      __u32 l3off, void *end)
{
	struct flow f = { .l3off = l3off };
	enum parse_result r = parse_ipv4(l3, end, &f);
	enum fulcrum_stat event = STAT_CT_MISS;
	struct vip_key_v4 vk = {};
	struct ct_key_v4 ck = {};
	struct vip_meta *vip;
	__u32 hash;

	switch (r) {
	case PARSE_OK:
		break;
	case PARSE_NOT_IP:
		return verdict(st, STAT_PASS_NOT_IP, XDP_PASS);
	case PARSE_NOT_L4:
		return verdict(st, STAT_PASS_NOT_L4, XDP_PASS);
	default:
		return unparseable(st, bpf_map_lookup_elem(&vip_addrs_v4, &f.dst.v4), r);
	}

	ck.src = f.src.v4;
	ck.dst = f.dst.v4;
	*(__u32 *)&ck.sport = f.ports;
	ck.proto = f.proto;
	if (f.syn) {
		event = STAT_CT_SYN;
	} else if (ct_wanted(cfg, f.proto)) {
		struct ct_value *ct = bpf_map_lookup_elem(&ct_v4, &ck);

		if (ct) {
			int action = ct_hit(ctx, st, cfg, ct, &f);

			if (action >= 0)
				return action;
			event = STAT_CT_STALE;
		}
	}

	vk.addr = f.dst.v4;
	vk.port = ck.dport;
	vk.proto = f.proto;
	vip = bpf_map_lookup_elem(&vips_v4, &vk);
	if (!vip) {
		vk.port = 0;
		vip = bpf_map_lookup_elem(&vips_v4, &vk);
		if (!vip)
			return verdict(st, STAT_PASS_NO_VIP, XDP_PASS);
	}
	if (vip->flags & VIP_F_SOURCE_HASH)
		hash = flow_hash(f.src.v4, 0, 0, f.proto);
	else
		hash = flow_hash(f.src.v4, f.dst.v4, f.ports, f.proto);
	return balance(ctx, st, cfg, vip, &f, hash, &ct_v4, &ck, event);
}

static __always_inline int balance_v6(struct xdp_md *ctx, struct stat_table *st,
					      const struct lb_config *cfg, void *l3,
					      __u32 l3off, void *end)
{
	struct flow f = { .l3off = l3off };
	enum parse_result r = parse_ipv6(l3, end, &f);
	enum fulcrum_stat event = STAT_CT_MISS;
	struct vip_key_v6 vk = {};
	struct ct_key_v6 ck = {};
	struct vip_meta *vip;
	__u32 hash;

	switch (r) {
	case PARSE_OK:
		break;
	case PARSE_NOT_IP:
		return verdict(st, STAT_PASS_NOT_IP, XDP_PASS);
	case PARSE_NOT_L4:
		return verdict(st, STAT_PASS_NOT_L4, XDP_PASS);
	default:
		return unparseable(st, bpf_map_lookup_elem(&vip_addrs_v6, &f.dst.v6), r);
	}

	__builtin_memcpy(ck.src, f.src.v6, 16);
	__builtin_memcpy(ck.dst, f.dst.v6, 16);
	*(__u32 *)&ck.sport = f.ports;
	ck.proto = f.proto;
	if (f.syn) {
		event = STAT_CT_SYN;
	} else if (ct_wanted(cfg, f.proto)) {
		struct ct_value *ct = bpf_map_lookup_elem(&ct_v6, &ck);

		if (ct) {
			int action = ct_hit(ctx, st, cfg, ct, &f);

			if (action >= 0)
				return action;
			event = STAT_CT_STALE;
		}
	}

	__builtin_memcpy(vk.addr, f.dst.v6, 16);
	vk.port = ck.dport;
	vk.proto = f.proto;
	vip = bpf_map_lookup_elem(&vips_v6, &vk);
	if (!vip) {
		vk.port = 0;
		vip = bpf_map_lookup_elem(&vips_v6, &vk);
		if (!vip)
			return verdict(st, STAT_PASS_NO_VIP, XDP_PASS);
	}
	if (vip->flags & VIP_F_SOURCE_HASH)
		hash = flow_hash(fold6(f.src.v6), 0, 0, f.proto);
	else
		hash = flow_hash(fold6(f.src.v6), fold6(f.dst.v6), f.ports, f.proto);
	return balance(ctx, st, cfg, vip, &f, hash, &ct_v6, &ck, event);
}

SEC("xdp")
int fulcrum_balancer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, l3off = 0;
	struct lb_config *cfg;
	struct stat_table *st;
	__be16 proto;

	/* The two per-CPU/global singletons, looked up once per packet and
	 * handed down. */
	st = bpf_map_lookup_elem(&stats, &zero);
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!st || !cfg)
		return XDP_PASS;

	proto = parse_eth(data, end, &l3off);
	if (l3off > 22)
		return verdict(st, STAT_PASS_NOT_IP, XDP_PASS);
	/* A frame sent to a broadcast or multicast MAC is not ours to
	 * forward (a router does not forward it either), and dsr would make
	 * its group address our source MAC. */
	if ((proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6)) &&
	    (((struct ethhdr *)data)->h_dest[0] & 1))
		return verdict(st, STAT_PASS_NOT_UNICAST, XDP_PASS);
	if (proto == bpf_htons(ETH_P_IP))
		return balance_v4(ctx, st, cfg, data + l3off, l3off, end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return balance_v6(ctx, st, cfg, data + l3off, l3off, end);
	return verdict(st, STAT_PASS_NOT_IP, XDP_PASS);
}

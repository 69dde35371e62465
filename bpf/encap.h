/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IP-in-IP encapsulation for MODE_IPIP: the packet from its IP header on is
 * kept whole behind a new outer IPv4 or IPv6 header addressed to the
 * backend; the next hop comes from the kernel's FIB. */
#ifndef FULCRUM_ENCAP_H
#define FULCRUM_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "parse.h"
#include "consts.h"
#include "outer.h"

/* next_hop is where an encapsulated packet leaves. */
struct next_hop {
	__u8 dmac[6];
	__u8 smac[6];
	__u32 ifindex;
};

/* A FIB answer is reused for this many jiffies (64-256 ms, by HZ): route
 * and neighbour changes take effect that late, and most packets skip the
 * lookup, the costliest step of ipip. */
#define HOP_CACHE_JIFFIES 64

/* hop_cache[backend id] on each CPU: the last FIB answer for the backend. */
struct hop_entry {
	__u8 dmac[6];
	__u8 smac[6];
	__u32 ifindex;     /* egress */
	__u32 in_ifindex;  /* the lookup's ingress: answers differ per port */
	__u32 stamp;       /* jiffies; 0 = empty */
	__u16 mtu;
	__u16 gen;         /* the backend's generation */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hop_entry);
	__uint(max_entries, MAX_BACKENDS);
} hop_cache SEC(".maps");

enum hop_result {
	HOP_OK,
	HOP_GATEWAY,   /* no neighbour: the configured gateway MAC */
	HOP_TOO_BIG,
	HOP_NO_ROUTE,
};

/* find_next_hop asks the FIB for the route to the backend, as for a packet
 * forwarded from the ingress port, with the encapsulated length so the
 * kernel checks the egress MTU. The kernel answers only if forwarding is
 * enabled on the ingress interface (net.ipv{4,6}.conf.IF.forwarding). */
static __always_inline enum hop_result find_next_hop(struct xdp_md *ctx, const struct lb_config *cfg,
						     const struct backend *be, __u32 id, const __be32 *src,
						     __u16 tot_len, __u8 *ours, struct next_hop *hop)
{
	struct bpf_fib_lookup fib = {};
	struct hop_entry *c = bpf_map_lookup_elem(&hop_cache, &id);
	__u32 now = (__u32)bpf_jiffies64();
	long rc;

	if (c && c->stamp && c->gen == be->gen && c->in_ifindex == ctx->ingress_ifindex &&
	    now - c->stamp < HOP_CACHE_JIFFIES) {
		if (tot_len > c->mtu)
			return HOP_TOO_BIG;
		__builtin_memcpy(hop->dmac, c->dmac, ETH_ALEN);
		__builtin_memcpy(hop->smac, c->smac, ETH_ALEN);
		hop->ifindex = c->ifindex;
		return HOP_OK;
	}

	fib.family = be->family;
	fib.ifindex = ctx->ingress_ifindex;
	fib.tot_len = tot_len;
	if (be->family == AF_INET) {
		fib.ipv4_src = src[0];
		fib.ipv4_dst = be->addr[0];
	} else {
		__builtin_memcpy(fib.ipv6_src, src, 16);
		__builtin_memcpy(fib.ipv6_dst, be->addr, 16);
	}
	/* An input lookup from the ingress port (not BPF_FIB_LOOKUP_OUTPUT,
	 * which would pin the egress to that port): the route may leave by
	 * any interface, and the caller redirects there. */
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(hop->dmac, fib.dmac, ETH_ALEN);
		__builtin_memcpy(hop->smac, fib.smac, ETH_ALEN);
		hop->ifindex = fib.ifindex;
		if (c) {
			/* On success the kernel reports the route's MTU. */
			__builtin_memcpy(c->dmac, fib.dmac, ETH_ALEN);
			__builtin_memcpy(c->smac, fib.smac, ETH_ALEN);
			c->ifindex = fib.ifindex;
			c->in_ifindex = ctx->ingress_ifindex;
			c->mtu = fib.mtu_result;
			c->gen = be->gen;
			c->stamp = now ? now : 1;
		}
		return HOP_OK;
	}
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return HOP_TOO_BIG;
	if (!(cfg->flags & CONFIG_F_GW_MAC))
		return HOP_NO_ROUTE;
	/* A route without a resolved neighbour (or no route): hand the packet
	 * to the configured gateway, out of the interface it came in on. */
	__builtin_memcpy(hop->dmac, cfg->gw_mac, ETH_ALEN);
	__builtin_memcpy(hop->smac, ours, ETH_ALEN);
	hop->ifindex = ctx->ingress_ifindex;
	return HOP_GATEWAY;
}

/* outer_source fills src with the configured prefix plus hash bits. */
static __always_inline void outer_source(const struct lb_config *cfg, __u8 family, __u32 hash, __be32 *src)
{
	if (family == AF_INET) {
		src[0] = cfg->src4 | (hash & cfg->src4_host);
		return;
	}
#pragma unroll
	for (int i = 0; i < 4; i++)
		src[i] = cfg->src6[i] | (hash & cfg->src6_host[i]);
}

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The least-conn scheduler: a new flow (a TCP SYN, or a UDP packet the
 * table misses) of a VIP with VIP_F_LEAST_CONN goes to the backend with the
 * lowest (active + 1) / weight, active from backend_conns (counts.h).
 * Exact over a pool of up to LC_EXACT_MAX backends (lc_pools), else the
 * better of two choices on the VIP's weighted Maglev ring: the ring's own
 * slot for the flow and a second slot from a rehash (docs/schedulers.md). */
#ifndef FULCRUM_SCHED_H
#define FULCRUM_SCHED_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "types.h"
#include "maps.h"
#include "flowhash.h"
#include "counts.h"
#include "conntrack.h"

/* The largest pool least-conn compares whole: a VIP with more backends
 * of weight above 0 takes the power of two choices. */
#define LC_EXACT_MAX 16

/* The multiplier of the second choice's hash (the golden ratio's). */
#define LC_REHASH 0x9e3779b1

/* lc_pool is lc_pools[vip index]: the backends of weight above 0 that the
 * VIP's ring is built from, when there are at most LC_EXACT_MAX of them;
 * n = 0 when there are more (the ring's two choices decide). The n members
 * are written twice over (be[n + i] = be[i]), so that a scan starting at
 * any member reads n in a row without wrapping. Go writes it before the
 * meta that sets VIP_F_LEAST_CONN; a reader racing a rewrite may mix the
 * old and new lists, each entry of which is a backend of the VIP, checked
 * live by the caller. */
struct lc_pool {
	__u32 n;
	__u32 pad;
	struct {
		__u32 id;
		__u32 weight;
	} be[2 * LC_EXACT_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lc_pool);
	__uint(max_entries, MAX_VIPS);
} lc_pools SEC(".maps");

/* lc_less reports whether (a1 + 1) / w1 < (a2 + 1) / w2, without dividing. */
static __always_inline int lc_less(__u64 a1, __u32 w1, __u64 a2, __u32 w2)
{
	return (a1 + 1) * w2 < (a2 + 1) * w1;
}

/* lc_two returns the lower-cost of the ring's backend id for the flow and
 * the one a second, rehashed slot names. */
static __always_inline __u32 lc_two(struct stat_table *st, const struct vip_meta *vip, __u32 hash, __u32 id)
{
	__u32 id2 = ring_read(vip->ring_offset, ring_slot(rol32(hash, 16) * LC_REHASH, vip->ring_size));
	struct backend *b1, *b2;

	st->count[STAT_SCHED_LC_TWO]++;
	if (id2 == id || id2 == 0xffffffff)
		return id;
	b1 = bpf_map_lookup_elem(&backends, &id);
	b2 = bpf_map_lookup_elem(&backends, &id2);
	if (!b1 || !b2 || !(b2->flags & BACKEND_F_LIVE) || !b2->weight)
		return id;
	if (lc_less(conn_active(id2), b2->weight, conn_active(id), b1->weight))
		return id2;
	return id;
}

/* lc_pick returns the backend of a new flow of a least-conn VIP; id is
 * what the ring says (the choice if nothing better is found). An exact
 * scan starts at a hash-picked member, so that equal costs spread; the
 * first of the lowest cost wins. The scan's body has no branch but the
 * map lookup's (the minimum is kept with masks): a branch per member
 * would double the states the verifier walks, sixteen times over. */
static __always_inline __u32 lc_pick(struct stat_table *st, const struct vip_meta *vip, __u32 hash, __u32 id)
{
	__u32 idx = vip->index, n, i, j, best, bw;
	struct lc_pool *p = bpf_map_lookup_elem(&lc_pools, &idx);
	__u64 ba;

	if (!p)
		return id;
	n = p->n;
	if (n == 0 || n > LC_EXACT_MAX)
		return lc_two(st, vip, hash, id);
	st->count[STAT_SCHED_LC_EXACT]++;
	j = ring_slot(hash, n) & (LC_EXACT_MAX - 1);
	best = p->be[j].id;
	bw = p->be[j].weight;
	ba = conn_active(best);
	for (i = 1; i < LC_EXACT_MAX; i++) {
		__u64 a, mask;
		__u32 c, w;

		if (i >= n)
			break;
		j = (j + 1) & (2 * LC_EXACT_MAX - 1);
		c = p->be[j].id;
		w = p->be[j].weight;
		a = conn_active(c);
		/* All ones if (a + 1) / w < (ba + 1) / bw: the products are
		 * below 2^63 (counts far below 2^47, weights 16-bit). */
		mask = (__u64)((__s64)((a + 1) * bw - (ba + 1) * w) >> 63);
		best = (c & mask) | (best & ~mask);
		bw = (w & mask) | (bw & ~mask);
		ba = (a & mask) | (ba & ~mask);
	}
	return best;
}

/* lc_choose returns the backend of a packet that missed the table: least-
 * conn's choice for a new flow (a TCP SYN, a UDP packet) of a least-conn
 * VIP, else id, the ring's. The ring also decides for a flow that gets no
 * entry (the CPU is over new_flow_limit, which over_flow_limit will tell
 * the same): its later packets take the ring. A SYN whose live entry is
 * still in state syn is a retransmission: it keeps the entry's backend,
 * which may have answered the first. */
static __always_inline __u32 lc_choose(struct stat_table *st, const struct lb_config *cfg, const struct vip_meta *vip,
				       const struct flow *f, const struct ct_ref *ref, const struct ct_value *ct,
				       __u32 now, __u32 hash, __u32 id)
{
	struct flow_guard *g;
	struct backend *be;
	__u32 zero = 0;

	if (!(vip->flags & VIP_F_LEAST_CONN) || !ref->b || (!f->syn && f->proto != IPPROTO_UDP))
		return id;
	if (f->syn && ref->way < CT_WAYS && ct->state == CT_SYN && !ct_expired(ct, vip, now)) {
		be = bpf_map_lookup_elem(&backends, &ct->backend);
		if (be && (be->flags & BACKEND_F_LIVE) && be->gen == ct->backend_gen && be->vip_index == vip->index)
			return ct->backend;
	}
	if (cfg->new_flow_limit && (g = bpf_map_lookup_elem(&flow_guard, &zero)) &&
	    bpf_ktime_get_coarse_ns() - g->window_start < 1000000000ULL && g->count >= cfg->new_flow_limit)
		return id;
	return lc_pick(st, vip, hash, id);
}

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The least-conn scheduler: a new flow (a TCP SYN, or a UDP packet the
 * table misses) of a VIP with VIP_F_LEAST_CONN goes to the backend with the
 * lowest (active + 1) / weight, active from backend_conns (counts.h); which
 * packets ask it is sched_choose's rule (balancer.c), shared with
 * round-robin.
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
 * the one a second, rehashed slot of the ring at ring_offset names. */
static __always_inline __u32 lc_two(struct stat_table *st, __u32 ring_offset, __u32 ring_size, __u32 hash,
				    __u32 id)
{
	__u32 id2 = ring_read(ring_offset, ring_slot(rol32(hash, 16) * LC_REHASH, ring_size));
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

/* lc_pick returns the backend of a new flow of least-conn VIP idx, whose
 * ring is ring_size slots of the arena from ring_offset: the ring's slot
 * for the flow's hash is the choice if nothing better is found, and its
 * 0xffffffff (no backend) is returned as it is. An exact scan starts at a
 * hash-picked member, so that equal costs spread; the first of the lowest
 * cost wins. The scan's body has no branch but the map lookup's (the
 * minimum is kept with masks): a branch per member would double the states
 * the verifier walks, sixteen times over.
 *
 * A global function, not inlined: the verifier checks it once, on its
 * own, instead of once for every state of every path into it, whose
 * product with the rest of balance() (pools, round-robin, response times)
 * was past its million instructions. So it takes scalars only and finds
 * the stats table itself. */
__attribute__((noinline)) __u32 lc_pick(__u32 idx, __u32 ring_offset, __u32 ring_size, __u32 hash)
{
	__u32 n, i, j, best, bw, id, zero = 0;
	struct lc_pool *p;
	struct stat_table *st;
	__u64 ba;

	id = ring_read(ring_offset, ring_slot(hash, ring_size));
	st = bpf_map_lookup_elem(&stats, &zero);
	p = bpf_map_lookup_elem(&lc_pools, &idx);
	if (id == 0xffffffff || !st || !p)
		return id;
	n = p->n;
	if (n == 0 || n > LC_EXACT_MAX)
		return lc_two(st, ring_offset, ring_size, hash, id);
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

#endif

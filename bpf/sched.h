/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The least-conn and least-time schedulers: a new flow (a TCP SYN, or a
 * UDP packet the table misses) of a VIP with VIP_F_LEAST_CONN goes to the
 * backend with the lowest (active + 1) / weight, of one with
 * VIP_F_LEAST_TIME to the lowest (active + 1) x rt / weight; active from
 * backend_conns (counts.h), rt (µs) from backend_cost, which the daemon
 * folds from the response times (rtt.h); which packets ask them is
 * sched_choose's rule (balancer.c), shared with round-robin.
 * Exact over a pool of up to LC_EXACT_MAX backends (lc_pools), else the
 * better of two choices on the VIP's weighted Maglev ring: the ring's own
 * slot for the flow and a second slot from a rehash (docs/schedulers.md).
 * One function (lc_pick) serves both: least-conn is least-time with every
 * rt 1 and no margin. */
#ifndef FULCRUM_SCHED_H
#define FULCRUM_SCHED_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "types.h"
#include "maps.h"
#include "flowhash.h"
#include "counts.h"

/* The largest pool least-conn and least-time compare whole: a VIP with
 * more backends of weight above 0 takes the power of two choices. */
#define LC_EXACT_MAX 16

/* The multiplier of the second choice's hash (the golden ratio's). */
#define LC_REHASH 0x9e3779b1

/* lc_pool is lc_pools[vip index]: the backends of weight above 0 that the
 * VIP's ring is built from, when there are at most LC_EXACT_MAX of them;
 * n = 0 when there are more (the ring's two choices decide). The n members
 * are written twice over (be[n + i] = be[i]), so that a scan starting at
 * any member reads n in a row without wrapping. Go writes it before the
 * meta that sets VIP_F_LEAST_CONN or VIP_F_LEAST_TIME; a reader racing a
 * rewrite may mix the old and new lists, each entry of which is a backend
 * of the VIP, checked live by the caller. */
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

/* least-time's hysteresis: a candidate replaces the best backend so far
 * only if its cost is lower by more than 1/8 (1 >> LT_MARGIN_SHIFT) of the
 * best's, so that backends whose costs differ by less share new flows (by
 * the hash's start) instead of the cheaper taking every one of them until
 * the next fold of the costs. */
#define LT_MARGIN_SHIFT 3

/* The largest load (active + syn + 1) and response time (µs) compared:
 * bigger ones compare as these, so that a product of load, time and a
 * 16-bit weight stays below 2^62 (2^24 x 2^22 x 2^16), whose differences
 * the comparison's sign test reads. 16 Mi connections is past any
 * backend's table share, 4.2 s past any handshake's time. */
#define SCHED_LOAD_MAX ((1ULL << 24) - 1)
#define LT_RT_MAX ((1ULL << 22) - 1)

/* clamp_max returns min(v, max), for v below 2^63, without a branch. */
static __always_inline __u64 clamp_max(__u64 v, __u64 max)
{
	__u64 over = (__u64)((__s64)(max - v) >> 63);

	return (v & ~over) | (max & over);
}

/* sched_load returns backend id's load as the schedulers compare it:
 * active + syn + 1, at most SCHED_LOAD_MAX. */
static __always_inline __u64 sched_load(__u32 id)
{
	return clamp_max(conn_active(id) + 1, SCHED_LOAD_MAX);
}

/* sched_rt returns the response time least-time compares for backend id
 * (µs, at most LT_RT_MAX), 0 if it is not measured; least-conn (lt 0)
 * compares 1 for every backend and reads nothing. */
static __always_inline __u64 sched_rt(__u32 id, __u32 lt)
{
	__u32 *c;

	if (!lt)
		return 1;
	c = bpf_map_lookup_elem(&backend_cost, &id);
	if (!c)
		return 0;
	return clamp_max(*(volatile __u32 *)c, LT_RT_MAX);
}

/* sched_wins returns all ones if a candidate of load l, response time r
 * and weight w beats the best so far (bl, br, bw), else 0: if l x r / w <
 * bl x br / bw, less the margin when hyst is all ones (least-time). A
 * backend not measured (r 0) is compared on its load alone, and so is the
 * other side then: both times read as 1 (docs/schedulers.md, "not
 * measured"). No branch, so that the scan below stays one path. */
static __always_inline __u64 sched_wins(__u64 l, __u64 r, __u64 w, __u64 bl, __u64 br, __u64 bw, __u64 hyst)
{
	__u64 unmeasured = (__u64)((__s64)(r - 1) >> 63) | (__u64)((__s64)(br - 1) >> 63);
	__u64 x, bx;

	r = (r & ~unmeasured) | (1 & unmeasured);
	br = (br & ~unmeasured) | (1 & unmeasured);
	x = l * r * bw;
	bx = bl * br * w;
	bx -= (bx >> LT_MARGIN_SHIFT) & hyst;
	return (__u64)((__s64)(x - bx) >> 63);
}

/* sched_counted counts a decision of VIP idx: the method's global counter
 * (least-conn's or least-time's, lt 0 or 1) and the VIP's own, the picks
 * of its rr_cursors slot on this CPU, which only a round-robin VIP
 * otherwise uses (round-robin counts its decisions there too). */
static __always_inline void sched_counted(struct stat_table *st, __u32 idx, __u32 lt, __u32 stat_lc)
{
	struct rr_cursor *c = bpf_map_lookup_elem(&rr_cursors, &idx);

	/* STAT_SCHED_LT_* are least-time's STAT_SCHED_LC_*, in order. */
	st->count[stat_lc + lt * (STAT_SCHED_LT_EXACT - STAT_SCHED_LC_EXACT)]++;
	if (c)
		c->picks++;
}

/* lc_two returns the better of the ring's backend id for the flow and the
 * one a second, rehashed slot of the ring at ring_offset names; the ring's
 * own on a tie, and for least-time unless the second is better by the
 * margin. */
static __always_inline __u32 lc_two(__u32 ring_offset, __u32 ring_size, __u32 hash, __u32 id, __u32 lt,
				    __u64 hyst)
{
	__u32 id2 = ring_read(ring_offset, ring_slot(rol32(hash, 16) * LC_REHASH, ring_size));
	struct backend *b1, *b2;

	if (id2 == id || id2 == 0xffffffff)
		return id;
	b1 = bpf_map_lookup_elem(&backends, &id);
	b2 = bpf_map_lookup_elem(&backends, &id2);
	if (!b1 || !b2 || !(b2->flags & BACKEND_F_LIVE) || !b2->weight)
		return id;
	if (sched_wins(sched_load(id2), sched_rt(id2, lt), b2->weight, sched_load(id), sched_rt(id, lt), b1->weight,
		       hyst))
		return id2;
	return id;
}

/* lc_pick returns the backend of a new flow of least-conn (lt 0) or
 * least-time (lt 1) VIP idx, whose ring is ring_size slots of the arena
 * from ring_offset: the ring's slot for the flow's hash is the choice if
 * nothing better is found, and its 0xffffffff (no backend) is returned as
 * it is. An exact scan starts at a hash-picked member, so that equal costs
 * (and, for least-time, costs within the margin) spread; a later member
 * replaces the best so far only if it beats it (sched_wins). The scan's
 * body has no branch but the map lookups' and least-time's test (the
 * minimum is kept with masks): a branch per member on the comparison
 * would double the states the verifier walks, sixteen times over.
 *
 * A global function, not inlined: the verifier checks it once, on its
 * own, instead of once for every state of every path into it, whose
 * product with the rest of balance() (pools, round-robin, response times)
 * was past its million instructions. So it takes scalars only and finds
 * the stats table itself. */
__attribute__((noinline)) __u32 lc_pick(__u32 idx, __u32 ring_offset, __u32 ring_size, __u32 hash, __u32 lt)
{
	__u32 n, i, j, best, id, zero = 0;
	__u64 hyst, bl, br, bw;
	struct lc_pool *p;
	struct stat_table *st;

	lt &= 1;
	hyst = -(__u64)lt;
	id = ring_read(ring_offset, ring_slot(hash, ring_size));
	st = bpf_map_lookup_elem(&stats, &zero);
	p = bpf_map_lookup_elem(&lc_pools, &idx);
	if (id == 0xffffffff || !st || !p)
		return id;
	n = p->n;
	if (n == 0 || n > LC_EXACT_MAX) {
		sched_counted(st, idx, lt, STAT_SCHED_LC_TWO);
		return lc_two(ring_offset, ring_size, hash, id, lt, hyst);
	}
	sched_counted(st, idx, lt, STAT_SCHED_LC_EXACT);
	j = ring_slot(hash, n) & (LC_EXACT_MAX - 1);
	best = p->be[j].id;
	bw = p->be[j].weight;
	bl = sched_load(best);
	br = sched_rt(best, lt);
	for (i = 1; i < LC_EXACT_MAX; i++) {
		__u64 l, r, w, mask;
		__u32 c;

		if (i >= n)
			break;
		j = (j + 1) & (2 * LC_EXACT_MAX - 1);
		c = p->be[j].id;
		w = p->be[j].weight;
		l = sched_load(c);
		r = sched_rt(c, lt);
		mask = sched_wins(l, r, w, bl, br, bw, hyst);
		best = (c & mask) | (best & ~mask);
		bw = (w & mask) | (bw & ~mask);
		bl = (l & mask) | (bl & ~mask);
		br = (r & mask) | (br & ~mask);
	}
	return best;
}

#endif

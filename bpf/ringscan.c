// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* fulcrum_ring_scan reads a VIP's ring the way the balancer does (the VIP
 * key's meta, then ring_read at its offset), slowed down: after its one
 * lookup of the meta it reads every slot of the ring, as many times as it
 * is asked, as a reader delayed inside its RCU read-side section would,
 * and reads the meta's VIP index before and after. It is for
 * TestRingFlipHammer and TestVIPMetaHammer, which flip rings whose slots
 * all name one backend: a ring read whole
 * must show one backend in every slot, and a ring written into an extent a
 * reader may still read (a reuse before the grace period) shows two.
 *
 * The frame starts with a struct scan_args; the program writes a struct
 * scan_result over it and passes. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "types.h"
#include "maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* scan_result is what the scan writes over the frame. */
struct scan_args {
	struct vip_key_v4 key;
	__u32 passes; /* reads of the whole ring */
};

struct scan_result {
	__u32 first;  /* slot 0's backend id */
	__u32 mixed;  /* slot reads that differ from slot 0 */
	__u32 size;   /* the ring's size */
	__u32 found;  /* 1 if the VIP was found */
	/* The meta's VIP index, read before the scan and again after it,
	 * through the pointer the lookup gave: a meta a reader holds must not
	 * turn into another VIP's (TestVIPMetaHammer). */
	__u32 index_before;
	__u32 index_after;
};

struct scan {
	__u32 offset;
	__u32 size;
	__u32 first;
	__u32 mixed;
};

static long scan_slot(__u64 i, void *ctx)
{
	struct scan *s = ctx;

	if (s->size == 0)
		return 1;
	if (ring_read(s->offset, (__u32)i % s->size) != s->first)
		s->mixed++;
	return 0;
}

SEC("xdp")
int fulcrum_ring_scan(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct scan_result *r = data;
	struct scan_args a;
	const volatile struct vip_meta *vip;
	struct scan s = {};

	if (data + sizeof(a) > end || data + sizeof(*r) > end)
		return XDP_ABORTED;
	__builtin_memcpy(&a, data, sizeof(a));
	vip = vip_find(&vips_v4, &a.key);
	if (!vip) {
		r->found = 0;
		return XDP_PASS;
	}
	r->index_before = vip->index;
	s.offset = vip->ring_offset;
	s.size = vip->ring_size;
	s.first = ring_read(s.offset, 0);
	bpf_loop((__u64)s.size * a.passes, scan_slot, &s, 0);
	r->index_after = vip->index;
	r->first = s.first;
	r->mixed = s.mixed;
	r->size = s.size;
	r->found = 1;
	return XDP_PASS;
}


/* pool_scan_args: fulcrum_pool_scan's frame. */
struct pool_scan_args {
	__u32 pool;   /* the pool id */
	__u32 passes; /* reads of the whole ring */
};

/* pool_scan_result is what fulcrum_pool_scan writes over the frame. */
struct pool_scan_result {
	__u32 first; /* slot 0's backend id */
	__u32 mixed; /* slot reads that differ from slot 0 */
	/* The pool's word, loaded before the scan and again after it through
	 * the pointer the lookup gave: it must stay the pool's
	 * (TestPoolRingHammer). 0 if the lookup failed. */
	__u64 word_before;
	__u64 word_after;
};

/* fulcrum_pool_scan reads a pool's ring as pick does (one load of its
 * pool_rings word), slowed down like fulcrum_ring_scan. */
SEC("xdp")
int fulcrum_pool_scan(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct pool_scan_result *r = data;
	struct pool_scan_args a;
	__u64 *pool, word;
	struct scan s = {};

	if (data + sizeof(a) > end || data + sizeof(*r) > end)
		return XDP_ABORTED;
	__builtin_memcpy(&a, data, sizeof(a));
	pool = bpf_map_lookup_elem(&pool_rings, &a.pool);
	if (!pool) {
		r->word_before = r->word_after = 0;
		return XDP_PASS;
	}
	word = *(volatile __u64 *)pool;
	s.offset = (__u32)word;
	s.size = (word >> POOL_RING_SIZE_SHIFT) & POOL_RING_SIZE_MASK;
	s.first = ring_read(s.offset, 0);
	bpf_loop((__u64)s.size * a.passes, scan_slot, &s, 0);
	r->word_before = word;
	r->word_after = *(volatile __u64 *)pool;
	r->first = s.first;
	r->mixed = s.mixed;
	return XDP_PASS;
}

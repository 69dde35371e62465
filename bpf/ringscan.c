// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* fulcrum_ring_scan reads a VIP's ring the way the balancer does (the VIP
 * key's meta, then ring_read at its offset), slowed down: after its one
 * lookup of the meta it reads every slot of the ring, as many times as it
 * is asked, as a reader delayed inside its RCU read-side section would. It is for TestRingFlipHammer,
 * which flips rings whose slots all name one backend: a ring read whole
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
	struct vip_meta *vip;
	struct scan s = {};

	if (data + sizeof(a) > end || data + sizeof(*r) > end)
		return XDP_ABORTED;
	__builtin_memcpy(&a, data, sizeof(a));
	vip = vip_find_v4(&a.key);
	if (!vip) {
		r->found = 0;
		return XDP_PASS;
	}
	s.offset = vip->ring_offset;
	s.size = vip->ring_size;
	s.first = ring_read(s.offset, 0);
	bpf_loop((__u64)s.size * a.passes, scan_slot, &s, 0);
	r->first = s.first;
	r->mixed = s.mixed;
	r->size = s.size;
	r->found = 1;
	return XDP_PASS;
}

/* fulcrum_meta_hold holds a VIP's meta the way the balancer does (the one
 * lookup of the VIP's key, then reads through what it returned), slowed
 * down: it reads the meta's index, ring offset and size, spins inside its
 * RCU read-side section, then reads them again. It is for
 * TestVIPMetaHammer: a meta a reader still holds must not turn into
 * another VIP's while it holds it (a reuse before the grace period), so
 * the index read after the spin must be the one read before it. */
struct hold_args {
	struct vip_key_v4 key;
	__u32 spins; /* bpf_loop iterations between the two reads */
};

struct hold_result {
	__u32 found; /* 1 if the VIP was found */
	__u32 index_before;
	__u32 index_after;
	__u32 offset_before;
	__u32 offset_after;
	__u32 size_before;
	__u32 size_after;
};

static long spin(__u64 i, void *ctx)
{
	(*(__u64 *)ctx) += i;
	return 0;
}

SEC("xdp")
int fulcrum_meta_hold(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct hold_result *r = data;
	struct hold_args a;
	const volatile struct vip_meta *vip;
	__u64 sum = 0;

	if (data + sizeof(a) > end || data + sizeof(*r) > end)
		return XDP_ABORTED;
	__builtin_memcpy(&a, data, sizeof(a));
	vip = vip_find_v4(&a.key);
	if (!vip) {
		r->found = 0;
		return XDP_PASS;
	}
	r->index_before = vip->index;
	r->offset_before = vip->ring_offset;
	r->size_before = vip->ring_size;
	bpf_loop(a.spins, spin, &sum, 0);
	r->index_after = vip->index;
	r->offset_after = vip->ring_offset;
	r->size_after = vip->ring_size;
	r->found = 1 + (sum & 0); /* sum kept: the loop is not dead code */
	return XDP_PASS;
}

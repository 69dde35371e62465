/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The connection table: the key of a flow, the client-side TCP state
 * machine, idle timeouts, and the lookup and insert of the fast path. */
#ifndef FULCRUM_CONNTRACK_H
#define FULCRUM_CONNTRACK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "types.h"
#include "maps.h"
#include "parse.h"
#include "flowhash.h"
#include "counts.h"

/* The kernel's tick rate, from its configuration (loaded with the program):
 * connection entries are stamped in jiffies, and fulcrum_clock tells Go the
 * rate, to convert the configured timeouts. */
extern const unsigned int CONFIG_HZ __kconfig;

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_RST 0x04

/* The fields of a way's two words (types.h ct_bucket). */
#define CT_TAG_LO_MASK 0x3fffffffULL
#define CT_BACKEND_SHIFT 30
#define CT_BACKEND_MASK 0x3ffffULL
#define CT_GEN_SHIFT 48
#define CT_STATE_SHIFT 32
#define CT_TAG_HI_SHIFT 34
#define CT_TAG_HI_MASK (~0ULL << CT_TAG_HI_SHIFT)

/* The seed of the tag hash, unrelated to FLOW_HASH_SEED so that the tag and
 * the bucket are independent hashes. internal/datapath/conntrack.go
 * computes the same. */
#define CT_TAG_SEED 0x5bd1e995

_Static_assert(MAX_BACKENDS <= (1 << 18), "a way holds an 18-bit backend id");

/* ct_buckets is the number of buckets of each table. Go sets it to the
 * tables' size when it loads the program. */
const volatile __u32 ct_buckets = CT_ENTRIES / CT_WAYS;

/* ct_ref is where a flow's entry is, or goes: its bucket, the way holding
 * the flow (CT_WAYS if none), and the flow's tag halves as the way's words
 * hold them. */
struct ct_ref {
	struct ct_bucket *b;
	__u32 bucket;
	__u32 way;
	__u64 lo; /* in ident */
	__u64 hi; /* in meta, shifted into place */
};

/* ct_now is the clock of connection entries: bpf_jiffies64 (the verifier
 * inlines it on x86-64), truncated to 32 bits; ages are differences modulo
 * 2^32, good for 49 days at HZ=1000, far beyond any timeout. */
static __always_inline __u32 ct_now(void)
{
	return (__u32)bpf_jiffies64();
}

/* ct_tag_hash is a second hash of the whole tuple (every word of an IPv6
 * address, where the flow hash folds them): with the flow hash's bits that
 * do not pick the bucket, it makes a flow's 60-bit tag. */
static __always_inline __u32 ct_tag_hash(const struct flow *f)
{
	__u32 seed = CT_TAG_SEED + f->proto;

	if (f->family == 4)
		return jhash3(f->src.v4, f->dst.v4, f->ports, seed);
	seed = jhash3(f->src.v6[0], f->src.v6[1], f->src.v6[2], seed);
	seed = jhash3(f->src.v6[3], f->dst.v6[0], f->dst.v6[1], seed);
	return jhash3(f->dst.v6[2], f->dst.v6[3], f->ports, seed);
}

/* ct_decode reads way w of b into v; it returns 0 for an empty way. Each
 * word is read once (READ_ONCE): a CPU may be rewriting the way. */
static __always_inline int ct_decode(const struct ct_bucket *b, __u32 w, struct ct_value *v)
{
	__u64 id = *(volatile const __u64 *)&b->ident[w];
	__u64 m = *(volatile const __u64 *)&b->meta[w];

	if (!id)
		return 0;
	v->backend = (id >> CT_BACKEND_SHIFT) & CT_BACKEND_MASK;
	v->backend_gen = id >> CT_GEN_SHIFT;
	v->state = (m >> CT_STATE_SHIFT) & 3;
	v->last_seen = (__u32)m;
	return 1;
}

/* ct_find locates the flow (5-tuple hash h5) in its family's table. On a
 * hit it returns 1 with the entry in *v: a way whose two tag halves are the
 * flow's, read once each, so a way torn by a concurrent writer is a miss. */
static __always_inline int ct_find(const struct flow *f, __u32 h5, struct ct_ref *ref, struct ct_value *v)
{
	__u32 h2 = ct_tag_hash(f), w;
	struct ct_bucket *b;

	ref->bucket = ((__u64)h5 * ct_buckets) >> 32;
	ref->lo = h2 & CT_TAG_LO_MASK;
	ref->hi = (__u64)((h2 >> 30) | ((h5 & 0x0fffffff) << 2)) << CT_TAG_HI_SHIFT;
	ref->way = CT_WAYS;
	if (f->family == 4) {
		b = bpf_map_lookup_elem(&ct_v4, &ref->bucket);
		call_site_end("ct_v4 lookup");
	} else {
		b = bpf_map_lookup_elem(&ct_v6, &ref->bucket);
		call_site_end("ct_v6 lookup");
	}
	ref->b = b;
	if (!b)
		return 0;
#pragma unroll
	for (w = 0; w < CT_WAYS; w++) {
		__u64 id = *(volatile __u64 *)&b->ident[w];
		__u64 m = *(volatile __u64 *)&b->meta[w];

		if (id && (id & CT_TAG_LO_MASK) == ref->lo && (m & CT_TAG_HI_MASK) == ref->hi) {
			ref->way = w;
			v->backend = (id >> CT_BACKEND_SHIFT) & CT_BACKEND_MASK;
			v->backend_gen = id >> CT_GEN_SHIFT;
			v->state = (m >> CT_STATE_SHIFT) & 3;
			v->last_seen = (__u32)m;
			return 1;
		}
	}
	return 0;
}

/* ct_write stores entry v of the flow in way w of its bucket, and the
 * flow's tuple in ct_keys_* for Go. meta goes first: a reader between the
 * two stores sees the old ident with the new tag half, a miss. */
static __always_inline void ct_write(const struct flow *f, const struct ct_ref *ref, __u32 w,
				     const struct ct_value *v)
{
	__u32 slot = ref->bucket * CT_WAYS + (w & (CT_WAYS - 1));

	*(volatile __u64 *)&ref->b->meta[w & (CT_WAYS - 1)] =
		v->last_seen | ((__u64)(v->state & 3) << CT_STATE_SHIFT) | ref->hi;
	*(volatile __u64 *)&ref->b->ident[w & (CT_WAYS - 1)] =
		ref->lo | ((__u64)(v->backend & CT_BACKEND_MASK) << CT_BACKEND_SHIFT) |
		((__u64)v->backend_gen << CT_GEN_SHIFT);
	if (f->family == 4) {
		struct ct_key_v4 *k = bpf_map_lookup_elem(&ct_keys_v4, &slot);

		if (k) {
			k->src = f->src.v4;
			k->dst = f->dst.v4;
			*(__u32 *)&k->sport = f->ports;
			k->proto = f->proto;
		}
		call_site_end("ct_keys_v4");
	} else {
		struct ct_key_v6 *k = bpf_map_lookup_elem(&ct_keys_v6, &slot);

		if (k) {
			__builtin_memcpy(k->src, f->src.v6, 16);
			__builtin_memcpy(k->dst, f->dst.v6, 16);
			*(__u32 *)&k->sport = f->ports;
			k->proto = f->proto;
		}
		call_site_end("ct_keys_v6");
	}
}

/* ct_state_after returns the state of an entry in state s after a client
 * segment with flags (a SYN never gets here: it makes a new entry). States
 * only move forward: a late ACK after a FIN or an RST does not revive the
 * connection. */
static __always_inline __u8 ct_state_after(__u8 s, __u8 flags)
{
	if (flags & TCP_FLAG_RST)
		return CT_CLOSED;
	if ((flags & TCP_FLAG_FIN) && s != CT_CLOSED)
		return CT_FIN;
	if (s == CT_SYN)
		return CT_ESTABLISHED;
	return s;
}

/* ct_state_new returns the state of a new entry for a packet: what the
 * first segment seen says (a table that missed the SYN, or a flow whose
 * entry expired, starts wherever the connection is). */
static __always_inline __u8 ct_state_new(const struct flow *f)
{
	if (f->syn)
		return CT_SYN;
	return ct_state_after(CT_ESTABLISHED, f->tcp_flags);
}

/* ct_expired reports whether an entry has been idle longer than its VIP's
 * timeout for its state: then it is a miss, and the packet takes the ring.
 * The difference is signed: another CPU may have touched the entry after
 * the jiffy this packet read (last_seen one ahead of now), and that entry
 * is fresh, not 49 days old. */
static __always_inline int ct_expired(const struct ct_value *ct, const struct vip_meta *vip, __u32 now)
{
	return (__s32)(now - ct->last_seen) > (__s32)vip->ct_timeout[ct->state & 3];
}

/* ct_touch records a packet of a live entry (way ref->way, read as *v):
 * the new state and the time, written only when one of them changed (no
 * store per packet), and the entry's move between the active and inactive
 * counts. Only meta changes: the tag half it carries stays. */
static __always_inline void ct_touch(const struct ct_ref *ref, const struct ct_value *v,
				     const struct flow *f, __u32 now)
{
	__u8 s = ct_state_after(v->state, f->tcp_flags);

	if (v->state != s)
		conn_count_move(v->backend, v->state, s);
	if (v->last_seen != now || v->state != s)
		*(volatile __u64 *)&ref->b->meta[ref->way & (CT_WAYS - 1)] =
			now | ((__u64)s << CT_STATE_SHIFT) | ref->hi;
}

#endif

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* The Fulcrum XDP balancer. Per packet, for either IP family: parse,
 * connection table, VIP, Maglev ring, forward by the VIP's mode, count.
 * Anything that is not for a VIP goes to the host stack untouched
 * (XDP_PASS), most of it at once by the destination prefilter. One header
 * per concern: parse.h, hostfilter.h, flowhash.h, conntrack.h, forward.h
 * (with encap.h), stats.h. */

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
#include "hostfilter.h"
#include "stats.h"
#include "conntrack.h"
#include "ctevents.h"
#include "rtt.h"
#include "forward.h"
#include "sched.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define UNASSIGNED 0xffffffff

/* Anchor the enums in BTF so bpf2go exports them to Go. */
const enum fulcrum_stat _stat __attribute__((unused));
const enum fulcrum_mode _mode __attribute__((unused));
const enum fulcrum_vip_flags _vip_flags __attribute__((unused));
const enum fulcrum_backend_flags _backend_flags __attribute__((unused));
const enum fulcrum_config_flags _config_flags __attribute__((unused));
const enum fulcrum_ct_state _ct_state __attribute__((unused));
const enum fulcrum_ct_timeout _ct_timeout __attribute__((unused));
const enum fulcrum_src_kind _src_kind __attribute__((unused));
const enum fulcrum_pool_flags _pool_flags __attribute__((unused));
/* ct_value is the decoded form of a way; Go decodes into the same type. */
const struct ct_value _ct_value __attribute__((unused));
/* ct_event is what the ct_events ring buffer carries; Go decodes it. */
const struct ct_event _ct_event __attribute__((unused));
const struct conn_count _conn_count __attribute__((unused));
const struct lc_pool _lc_pool __attribute__((unused));

/* unparseable decides what happens to a fragment or bad packet: the policy
 * of its destination address when that address has a VIP, otherwise the
 * host stack gets it. */
static __always_inline int unparseable(struct stat_table *st, const struct flow *f, enum parse_result r)
{
	__u32 *policy;

	if (f->family == 4) {
		policy = bpf_map_lookup_elem(&vip_addrs_v4, &f->dst.v4);
		call_site_end("vip_addrs_v4");
	} else {
		policy = bpf_map_lookup_elem(&vip_addrs_v6, f->dst.v6);
		call_site_end("vip_addrs_v6");
	}
	if (!policy)
		return verdict(st, STAT_PASS_NO_VIP, XDP_PASS);
	if (*policy & VIP_F_PASS_UNPARSEABLE)
		return verdict(st, STAT_PASS_UNPARSEABLE, XDP_PASS);
	if (r == PARSE_FRAGMENT)
		return verdict(st, STAT_DROP_FRAGMENT, XDP_DROP);
	return verdict(st, STAT_DROP_MALFORMED, XDP_DROP);
}

/* vip_lookup returns the flow's VIP: (address, port, protocol), else the
 * address's every-port VIP, else 0. */
static __always_inline struct vip_meta *vip_lookup(const struct flow *f)
{
	__be16 dport = f->ports >> 16; /* as loaded: source port low */
	struct vip_meta *vip;

	if (f->family == 4) {
		struct vip_key_v4 k = { .addr = f->dst.v4, .port = dport, .proto = f->proto };

		vip = vip_find(&vips_v4, &k);
		if (!vip) {
			k.port = 0;
			vip = vip_find(&vips_v4, &k);
		}
		return vip;
	}
	struct vip_key_v6 k = { .port = dport, .proto = f->proto };

	__builtin_memcpy(k.addr, f->dst.v6, 16);
	vip = vip_find(&vips_v6, &k);
	if (!vip) {
		k.port = 0;
		vip = vip_find(&vips_v6, &k);
	}
	return vip;
}

/* src_lookup returns the VIP's src_prefixes entry of kind that holds the
 * flow's client, or 0. */
static __always_inline struct src_prefix_value *src_lookup(const struct vip_meta *vip, const struct flow *f, __u8 kind)
{
	struct src_prefix_key k = {
		.prefixlen = SRC_PREFIX_HEAD_BITS + 128,
		.vip_index = vip->index,
		.kind = kind,
	};

	if (f->family == 4) {
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		__builtin_memcpy(&k.addr[12], &f->src.v4, 4);
	} else {
		__builtin_memcpy(k.addr, f->src.v6, 16);
	}
	return bpf_map_lookup_elem(&src_prefixes, &k);
}

/* source_refused reports whether the VIP has source ranges and the flow's
 * client is in none of them. */
static __always_inline int source_refused(const struct vip_meta *vip, const struct flow *f)
{
	if (!(vip->flags & VIP_F_SOURCE_RANGES))
		return 0;
	return !src_lookup(vip, f, SRC_KIND_ALLOW);
}

/* flow_hash_of returns the hash of the flow's 5-tuple, or of its source
 * address and protocol only (source-hash VIPs). */
static __always_inline __u32 flow_hash_of(const struct flow *f, int source_only)
{
	__u32 src = f->family == 4 ? f->src.v4 : fold6(f->src.v6);
	__u32 dst;

	if (source_only)
		return flow_hash(src, 0, 0, f->proto);
	dst = f->family == 4 ? f->dst.v4 : fold6(f->dst.v6);
	return flow_hash(src, dst, f->ports, f->proto);
}

#define POOL_DOWN 0xfffffffe

/* pick returns the ring's backend for hash, or UNASSIGNED: slot
 * ring_slot(hash, M) of the VIP's extent of the ring arena or, for a
 * client in one of the VIP's source-prefix pools, of the pool's. A pool
 * with no live backend has Go's verdict in its flags: the VIP's ring, or
 * POOL_DOWN (a drop). The pool depends on the client address only, so a
 * table miss mid-flow finds the ring its SYN found. */
static __always_inline __u32 pick(const struct vip_meta *vip, const struct flow *f, __u32 hash,
				  struct stat_table *st)
{
	__u32 off = vip->ring_offset, size = vip->ring_size;
	struct src_prefix_value *in;
	__u64 *pool;

	if ((vip->flags & VIP_F_POOLS) && (in = src_lookup(vip, f, SRC_KIND_POOL)) &&
	    (pool = bpf_map_lookup_elem(&pool_rings, &in->pool))) {
		/* One load: Go rewrites the word with one 8-byte store. */
		__u64 word = *(volatile __u64 *)pool;
		__u32 flags = word >> POOL_RING_FLAGS_SHIFT;

		if (!(flags & POOL_F_PRESENT)) {
			/* No pool (a prefix outliving its pool by a moment):
			 * the VIP's ring. */
		} else if (flags & POOL_F_DROP) {
			return POOL_DOWN;
		} else if (flags & POOL_F_FALLBACK_VIP) {
			st->count[STAT_POOL_FALLBACK]++;
		} else {
			off = (__u32)word;
			size = (word >> POOL_RING_SIZE_SHIFT) & POOL_RING_SIZE_MASK;
		}
	}
	return ring_read(off, ring_slot(hash, size));
}

/* live_backend returns backend id if it may take packets. */
static __always_inline const struct backend *live_backend(__u32 id)
{
	struct backend *be = bpf_map_lookup_elem(&backends, &id);

	if (!be || !(be->flags & BACKEND_F_LIVE))
		return 0;
	return be;
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

/* rr_next returns the next backend of a round-robin VIP's weighted
 * sequence on this CPU, counted, or UNASSIGNED (the ring decides) when the
 * VIP's sequence is empty. */
static __always_inline __u32 rr_next(const struct vip_meta *vip, struct stat_table *st)
{
	struct rr_cursor *c;
	__u32 idx = vip->index, pos;

	c = bpf_map_lookup_elem(&rr_cursors, &idx);
	if (!c || !vip->rr_len)
		return UNASSIGNED;
	/* A cursor past the end (the sequence got shorter) starts over. */
	pos = c->pos < vip->rr_len ? c->pos : 0;
	c->pos = pos + 1;
	c->picks++;
	st->count[STAT_SCHED_RR]++;
	return ring_read(vip->rr_offset, pos);
}

/* sched_choose returns the backend a round-robin, least-conn or
 * least-time VIP's scheduler gives a packet that missed the table, or UNASSIGNED when the
 * ring decides. The rule is the two schedulers' own: the ring decides for
 * a TCP segment without SYN (not a flow's first: its entry was lost, and
 * the ring is what every node and every restart agrees on), and for a new
 * flow that gets no entry (*guard: the CPU is over new_flow_limit; its
 * later packets would take the ring, so its first does too). A SYN whose
 * entry is still in state syn is a retransmission: it keeps the entry's
 * backend, which may have answered the first. Otherwise round-robin's next
 * backend (rr_next), or least-conn's or least-time's choice (lc_pick in
 * sched.h), with the ring's slot for the flow as its first candidate. A VIP with pools never
 * gets here (balance: it is Maglev on its pool's ring). */
static __always_inline __u32 sched_choose(const struct vip_meta *vip, const struct flow *f,
					  const struct ct_ref *ref, const struct ct_value *ct, __u32 now,
					  __u32 hash, const struct lb_config *cfg, struct stat_table *st,
					  int *guard)
{
	const struct backend *be;

	if (!(vip->flags & (VIP_F_ROUND_ROBIN | VIP_F_LEAST_CONN | VIP_F_LEAST_TIME)) || !ref->b ||
	    (!f->syn && f->proto != IPPROTO_UDP))
		return UNASSIGNED;
	if (f->syn && ref->way < CT_WAYS && ct->state == CT_SYN && !ct_expired(ct, vip, now)) {
		be = live_backend(ct->backend);
		if (be && be->gen == ct->backend_gen && be->vip_index == vip->index)
			return ct->backend;
	}
	*guard = over_flow_limit(cfg);
	if (*guard)
		return UNASSIGNED;
	if (vip->flags & VIP_F_ROUND_ROBIN)
		return rr_next(vip, st);
	return lc_pick(vip->index, vip->ring_offset, vip->ring_size, hash, !!(vip->flags & VIP_F_LEAST_TIME));
}

/* ct_wanted reports whether some VIP of the flow's protocol uses the
 * connection table: if none does, the lookup is skipped. */
static __always_inline int ct_wanted(const struct lb_config *cfg, __u8 proto)
{
	if (proto == IPPROTO_TCP)
		return cfg->flags & CONFIG_F_CT_TCP;
	return cfg->flags & CONFIG_F_CT_UDP;
}

/* ct_vip returns the VIP of a connection entry if the entry still decides
 * the flow's backend: its backend is live with the entry's generation, its
 * VIP is live and tracks connections, and it has not been idle past its
 * VIP's timeout for its state. Otherwise *event says why not: STAT_CT_STALE
 * for a removed backend or VIP, STAT_CT_EXPIRED for an idle entry. */
static __always_inline struct vip_meta *ct_vip(const struct ct_value *ct, __u32 now,
					       const struct backend **be, enum fulcrum_stat *event)
{
	struct vip_meta *vip;
	__u32 idx;

	*event = STAT_CT_STALE;
	*be = live_backend(ct->backend);
	if (!*be || (*be)->gen != ct->backend_gen)
		return 0;
	idx = (*be)->vip_index;
	vip = bpf_map_lookup_elem(&vip_state, &idx);
	if (!vip || vip->gen == 0 || (vip->flags & VIP_F_NO_CONNTRACK))
		return 0;
	if (ct_expired(ct, vip, now)) {
		*event = STAT_CT_EXPIRED;
		return 0;
	}
	return vip;
}

/* ct_victim returns the way of bucket b a new entry takes: an empty way,
 * else one whose entry is stale or expired (ct_vip refuses it), else the
 * least recently seen, an eviction, counted, whose entry it leaves in
 * *evicted (else evicted->backend is 0xffffffff). */
static __always_inline __u32 ct_victim(const struct ct_bucket *b, __u32 now, struct stat_table *st,
				       struct ct_value *evicted)
{
	const struct backend *be;
	enum fulcrum_stat event;
	struct ct_value v;
	__u32 w, oldest = 0, age = 0;

	evicted->backend = 0xffffffff;

#pragma unroll
	for (w = 0; w < CT_WAYS; w++)
		if (!b->ident[w])
			return w;
	/* A loop, not unrolled: four copies of ct_vip's checks would add
	 * some 600 instructions for a path only new flows in full buckets
	 * take. */
#pragma clang loop unroll(disable)
	for (w = 0; w < CT_WAYS; w++) {
		if (!ct_decode(b, w, &v) || !ct_vip(&v, now, &be, &event)) {
			evicted->backend = 0xffffffff; /* an earlier way's entry stays */
			return w;
		}
		if (now - v.last_seen >= age) {
			age = now - v.last_seen;
			oldest = w;
			*evicted = v;
		}
	}
	st->count[STAT_CT_EVICTED]++;
	return oldest;
}

/* ct_insert writes the flow's entry: in its own way if the bucket has one
 * (a SYN on a known tuple, a stale or expired entry), else in a victim,
 * and counts it (counts.h): +1 for it, -1 for the entry it overwrites if
 * that one was live (an expired one was taken off by the walk, or will
 * be).
 * ref is ct_find's: without it (no VIP of the flow's protocol tracks
 * connections, as Go's config flags say, so no packet would read the
 * entry) nothing is written. */
static __always_inline void ct_insert(const struct flow *f, struct ct_ref *ref,
				      const struct ct_value *v, __u32 now, struct stat_table *st)
{
	if (!ref->b)
		return;
	const struct backend *be;
	enum fulcrum_stat event;
	struct ct_value old;

	if (ref->way >= CT_WAYS) {
		ref->way = ct_victim(ref->b, now, st, &old);
		if (old.backend != 0xffffffff)
			conn_count_add(old.backend, old.state, -1);
	} else if (ct_decode(ref->b, ref->way & (CT_WAYS - 1), &old) && ct_vip(&old, now, &be, &event)) {
		conn_count_add(old.backend, old.state, -1);
	}
	ct_write(f, ref, ref->way, v);
	conn_count_add(v->backend, v->state, 1);
}

/* balance is the whole pipeline for a parsed packet of either family. The
 * destination prefilter comes first: a packet to an address without a VIP
 * or policy (the host's own traffic) is passed before the table. Then the
 * connection table before the VIP: an established flow costs the flow
 * hash, one bucket (a cache line, no helper call) and array lookups. The
 * VIP lookup first would keep traffic to the host out of the table too, but
 * cost every VIP packet a hash-map lookup; docs/datapath.md has the
 * figures. */
static __always_inline int balance(struct xdp_md *ctx, struct stat_table *st,
				   const struct lb_config *cfg, struct flow *f, enum parse_result r)
{
	enum fulcrum_stat event = STAT_CT_MISS;
	const struct backend *be;
	struct vip_meta *vip;
	struct ct_ref ref = {};
	/* Zeroed: sched_choose reads it after a SYN's lookup, found or not,
	 * and clang spills an unset one from whatever register, which the
	 * verifier refuses. */
	struct ct_value ct = {};
	__u32 id, hash = 0, h5 = 0, now;
	int tuple_hash = 0; /* hash is the 5-tuple hash already */
	int have_h5 = 0;
	int guard = -1; /* over_flow_limit's answer, once sched_choose asked */

	switch (r) {
	case PARSE_NOT_IP:
		return verdict(st, STAT_PASS_NOT_IP, XDP_PASS);
	case PARSE_NOT_L4:
		return verdict(st, STAT_PASS_NOT_L4, XDP_PASS);
	default:
		break;
	}
	/* Every other result has the destination address. Without its bit
	 * the address has no VIP and no policy: the verdict the rest would
	 * reach (pass_no_vip, also for a fragment or a bad header), without
	 * the table. */
	if (!may_be_vip(f))
		return verdict(st, STAT_PASS_NO_VIP, XDP_PASS);
	if (r != PARSE_OK)
		return unparseable(st, f, r);

	now = ct_now();
	if (ct_wanted(cfg, f->proto)) {
		h5 = flow_hash_of(f, 0);
		have_h5 = 1;
		/* A SYN always takes the ring; it still finds its way, to
		 * reuse it rather than hold the tuple twice. */
		if (ct_find(f, h5, &ref, &ct) && !f->syn) {
			vip = ct_vip(&ct, now, &be, &event);
			/* An entry made before the VIP's ranges changed
			 * does not let a refused client through. */
			if (vip && source_refused(vip, f))
				return verdict(st, STAT_DROP_SOURCE_RANGE, XDP_DROP);
			if (vip) {
				id = ct.backend;
				if (ct.state == CT_SYN && (vip->flags & VIP_F_RESPONSE_TIME))
					rt_ack_seen(h5, ref.lo, id, f->tcp_flags, st);
				ct_touch(&ref, &ct, f, now);
				if (cfg->flags & CONFIG_F_SYNC)
					ct_export_touch(st, f, &ct, be->vip_index);
				st->count[STAT_CT_HIT]++;
				goto forward;
			}
		}
	}
	if (f->syn)
		event = STAT_CT_SYN;

	vip = vip_lookup(f);
	if (!vip)
		return verdict(st, STAT_PASS_NO_VIP, XDP_PASS);
	/* Before the ring and the table: a refused client gets no entry. */
	if (source_refused(vip, f))
		return verdict(st, STAT_DROP_SOURCE_RANGE, XDP_DROP);
	tuple_hash = !(vip->flags & VIP_F_SOURCE_HASH);
	if (!have_h5) /* the table's lookup made it when the VIP tracks */
		h5 = flow_hash_of(f, 0);
	hash = tuple_hash ? h5 : flow_hash_of(f, 1);
	/* A VIP with pools is Maglev on its pool's ring (the config refuses
	 * round-robin and least-conn with pools). */
	id = UNASSIGNED;
	if (!(vip->flags & VIP_F_POOLS))
		id = sched_choose(vip, f, &ref, &ct, now, hash, cfg, st, &guard);
	if (id == UNASSIGNED) {
		id = pick(vip, f, hash, st);
		if (id == POOL_DOWN)
			return verdict(st, STAT_DROP_POOL_DOWN, XDP_DROP);
	}
	if (id == UNASSIGNED)
		return verdict(st, STAT_DROP_NO_BACKEND, XDP_DROP);
	be = live_backend(id);
	if (!be)
		return verdict(st, STAT_DROP_NO_BACKEND, XDP_DROP);

	if (vip->flags & VIP_F_NO_CONNTRACK) {
		event = STAT_CT_BYPASS;
	} else if (guard >= 0 ? guard : over_flow_limit(cfg)) {
		event = STAT_CT_GUARD;
	} else {
		ct.backend = id;
		ct.backend_gen = be->gen;
		ct.state = ct_state_new(f);
		ct.last_seen = now;
		ct_insert(f, &ref, &ct, now, st);
		if (f->syn && ref.b && (vip->flags & VIP_F_RESPONSE_TIME))
			rt_syn_seen(h5, ref.lo);
		if ((cfg->flags & CONFIG_F_SYNC) && ref.b)
			ct_export(st, f, &ct, vip->index);
	}
	st->count[event]++;

forward:
	/* ipip's outer header spreads by the 5-tuple, whatever the ring
	 * hashed on (a new flow's ring hash is reused when it is that);
	 * dsr does not use the hash. */
	if (vip->mode == MODE_IPIP)
		hash = h5; /* made on every path that reaches here */
	return forward(ctx, st, cfg, vip, id, be, f, hash);
}

SEC("xdp")
int fulcrum_balancer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, l3off = 0;
	struct lb_config *cfg;
	struct stat_table *st;
	enum parse_result r;
	struct flow f = {};
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
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
		return verdict(st, STAT_PASS_NOT_IP, XDP_PASS);
	/* A frame sent to a broadcast or multicast MAC is not ours to
	 * forward (a router does not forward it either), and dsr would make
	 * its group address our source MAC. */
	if (((struct ethhdr *)data)->h_dest[0] & 1)
		return verdict(st, STAT_PASS_NOT_UNICAST, XDP_PASS);
	/* The family is set before parsing: a malformed packet's policy
	 * lookup (unparseable) needs it. */
	f.l3off = l3off;
	if (proto == bpf_htons(ETH_P_IP)) {
		f.family = 4;
		r = parse_ipv4(data + l3off, end, &f);
	} else {
		f.family = 6;
		r = parse_ipv6(data + l3off, end, &f);
	}
	return balance(ctx, st, cfg, &f, r);
}

/* fulcrum_clock reports the clock connection entries are stamped with and
 * the tick rate, so Go can tell an entry's age as the fast path does
 * (Predict, `fulcrum explain`) without reading kernel internals. Run with
 * BPF_PROG_RUN. */
SEC("syscall")
int fulcrum_clock(struct ct_clock *c)
{
	c->jiffies = bpf_jiffies64();
	c->hz = CONFIG_HZ;
	return 0;
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map definitions of the balancer. Go (internal/datapath) is the only writer of
 * the configuration maps; the program writes only ct_* and the counters. */
#ifndef FULCRUM_MAPS_H
#define FULCRUM_MAPS_H

#include <linux/bpf.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "types.h"

/* call_site_end ends a branch with an empty statement the compiler may not
 * merge with another branch's (the strings differ). Without it, clang turns
 * "v4 ? lookup(ct_v4) : lookup(ct_v6)" into one call on a selected map;
 * the verifier then no longer knows the call's map and goes through the
 * map's ops (an indirect call) instead of calling the hash table's lookup
 * directly. */
#define call_site_end(tag) asm volatile("/* " tag " */")

/* vips_v4 and vips_v6 map a VIP's key to the vip_metas slot that holds
 * its meta. The meta is not the hash maps' value: the kernel reuses a freed
 * element of a hash map for the next insert at once, without waiting for a
 * grace period (kernel/bpf/hashtab.c htab_elem_free, bpf_mem_cache_free),
 * so a meta read through a hash value pointer could turn into another
 * VIP's, or be half rewritten, while a packet reads it. A slot is written
 * only while no key names it and reused only a grace period after the last
 * key that named it moved on; a reader checks that the slot it got is its
 * key's (vip_find). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vip_key_v4);
	__type(value, __u32);
	__uint(max_entries, MAX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} vips_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vip_key_v6);
	__type(value, __u32);
	__uint(max_entries, MAX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} vips_v6 SEC(".maps");

/* vip_metas: the published metas. Twice MAX_VIPS: every VIP's slot, and
 * room for the slots retired and not yet past their grace period. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct vip_slot);
	__uint(max_entries, 2 * MAX_VIPS);
} vip_metas SEC(".maps");

/* vip_slot_check returns the meta in the vip_metas slot *ref names if the
 * slot is the key's (words, the key's size in words, at w), else 0. The
 * slot is whole and stays so while the program runs: it was named by a
 * key when the program started, or written before a key named it. */
static __always_inline struct vip_meta *vip_slot_check(const __u32 *ref, const __u32 *w, int words)
{
	__u32 slot = *ref;
	struct vip_slot *s = bpf_map_lookup_elem(&vip_metas, &slot);
	int i;

	if (!s)
		return 0;
#pragma unroll
	for (i = 0; i < words; i++)
		if (s->key[i] != w[i])
			return 0;
	return &s->meta;
}

/* vip_find returns the meta of the VIP whose key is *k in map (vips_v4 or
 * vips_v6), or 0. The slot read from the key's element is checked to be
 * the key's: if the element was freed and reused for another key between
 * the lookup and the read (the key was updated or deleted meanwhile), the
 * lookup is done once more. A macro, so that each map's lookup stays a
 * call on that map (see call_site_end). */
#define vip_find(map, k)                                                                     \
	({                                                                                   \
		struct vip_meta *found_ = 0;                                                 \
		__u32 *ref_;                                                                 \
		int try_;                                                                    \
		_Pragma("unroll") for (try_ = 0; try_ < 2 && !found_; try_++)                \
		{                                                                            \
			ref_ = bpf_map_lookup_elem(map, k);                                  \
			if (!ref_)                                                           \
				break;                                                       \
			found_ = vip_slot_check(ref_, (const __u32 *)(k), sizeof(*(k)) / 4); \
		}                                                                            \
		found_;                                                                      \
	})

/* vip_state[index] is what a connection entry is checked against. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct vip_meta);
	__uint(max_entries, MAX_VIPS);
} vip_state SEC(".maps");

/* vip_addrs_* hold, per VIP address, the policy for packets that cannot be
 * matched to a port: fragments and bad L4 headers. Only the slow path reads
 * them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u32);
	__uint(max_entries, MAX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} vip_addrs_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct in6_addr);
	__type(value, __u32);
	__uint(max_entries, MAX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} vip_addrs_v6 SEC(".maps");

/* host_filter is the destination prefilter (hostfilter.h): bit
 * (hash >> 12) & 63 of word hash >> 18, hash being host_filter_hash of the
 * destination address, is set while the address has a VIP or a fragment
 * policy. An array, so the lookup is inlined; mmapable, so Go rewrites a
 * word with one 8-byte store (a map update copies bytes, and a reader could
 * see half a word). 2^20 bits (128 KiB): at MAX_VIPS distinct addresses at
 * most 0.4% of other addresses share a bit with one. */
#define HOST_FILTER_WORDS (1 << 14)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, HOST_FILTER_WORDS);
	__uint(map_flags, BPF_F_MMAPABLE);
} host_filter SEC(".maps");

/* src_prefixes holds client prefixes per VIP (struct src_prefix_key): a
 * VIP's source ranges (SRC_KIND_ALLOW), looked up only for a VIP with
 * VIP_F_SOURCE_RANGES, and its pools' prefixes (SRC_KIND_POOL), looked up
 * only for a VIP with VIP_F_POOLS. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct src_prefix_key);
	__type(value, struct src_prefix_value);
	__uint(max_entries, SRC_PREFIX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} src_prefixes SEC(".maps");

/* pool_rings[pool id] is a source-prefix pool's ring (src_prefixes gives
 * a client's pool id), packed in one __u64 (consts.h POOL_RING_*). An
 * array, not a hash map: an element is never freed, so the pointer the
 * lookup returns names this id's word for good, where a hash map reuses a
 * freed element for the next insert at once (an update of a key frees the
 * old element) and a reader could find another pool's value under it. Go
 * writes a word with one 8-byte store through its mmap, not with a map
 * update (a memcpy, not single-copy atomic), and the program loads it
 * once: a reader sees the old word or the new one, whole. The lookup is
 * inlined. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, POOL_ENTRIES);
	__uint(map_flags, BPF_F_MMAPABLE);
} pool_rings SEC(".maps");

/* ring_arena holds the Maglev ring of every VIP, each at its own extent
 * (vip_meta.ring_offset, .ring_size). Go writes a new ring into a free
 * extent through an mmap of the map, then publishes it by updating the
 * VIP's meta; an extent is reused only after an RCU grace period has passed
 * since no meta named it (docs/datapath.md, "Ring publication"). A plain
 * array, not a map of maps: the lookup is inlined, and no update waits for
 * a grace period. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ring_chunk);
	__uint(max_entries, RING_ARENA_CHUNKS);
	__uint(map_flags, BPF_F_MMAPABLE);
} ring_arena SEC(".maps");

/* ring_read returns slot slot of the ring at offset in the ring arena, or
 * 0xffffffff (maglev.Unassigned) past the arena's end: the balancer's one
 * way of reading a ring (pick), shared with the test that proves rings
 * flip whole (bpf/ringscan.c). The lookup is inlined: the verifier turns
 * it into a bounds check and an address computation. */
static __always_inline __u32 ring_read(__u32 offset, __u32 slot)
{
	__u32 at = offset + slot;
	__u32 chunk = at / RING_CHUNK_SLOTS;
	struct ring_chunk *c;

	c = bpf_map_lookup_elem(&ring_arena, &chunk);
	if (!c)
		return 0xffffffff;
	return c->slot[at % RING_CHUNK_SLOTS];
}

/* rr_cursors[vip index]: each CPU's cursor in its round-robin VIP's
 * sequence. Per CPU, so a new flow costs no atomic and no shared cache
 * line; every CPU walks the whole sequence, so the shares hold on each. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct rr_cursor);
	__uint(max_entries, MAX_VIPS);
} rr_cursors SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(max_entries, MAX_BACKENDS);
} backends SEC(".maps");

/* The connection tables, one per family: arrays of 64-byte buckets
 * (types.h ct_bucket) addressed by the flow hash, so a lookup is one cache
 * line and no helper call (the verifier inlines array lookups). One table
 * serves all CPUs, so a flow that RSS moves keeps its backend and `fulcrum
 * explain` finds it. Go sizes them (entries / CT_WAYS buckets) and sets
 * ct_buckets to match. docs/datapath.md has the design search. The tables
 * and their tuple records are BPF_F_MMAPABLE so that Go lists them with a
 * memory copy, not a system call per element (an array lookup is inlined
 * all the same). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ct_bucket);
	__uint(max_entries, CT_ENTRIES / CT_WAYS);
	__uint(map_flags, BPF_F_MMAPABLE);
} ct_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ct_bucket);
	__uint(max_entries, CT_ENTRIES / CT_WAYS);
	__uint(map_flags, BPF_F_MMAPABLE);
} ct_v6 SEC(".maps");

/* ct_keys_*[bucket * CT_WAYS + way] is the tuple of that way's entry,
 * written with the entry and never read by the fast path: it lets Go list
 * and migrate connections (a bucket holds only hashes). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ct_key_v4);
	__uint(max_entries, CT_ENTRIES);
	__uint(map_flags, BPF_F_MMAPABLE);
} ct_keys_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ct_key_v6);
	__uint(max_entries, CT_ENTRIES);
	__uint(map_flags, BPF_F_MMAPABLE);
} ct_keys_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct stat_table);
	__uint(max_entries, 1);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, MAX_VIPS);
} vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, MAX_BACKENDS);
} backend_stats SEC(".maps");

/* rt_syn[flow hash % RT_SYN_SLOTS] is the SYN time of a handshake in
 * progress of a VIP with VIP_F_RESPONSE_TIME (rtt.h): the low 32 bits of
 * bpf_ktime_get_ns, and above them the flow's tag, in one 8-byte word
 * written with one store. Shared by all CPUs: a flow's ACK may arrive on
 * another CPU than its SYN. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, RT_SYN_SLOTS);
} rt_syn SEC(".maps");

/* rt_samples[backend id]: each CPU's passive response-time samples of the
 * backend, cumulative; the daemon folds their growth into an EWMA. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct rt_sample);
	__uint(max_entries, MAX_BACKENDS);
} rt_samples SEC(".maps");

/* backend_cost[backend id] is the backend's response time in µs (0 = not
 * measured yet), the EWMA the daemon folds at most every 100 ms from its
 * VIP's sources; the least-time scheduler reads it. Go writes each entry
 * whole (one 4-byte value). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_BACKENDS);
} backend_cost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(max_entries, 1);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flow_guard);
	__uint(max_entries, 1);
} flow_guard SEC(".maps");

#endif

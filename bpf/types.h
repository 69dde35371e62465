/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Key and value layouts of every map. bpf2go exports them to Go, so C and Go
 * share one definition. Addresses and ports are in network byte order. */
#ifndef FULCRUM_TYPES_H
#define FULCRUM_TYPES_H

#include <linux/types.h>
#include "consts.h"

/* vips_v4 key. Port 0 means "every port". 8 bytes keeps the hash cheap. */
struct vip_key_v4 {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* vips_v6 key. */
struct vip_key_v6 {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* vip_meta is a VIP's state: in its vip_metas slot, which its key's entry
 * in the VIP hash maps names, and in vip_state[index], which a connection
 * entry's backend points back to. gen 0 marks an unused index. The VIP's
 * ring is slots ring_offset to ring_offset + ring_size - 1 of the ring
 * arena: pointing the VIP's key at a new slot publishes a new ring. */
struct vip_meta {
	__u16 index;
	__u16 gen;
	__u16 flags;     /* enum fulcrum_vip_flags */
	__u8 mode;       /* enum fulcrum_mode */
	__u8 pad;
	__u32 ring_size;   /* prime M of the ring */
	__u32 ring_offset; /* its first slot in the ring arena */
	/* How long the VIP's connection entries may stay idle, in jiffies,
	 * by enum fulcrum_ct_state (a UDP VIP's four are its one timeout).
	 * Go converts the configured seconds with the kernel's HZ. */
	__u32 ct_timeout[4];
	/* A round-robin VIP's (VIP_F_ROUND_ROBIN) weighted sequence of
	 * backend ids: rr_len slots of the ring arena from rr_offset,
	 * published with the meta like the ring. */
	__u32 rr_offset;
	__u32 rr_len;
};

/* vip_metas value: a VIP's meta as published, with the key it was
 * published for (struct vip_key_v4 in key[0..1], the rest 0, or struct
 * vip_key_v6), which a reader checks: the kernel may reuse a hash map's
 * freed element for another key while a reader holds it (docs/datapath.md,
 * "VIP publication"). */
struct vip_slot {
	struct vip_meta meta;
	__u32 key[5];
};

/* rr_cursors[vip index], per CPU: this CPU's place in its VIP's
 * round-robin sequence (Go starts each CPU elsewhere), and how many new
 * flows it gave out there (the VIP's scheduler decisions, for metrics). */
struct rr_cursor {
	__u64 picks;
	__u32 pos;
	__u32 pad;
};

/* src_prefixes key: an LPM trie key. prefixlen counts the bits after it
 * that must match: vip_index, kind and pad always (SRC_PREFIX_HEAD_BITS),
 * then the address's prefix. An IPv4 address is stored v4-mapped
 * (::ffff:a.b.c.d), so one trie serves both families: a v4 /n is
 * SRC_PREFIX_HEAD_BITS + 96 + n bits. vip_index and kind are matched
 * whole, so their byte order is immaterial. */
struct src_prefix_key {
	__u32 prefixlen;
	__u16 vip_index;
	__u8 kind;        /* enum fulcrum_src_kind */
	__u8 pad;
	__u8 addr[16];
};

#define SRC_PREFIX_HEAD_BITS 32

/* src_prefixes value: nothing for SRC_KIND_ALLOW; for SRC_KIND_POOL the
 * pool's id, pool_rings' key. */
struct src_prefix_value {
	__u32 pool;
};

/* backends[id]. An id names one backend of one VIP, so removing a backend
 * from a VIP re-hashes exactly that VIP's flows to it. gen changes when an
 * id is reused, so old connection entries to the id are recognised. */
struct backend {
	__u8 mac[6];      /* next hop for MODE_DSR */
	__u8 family;      /* AF_INET or AF_INET6, for MODE_IPIP */
	__u8 flags;       /* enum fulcrum_backend_flags */
	__u16 vip_index;  /* the VIP this backend serves */
	__u16 gen;
	__u16 weight;     /* least-conn's cost divisor (sched.h); also lets */
	__u16 pad;        /* a restarted daemon rebuild its state */
	__be32 addr[4];
};

/* ring_chunk is one element of the ring arena: RING_CHUNK_SLOTS backend
 * ids, so that a slot takes 4 bytes (an array rounds each element up to 8)
 * and the arena is one flat array of slots to Go's mmap. */
struct ring_chunk {
	__u32 slot[RING_CHUNK_SLOTS];
};

/* Connection table keys, one map per family so the IPv4 key stays small. */
struct ct_key_v4 {
	__be32 src;
	__be32 dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct ct_key_v6 {
	__be32 src[4];
	__be32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* ct_value: where the flow goes. The entry is valid while backends[backend]
 * is live with the same gen, serves the packet's VIP, and has not been idle
 * longer than its state's timeout. last_seen is in jiffies (coarse, cheap).
 * state took the place of a 16-bit pad without moving anything. */
struct ct_value {
	__u32 backend;
	__u16 backend_gen;
	__u8 state;       /* enum fulcrum_ct_state */
	__u8 pad;
	__u32 last_seen;
};

/* ct_bucket is one 64-byte cache line of the connection table: CT_WAYS
 * entries ("ways") of flows whose 5-tuple hash picks this bucket. A way is
 * two 8-byte words, each written with one store:
 *   ident: tag bits 0-29 | backend id << 30 (18 bits) | backend gen << 48
 *   meta:  last_seen (jiffies, 32 bits) | state << 32 (2 bits)
 *          | tag bits 30-59 << 34
 * The 60-bit tag is a second hash of the whole tuple (conntrack.h ct_tag).
 * Half of it in each word makes a torn read (another CPU rewriting the way
 * between our two loads) a miss: the halves of two flows do not match but
 * by a 2^-30 chance. ident 0 is an empty way (a backend gen is never 0). */
struct ct_bucket {
	__u64 ident[CT_WAYS];
	__u64 meta[CT_WAYS];
};

/* ct_clock is the context of fulcrum_clock: the clock connection entries
 * are stamped with, for Go (Predict, tests). */
struct ct_clock {
	__u64 jiffies;
	__u32 hz;
	__u32 pad;
};

/* counter is a packet and byte count, per CPU. */
struct counter {
	__u64 packets;
	__u64 bytes;
};

/* rt_sample is a backend's passive response-time samples on one CPU, since
 * the program was loaded: Go reads the growth (internal/datapath rtt.go). */
struct rt_sample {
	__u64 sum_ns;
	__u64 count;
};

/* stats is the per-CPU verdict and event table: one lookup per packet. */
struct stat_table {
	__u64 count[STAT_MAX];
};

/* lb_config is the global configuration, written by Go. */
struct lb_config {
	__u32 flags;        /* enum fulcrum_config_flags */
	/* Outer source addresses of ipip: the prefix's bits, and a mask of
	 * the host bits that the flow hash fills, so outer flows spread
	 * like the inner ones. */
	__be32 src4;
	__be32 src4_host;
	__be32 src6[4];
	__be32 src6_host[4];
	__u8 gw_mac[6];
	__u8 pad[2];
	/* New connection entries each CPU may make per second; 0 = no limit.
	 * Over it, new flows are still balanced by the ring but get no entry,
	 * so a SYN flood cannot evict the established flows' entries. */
	__u32 new_flow_limit;
	__u32 pad2;
};

/* flow_guard is each CPU's count of new connection entries in the current
 * one-second window. */
struct flow_guard {
	__u64 window_start; /* coarse ns */
	__u32 count;
	__u32 pad;
};

#endif

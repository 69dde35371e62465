/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Constants shared by the XDP programs. Go learns the enums below from BTF
 * (bpf2go -type) and the VIP and backend capacities from the map specs it
 * loads. Two numbers are copied into Go, each held equal by a test:
 * CT_ENTRIES (datapath.DefaultConntrackEntries) and FLOW_HASH_SEED
 * (flowhash.Seed). */
#ifndef FULCRUM_CONSTS_H
#define FULCRUM_CONSTS_H

/* Capacities of the maps as compiled: the most Go can load. Go may load
 * smaller VIP and backend maps (datapath.Options) and sizes the connection
 * tables itself, CT_ENTRIES each by default. */
#define MAX_VIPS 4096
/* A backend id is one (VIP, backend) pair: 4096 VIPs x 64 backends. */
#define MAX_BACKENDS 262144
#define CT_ENTRIES (1 << 20)
/* Entries per connection-table bucket (one cache line, types.h ct_bucket). */
#define CT_WAYS 4
/* The ring arena (maps.h) holds every VIP's Maglev ring, RING_CHUNK_SLOTS
 * slots to an array element, RING_ARENA_CHUNKS elements as compiled: 64 Mi
 * slots, 256 MiB, 1024 rings of the default 65537 slots. Go loads it with
 * the capacity it is given (datapath.Options.RingSlots). */
#define RING_CHUNK_SLOTS 16
#define RING_ARENA_CHUNKS (1 << 22)
/* Capacity of src_prefixes, all VIPs and kinds together. The trie is not
 * preallocated (BPF_F_NO_PREALLOC): an entry costs memory only when Go
 * writes it. */
#define SRC_PREFIX_ENTRIES (1 << 20)
/* Source-prefix pools: at most POOLS_PER_VIP per VIP; a pool's id is its
 * VIP's index * POOLS_PER_VIP + its slot, its element of the array
 * pool_rings, which has POOL_ENTRIES as compiled (8 bytes each: 2 MiB);
 * Go sizes it with the VIP maps. */
#define POOLS_PER_VIP 64
#define POOL_ENTRIES (MAX_VIPS * POOLS_PER_VIP)

/* How many IPv6 extension headers the parser walks; a longer chain (or one
 * over IPV6_MAX_EXT_BYTES, parse.h) is malformed. */
#define IPV6_MAX_EXT_HEADERS 4
/* How many VLAN tags (802.1Q / 802.1ad) the parser skips; a frame with more
 * is passed as not IP. */
#define MAX_VLAN_TAGS 2

/* The flow hash's seed (flowhash.h adds the protocol to it). */
#define FLOW_HASH_SEED 0x7a3c19e5
/* Slots of rt_syn (rtt.h): the SYN times of handshakes in progress of VIPs
 * measuring response times, by flow hash. 64 Ki slots of 8 bytes; with
 * 1000 handshakes in flight, 1.5 % of them lose their slot to another. */
#define RT_SYN_SLOTS (1 << 16)

/* Forwarding mode of a VIP (vip_meta.mode). MODE_NONE is only in the
 * zeroed vip_state slot of a removed VIP, whose gen 0 makes connection
 * entries stale first; forward() drops a packet of any mode it does not
 * know (STAT_DROP_BAD_MODE). */
enum fulcrum_mode {
	MODE_NONE = 0,
	MODE_DSR = 1,
	MODE_IPIP = 2,
};

/* Per-VIP flags. */
enum fulcrum_vip_flags {
	/* Do not use the connection table: every packet takes the ring. */
	VIP_F_NO_CONNTRACK = 1 << 0,
	/* Hash on the client address only (sticky source hash). */
	VIP_F_SOURCE_HASH = 1 << 1,
	/* Pass fragments and malformed packets to the host stack instead of
	 * dropping them. The program reads it from vip_addrs_* only, where Go
	 * sets it for an address when every VIP on that address has it (a
	 * drop wins); in vip_meta it records the VIP's own setting. */
	VIP_F_PASS_UNPARSEABLE = 1 << 2,
	/* The VIP has source ranges (src_prefixes entries of kind
	 * SRC_KIND_ALLOW under its index): a client outside them is dropped
	 * (STAT_DROP_SOURCE_RANGE). Without the flag the trie is not looked
	 * up, so a VIP without ranges pays one flag test. */
	VIP_F_SOURCE_RANGES = 1 << 3,
	/* The VIP has source-prefix pools (src_prefixes entries of kind
	 * SRC_KIND_POOL under its index, rings in pool_rings): a new flow
	 * or a table miss of a client in a pool takes its pool's ring. */
	VIP_F_POOLS = 1 << 4,
	/* New flows (a TCP SYN, a UDP packet without an entry) take the next
	 * backend of the VIP's weighted round-robin sequence (vip_meta.rr_*)
	 * on this CPU; any other packet without an entry takes the ring. */
	VIP_F_ROUND_ROBIN = 1 << 5,
	/* New flows take the least-conn scheduler (sched.h): the backend of
	 * lowest (active + 1) / weight. */
	VIP_F_LEAST_CONN = 1 << 6,
	/* New flows take the least-time scheduler (sched.h): the backend of
	 * lowest (active + 1) x response time / weight, the response time
	 * from backend_cost, with a hysteresis margin (LT_MARGIN_SHIFT). */
	VIP_F_LEAST_TIME = 1 << 7,
	/* The VIP measures its backends' response times passively (rtt.h): a
	 * SYN's time is kept in rt_syn, and the flow's first ACK adds the
	 * time since to its backend's rt_samples. Without the flag a SYN and
	 * an ACK in state syn pay one flag test. */
	VIP_F_RESPONSE_TIME = 1 << 8,
};

/* What a src_prefixes entry is for (src_prefix_key.kind): the key's kind is
 * matched exactly, so each kind is a trie of its own per VIP. */
enum fulcrum_src_kind {
	/* An allowed client prefix of a VIP with VIP_F_SOURCE_RANGES. */
	SRC_KIND_ALLOW = 1,
	/* A client prefix of a source-prefix pool of a VIP with VIP_F_POOLS;
	 * the value is the pool's id (pool_rings' key). */
	SRC_KIND_POOL = 2,
};

/* A pool_rings value is one __u64: the pool's ring_offset in bits 0..31
 * (the arena holds at most 2^30 slots, internal/config MaxRingArenaSlots),
 * its ring_size in bits 32..55 (a Maglev size is a prime <= 131071 <
 * 2^24) and its flags (enum fulcrum_pool_flags) in bits 56..63. One word,
 * so that Go publishes a pool with one 8-byte store and the program reads
 * it with one load: never one ring's offset with another's size. */
#define POOL_RING_SIZE_SHIFT 32
#define POOL_RING_SIZE_MASK 0xffffff
#define POOL_RING_FLAGS_SHIFT 56

/* A pool_rings value's flags. Without POOL_F_PRESENT the id is no pool
 * (the word is 0). FALLBACK_VIP and DROP are set when the pool has no live
 * backend, by its fallback; without either the pool's ring is its
 * ring_offset, ring_size. */
enum fulcrum_pool_flags {
	/* Its clients take the VIP's ring (STAT_POOL_FALLBACK). */
	POOL_F_FALLBACK_VIP = 1 << 0,
	/* Its clients' new flows are dropped (STAT_DROP_POOL_DOWN). */
	POOL_F_DROP = 1 << 1,
	/* The id is a pool: an unused id's word is 0. */
	POOL_F_PRESENT = 1 << 2,
};

/* Backend flags. */
enum fulcrum_backend_flags {
	/* The backend may receive packets. A cleared flag marks a removed
	 * backend: connection-table entries that point at it are re-hashed. */
	BACKEND_F_LIVE = 1 << 0,
};

/* Global configuration flags (the config map). */
enum fulcrum_config_flags {
	/* Some TCP VIP uses the connection table. */
	CONFIG_F_CT_TCP = 1 << 0,
	/* Some UDP VIP uses the connection table. */
	CONFIG_F_CT_UDP = 1 << 1,
	/* gw_mac holds a next hop for encapsulated packets whose route has
	 * no resolved neighbour. */
	CONFIG_F_GW_MAC = 1 << 2,
	/* Connection sync runs: new entries and TCP state changes go to the
	 * ct_events ring buffer (ctevents.h). */
	CONFIG_F_SYNC = 1 << 3,
};

/* Client-side TCP state of a connection entry (ct_value.state): the balancer
 * sees only client -> server in dsr and ipip, so the state is what the
 * client's segments say. A SYN makes CT_SYN; the first segment without SYN
 * CT_ESTABLISHED; a FIN CT_FIN; an RST CT_CLOSED. States only move forward
 * (SYN < ESTABLISHED < FIN < CLOSED); a new SYN starts over. Established is 0
 * so that an entry written before states existed (the byte was padding,
 * always 0) reads as established. UDP entries stay 0. */
enum fulcrum_ct_state {
	CT_ESTABLISHED = 0,
	CT_SYN = 1,
	CT_FIN = 2,
	CT_CLOSED = 3,
};

/* The default idle timeouts of connection entries, in seconds, per
 * protocol and TCP state: IPVS's. Go writes each VIP's (these, or the
 * configured ones) into vip_meta.ct_timeout in jiffies; an entry idle for
 * longer is expired. */
enum fulcrum_ct_timeout {
	CT_TIMEOUT_TCP_ESTABLISHED = 900,
	CT_TIMEOUT_TCP_SYN = 60,
	CT_TIMEOUT_TCP_FIN = 120,
	CT_TIMEOUT_TCP_CLOSED = 10,
	CT_TIMEOUT_UDP = 300,
};

/* Counters of the stats map: one verdict per packet (STAT_PASS_*,
 * STAT_DROP_*, STAT_TX_*), plus events: the connection table's (STAT_CT_*)
 * and STAT_FIB_GATEWAY. */
enum fulcrum_stat {
	STAT_PASS_NOT_IP = 0,       /* not IPv4/IPv6, or no room for the header */
	STAT_PASS_NO_VIP,           /* no VIP matches; also a fragment or bad
	                             * header to an address without a VIP */
	STAT_PASS_NOT_L4,           /* a protocol other than TCP/UDP */
	STAT_PASS_UNPARSEABLE,      /* fragment or bad header to a VIP address
	                             * whose policy passes them */
	STAT_PASS_NOT_UNICAST,      /* IP frame to a broadcast or multicast MAC */
	STAT_DROP_FRAGMENT,         /* IP fragment to a VIP address that drops them */
	STAT_DROP_MALFORMED,        /* bad or truncated header to a VIP address
	                             * that drops them */
	STAT_DROP_NO_BACKEND,       /* the ring has no live backend for it */
	STAT_DROP_BAD_MODE,         /* VIP mode the program does not know */
	STAT_DROP_TOO_BIG,          /* encapsulated packet over the egress MTU */
	STAT_DROP_NO_ROUTE,         /* ipip: no route or next hop to the backend,
	                             * and no gateway MAC */
	STAT_DROP_ENCAP,            /* no headroom for the outer header */
	STAT_TX_DSR,                /* forwarded with an L2 rewrite */
	STAT_TX_IPIP,               /* forwarded encapsulated in IP (XDP_TX, or a
	                             * redirect to another port) */
	STAT_CT_HIT,                /* connection entry used */
	STAT_CT_MISS,               /* no entry: ring lookup and insert (counted
	                             * even if the insert fails) */
	STAT_CT_SYN,                /* TCP SYN: ring lookup and insert */
	STAT_CT_STALE,              /* entry for a removed backend or VIP: re-hashed */
	STAT_CT_INSERT_FAILED,      /* map update failed */
	STAT_CT_BYPASS,             /* VIP without connection table */
	STAT_FIB_GATEWAY,           /* no neighbour for the next hop: gw_mac used */
	STAT_CT_GUARD,              /* new flow over the rate limit: no entry made */
	STAT_CT_EXPIRED,            /* entry idle past its timeout: ring lookup
	                             * and insert, as a miss (new counters go at
	                             * the end: a migration keeps the others by
	                             * index) */
	STAT_DROP_SOURCE_RANGE,     /* client outside the VIP's source ranges */
	STAT_CT_EVICTED,            /* a new entry took the way of a live one:
	                             * its bucket had no free, stale or expired
	                             * way, so the oldest was evicted */
	STAT_CT_EXPORT_FULL,        /* sync: the ct_events ring buffer was
	                             * full, an entry's event was lost */
	STAT_DROP_POOL_DOWN,        /* the client's pool has no live backend
	                             * and its fallback is drop */
	STAT_POOL_FALLBACK,         /* the client's pool has no live backend:
	                             * the VIP's ring decided (an event) */
	STAT_SCHED_RR,              /* a new flow's backend chosen by round-robin */
	STAT_RT_SAMPLE,             /* a flow's first ACK gave its backend a
	                             * response-time sample (rtt.h) */
	STAT_RT_LOST,               /* a flow's first ACK found its SYN's time
	                             * gone (another SYN took the rt_syn slot)
	                             * or too old: no sample */
	STAT_SCHED_LC_EXACT,        /* least-conn: a new flow's backend chosen
	                             * by comparing the whole pool */
	STAT_SCHED_LC_TWO,          /* least-conn: chosen by the better of two
	                             * ring slots (a pool over LC_EXACT_MAX) */
	STAT_SCHED_LT_EXACT,        /* least-time: a new flow's backend chosen
	                             * by comparing the whole pool */
	STAT_SCHED_LT_TWO,          /* least-time: chosen by the better of two
	                             * ring slots (a pool over LC_EXACT_MAX) */
	STAT_MAX,
};

#endif

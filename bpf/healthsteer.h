/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map layouts and constants of the health-check steering program
 * (bpf/healthsteer.c). Go (internal/healthsteer) reads them through BTF
 * (bpf2go -type). */
#ifndef FULCRUM_HEALTHSTEER_H
#define FULCRUM_HEALTHSTEER_H

#include <linux/types.h>

/* Capacity of the mark map: one entry per through-datapath target. */
#define STEER_MAX_TARGETS 65536

/* How a marked probe reaches its backend. */
enum steer_mode {
	STEER_MODE_DSR = 1,  /* destination MAC := the backend's */
	STEER_MODE_IPIP = 2, /* IPv4 or IPv6 outer header to the backend */
};

/* steer_target is where the probes with one mark go. */
struct steer_target {
	__u32 ifindex; /* egress interface; redirected there if not the current one */
	__u8 mode;     /* enum steer_mode */
	__u8 family;   /* ipip: AF_INET or AF_INET6, the outer header's family */
	__u8 dmac[6];  /* dsr: the backend; ipip: the next hop towards it */
	__u8 smac[6];  /* the egress interface's MAC */
	__u8 pad[2];
	__be32 daddr[4]; /* ipip: outer destination, the backend (IPv4 in daddr[0]) */
	__be32 saddr[4]; /* ipip: outer source, this host's address */
};

/* Counters of the steer_stats map. A packet whose mark lies outside the
 * configured range moves none. */
enum steer_stat {
	STEER_STAT_STEERED = 0, /* sent towards its backend */
	STEER_STAT_NO_ENTRY,    /* mark in range, no entry: left untouched */
	STEER_STAT_NOT_IP,      /* mark with an entry, not an IPv4/IPv6 frame: dropped */
	STEER_STAT_ERROR,       /* a helper failed (room, store, redirect): dropped */
	STEER_STAT_MAX,
};

/* steer_stat_table is the per-CPU counter table. */
struct steer_stat_table {
	__u64 count[STEER_STAT_MAX];
};

#endif

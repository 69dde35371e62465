/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The balancer's counters: one per-CPU table of verdicts and events (looked
 * up once per packet and handed down), packets and bytes per VIP and per
 * backend. */
#ifndef FULCRUM_STATS_H
#define FULCRUM_STATS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "types.h"
#include "maps.h"

/* verdict counts the packet's final action and returns it. */
static __always_inline int verdict(struct stat_table *st, enum fulcrum_stat reason, int action)
{
	if (reason < STAT_MAX)
		st->count[reason]++;
	return action;
}

/* count adds one packet of bytes to entry index of a per-CPU counter map. */
static __always_inline void count(void *map, __u32 index, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(map, &index);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

#endif

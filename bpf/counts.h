/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-backend connection counts, kept by the fast path: +1 when it makes
 * an entry, a move between the classes when an entry's state crosses
 * established, -1 when it overwrites a live entry (a SYN on a known
 * tuple, an eviction). An entry that expires in place is not seen by the
 * fast path: the daemon's periodic walk of the table corrects the counts
 * for it (internal/daemon conns.go, docs/connections.md "Counts"). */
#ifndef FULCRUM_COUNTS_H
#define FULCRUM_COUNTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"

/* conn_count is backend_conns[id]: IPVS's active (established) and
 * inactive (syn, fin, closed) connections of backend id, and of the
 * inactive those in state syn: connections being opened, which least-conn
 * counts as load (a burst of SYNs would otherwise all see the same counts
 * and go to one backend). Signed: between two walks an entry that
 * expired, then was removed by Go, may take a count below the truth, even
 * below 0. */
struct conn_count {
	__s64 active;
	__s64 inactive;
	__s64 syn;
	__s64 pad;
};

/* backend_conns is one array shared by all CPUs, updated with atomic adds,
 * so that a least-conn decision reads a backend's count with one load
 * (a per-CPU array would make it sum every CPU's). Go maps it
 * (BPF_F_MMAPABLE): it reads the counts, and corrects them with atomic
 * adds of its own, without a syscall. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct conn_count);
	__uint(max_entries, MAX_BACKENDS);
	__uint(map_flags, BPF_F_MMAPABLE);
} backend_conns SEC(".maps");

/* conn_count_add adds d to backend id's count of state's class. */
static __always_inline void conn_count_add(__u32 id, __u8 state, __s64 d)
{
	struct conn_count *c = bpf_map_lookup_elem(&backend_conns, &id);

	if (!c)
		return;
	if (state == CT_ESTABLISHED) {
		__sync_fetch_and_add(&c->active, d);
		return;
	}
	__sync_fetch_and_add(&c->inactive, d);
	if (state == CT_SYN)
		__sync_fetch_and_add(&c->syn, d);
}

/* conn_count_move moves one entry of backend id from state from to state
 * to (the caller knows they differ). */
static __always_inline void conn_count_move(__u32 id, __u8 from, __u8 to)
{
	conn_count_add(id, from, -1);
	conn_count_add(id, to, 1);
}

/* conn_active returns the load least-conn compares for backend id: its
 * active and syn counts, 0 if below. */
static __always_inline __u64 conn_active(__u32 id)
{
	struct conn_count *c = bpf_map_lookup_elem(&backend_conns, &id);
	__s64 a;

	if (!c)
		return 0;
	a = *(volatile __s64 *)&c->active + *(volatile __s64 *)&c->syn;
	return a & ~(a >> 63); /* max(a, 0) without a branch */
}

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection-table events for connection sync: while sync runs (Go sets
 * CONFIG_F_SYNC), the fast path writes an event to the ct_events ring
 * buffer when it makes a connection entry and when an entry's TCP state
 * changes; the daemon reads them (internal/datapath ctevents.go) and sends
 * them to its peers. A full buffer loses the event, counted
 * (STAT_CT_EXPORT_FULL): the packet never waits. With sync off a packet
 * pays one flag test. */
#ifndef FULCRUM_CTEVENTS_H
#define FULCRUM_CTEVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "types.h"
#include "parse.h"

/* The ring's size: 37449 events of 56 bytes (48 and the ring's 8-byte
 * header), some 30 ms of new flows at 1.2 M/s, six of the reader's polls. */
#define CT_EVENTS_BYTES (1 << 21)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, CT_EVENTS_BYTES);
} ct_events SEC(".maps");

/* ct_event is one event: the flow's tuple (addresses in network order, an
 * IPv4 one in the first word), the entry's backend and state, and the
 * VIP's index (which says the VIP even for an every-port VIP). */
struct ct_event {
	__be32 src[4];
	__be32 dst[4];
	__be16 sport;
	__be16 dport;
	__u32 backend;
	__u16 backend_gen;
	__u16 vip_index;
	__u8 family; /* 4 or 6 */
	__u8 proto;
	__u8 state; /* enum fulcrum_ct_state */
	__u8 pad;
};

/* ct_export writes an event for the flow's entry v of VIP vip_index. */
static __always_inline void ct_export(struct stat_table *st, const struct flow *f,
				      const struct ct_value *v, __u16 vip_index)
{
	struct ct_event *e = bpf_ringbuf_reserve(&ct_events, sizeof(*e), 0);

	if (!e) {
		st->count[STAT_CT_EXPORT_FULL]++;
		return;
	}
	__builtin_memcpy(e->src, f->src.v6, 16);
	__builtin_memcpy(e->dst, f->dst.v6, 16);
	*(__u32 *)&e->sport = f->ports;
	e->backend = v->backend;
	e->backend_gen = v->backend_gen;
	e->vip_index = vip_index;
	e->family = f->family;
	e->proto = f->proto;
	e->state = v->state;
	e->pad = 0;
	/* No wakeup: a wakeup per event (an irq_work, then the reader's
	 * epoll) doubles a new flow's cost, and even one past a fill level
	 * costs more than it saves (docs/connections.md has the figures). The
	 * reader polls the ring every few ms (internal/datapath ConnEvents);
	 * 2 MiB lasts 5 ms at 7 M new flows/s. */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/* ct_export_touch writes an event when a packet changed a live entry's
 * TCP state (v is the entry before the packet). */
static __always_inline void ct_export_touch(struct stat_table *st, const struct flow *f,
					    const struct ct_value *v, __u16 vip_index)
{
	struct ct_value n = *v;

	n.state = ct_state_after(v->state, f->tcp_flags);
	if (n.state != v->state)
		ct_export(st, f, &n, vip_index);
}

#endif

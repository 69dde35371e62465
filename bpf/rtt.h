/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Passive response times: for a VIP with VIP_F_RESPONSE_TIME the fast path
 * keeps a TCP SYN's time (rt_syn) and, at the flow's first ACK (its entry
 * leaves state syn), adds the time since to the backend's samples
 * (rt_samples). That time is the backend's SYN-ACK round trip as the client
 * completes it: LB to backend, backend to client, client's ACK back to the
 * LB. The clock (bpf_ktime_get_ns, a helper call) is read on those two
 * packets of a flow only, never on an established one; docs/schedulers.md
 * has the measurements and why not the entries' jiffies. */
#ifndef FULCRUM_RTT_H
#define FULCRUM_RTT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "types.h"
#include "maps.h"
#include "conntrack.h"

/* A sample over a second is no handshake's round trip (a client that sat
 * on its ACK, a slot whose time wrapped): dropped, counted as lost. */
#define RT_MAX_NS 1000000000U

/* rt_tag is what an rt_syn slot records of its flow: the connection tag's
 * low half (30 bits) and a set top bit, so that an empty slot (0) never
 * matches. */
static __always_inline __u64 rt_tag(__u64 ct_lo)
{
	return (ct_lo | 0x80000000ULL) << 32;
}

/* rt_syn_seen records the SYN of flow (5-tuple hash h5, connection tag
 * half ct_lo): one clock read, one 8-byte store. A retransmitted SYN
 * restarts the time. */
static __always_inline void rt_syn_seen(__u32 h5, __u64 ct_lo)
{
	__u32 slot = h5 & (RT_SYN_SLOTS - 1);
	__u64 *s = bpf_map_lookup_elem(&rt_syn, &slot);

	if (s)
		*(volatile __u64 *)s = rt_tag(ct_lo) | (__u32)bpf_ktime_get_ns();
}

/* rt_ack_seen takes the sample of a flow whose entry was in state syn and
 * whose packet (tcp_flags) is its first ACK: the time since its SYN, added
 * to backend's samples on this CPU. The slot is emptied, so a second
 * packet that still saw state syn adds nothing. A FIN or RST is no
 * completed handshake. */
static __always_inline void rt_ack_seen(__u32 h5, __u64 ct_lo, __u32 backend, __u8 tcp_flags,
					struct stat_table *st)
{
	__u32 slot = h5 & (RT_SYN_SLOTS - 1), d;
	struct rt_sample *acc;
	__u64 *s, v;

	if (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
		return;
	s = bpf_map_lookup_elem(&rt_syn, &slot);
	if (!s)
		return;
	v = *(volatile __u64 *)s;
	if ((v & ~0xffffffffULL) != rt_tag(ct_lo)) {
		st->count[STAT_RT_LOST]++;
		return;
	}
	*(volatile __u64 *)s = 0;
	d = (__u32)bpf_ktime_get_ns() - (__u32)v;
	if (d > RT_MAX_NS) {
		st->count[STAT_RT_LOST]++;
		return;
	}
	acc = bpf_map_lookup_elem(&rt_samples, &backend);
	if (!acc)
		return;
	acc->sum_ns += d;
	acc->count++;
	st->count[STAT_RT_SAMPLE]++;
}

#endif

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

/* The kernel's tick rate, from its configuration (loaded with the program):
 * connection entries are stamped in jiffies, and fulcrum_clock tells Go the
 * rate, to convert the configured timeouts. */
extern const unsigned int CONFIG_HZ __kconfig;

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_RST 0x04

/* ct_key holds either family's key; the family picks the table. */
union ct_key {
	struct ct_key_v4 v4;
	struct ct_key_v6 v6;
};

/* ct_now is the clock of connection entries: bpf_jiffies64 (the verifier
 * inlines it on x86-64), truncated to 32 bits; ages are differences modulo
 * 2^32, good for 49 days at HZ=1000, far beyond any timeout. */
static __always_inline __u32 ct_now(void)
{
	return (__u32)bpf_jiffies64();
}

/* ct_key_build fills the flow's key. */
static __always_inline void ct_key_build(const struct flow *f, union ct_key *k)
{
	if (f->family == 4) {
		k->v4.src = f->src.v4;
		k->v4.dst = f->dst.v4;
		*(__u32 *)&k->v4.sport = f->ports;
		k->v4.proto = f->proto;
	} else {
		__builtin_memcpy(k->v6.src, f->src.v6, 16);
		__builtin_memcpy(k->v6.dst, f->dst.v6, 16);
		*(__u32 *)&k->v6.sport = f->ports;
		k->v6.proto = f->proto;
	}
}

/* ct_lookup returns the flow's entry, or 0. */
static __always_inline struct ct_value *ct_lookup(const struct flow *f, const union ct_key *k)
{
	struct ct_value *ct;

	if (f->family == 4) {
		ct = bpf_map_lookup_elem(&ct_v4, &k->v4);
		call_site_end("ct_v4 lookup");
	} else {
		ct = bpf_map_lookup_elem(&ct_v6, &k->v6);
		call_site_end("ct_v6 lookup");
	}
	return ct;
}

/* ct_insert writes the flow's entry, replacing any. */
static __always_inline long ct_insert(const struct flow *f, const union ct_key *k, const struct ct_value *v)
{
	long err;

	if (f->family == 4) {
		err = bpf_map_update_elem(&ct_v4, &k->v4, v, BPF_ANY);
		call_site_end("ct_v4 update");
	} else {
		err = bpf_map_update_elem(&ct_v6, &k->v6, v, BPF_ANY);
		call_site_end("ct_v6 update");
	}
	return err;
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
 * timeout for its state: then it is a miss, and the packet takes the ring. */
static __always_inline int ct_expired(const struct ct_value *ct, const struct vip_meta *vip, __u32 now)
{
	return now - ct->last_seen > vip->ct_timeout[ct->state & 3];
}

/* ct_touch records a packet of a live entry: the new state and the time,
 * written only when one of them changed (no store per packet). */
static __always_inline void ct_touch(struct ct_value *ct, const struct flow *f, __u32 now)
{
	__u8 s = ct_state_after(ct->state, f->tcp_flags);

	if (ct->last_seen != now || ct->state != s) {
		ct->last_seen = now;
		ct->state = s;
	}
}

#endif

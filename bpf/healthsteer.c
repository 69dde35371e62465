// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* fulcrum_healthsteer runs at tc egress (TCX) on the load balancer's
 * interfaces. It steers through-datapath health probes: the daemon's probe
 * socket connects to the VIP with SO_MARK set to a mark of its own, and this
 * program sends every packet with that mark to the one backend the mark
 * stands for, as the XDP balancer would in the VIP's mode:
 *   - dsr: the destination MAC becomes the backend's (the source MAC the
 *     egress interface's), the IP packet is untouched;
 *   - ipip: an outer IPv4 or IPv6 header to the backend is put in front of
 *     the IP packet, for the backend's decapsulator.
 * The backend answers from the VIP to this host's own address, so the
 * reply comes back as ordinary traffic (the XDP balancer passes it: it is
 * not addressed to a VIP). Packets whose mark is outside the configured
 * range are not looked at. docs/health.md describes the whole path. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "healthsteer.h"
#include "outer.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Anchor the enums in BTF so bpf2go exports them to Go. */
const enum steer_stat _steer_stat __attribute__((unused));
const enum steer_mode _steer_mode __attribute__((unused));

/* The marks this program owns: [mark_base, mark_base + mark_count). Set by
 * Go before loading; with mark_count 0 no packet is touched. */
volatile const __u32 mark_base = 0;
volatile const __u32 mark_count = 0;

/* mark -> where that mark's probes go. Go (internal/healthsteer) is the only
 * writer. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct steer_target);
	__uint(max_entries, STEER_MAX_TARGETS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} steer_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct steer_stat_table);
	__uint(max_entries, 1);
} steer_stats SEC(".maps");

/* count moves counter s and returns action. */
static __always_inline int count(enum steer_stat s, int action)
{
	__u32 zero = 0;
	struct steer_stat_table *st = bpf_map_lookup_elem(&steer_stats, &zero);

	if (st && s < STEER_STAT_MAX)
		st->count[s]++;
	return action;
}

/* encap puts an outer header from t->saddr to t->daddr in front of the IP
 * packet and fixes the EtherType. It returns 0 or a negative error. */
static __always_inline int encap(struct __sk_buff *skb, const struct steer_target *t)
{
	__u32 inner_len = skb->len - ETH_HLEN;
	__u8 next = skb->protocol == bpf_htons(ETH_P_IP) ? IPPROTO_IPIP : IPPROTO_IPV6;
	__be16 proto;

	if (skb->len < ETH_HLEN || inner_len > 0xffff - sizeof(struct ipv6hdr))
		return -1;
	if (t->family == AF_INET) {
		struct iphdr ip = {
			.version = 4,
			.ihl = 5,
			.tot_len = bpf_htons(inner_len + sizeof(struct iphdr)),
			.frag_off = bpf_htons(IP_DF),
			.ttl = OUTER_TTL,
			.protocol = next,
			.saddr = t->saddr[0],
			.daddr = t->daddr[0],
		};

		ip.check = ipv4_csum(&ip);
		if (bpf_skb_adjust_room(skb, sizeof(ip), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
			return -1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0))
			return -1;
		proto = bpf_htons(ETH_P_IP);
	} else if (t->family == AF_INET6) {
		struct ipv6hdr ip6 = {
			.version = 6,
			.payload_len = bpf_htons(inner_len),
			.nexthdr = next,
			.hop_limit = OUTER_TTL,
		};

		__builtin_memcpy(&ip6.saddr, t->saddr, 16);
		__builtin_memcpy(&ip6.daddr, t->daddr, 16);
		if (bpf_skb_adjust_room(skb, sizeof(ip6), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6))
			return -1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6), 0))
			return -1;
		proto = bpf_htons(ETH_P_IPV6);
	} else {
		return -1;
	}
	return bpf_skb_store_bytes(skb, 2 * ETH_ALEN, &proto, sizeof(proto), 0) ? -1 : 0;
}

SEC("tc")
int fulcrum_healthsteer(struct __sk_buff *skb)
{
	__u32 mark = skb->mark;
	struct steer_target *m, t;

	/* Not one of ours: let the next program (or the stack) have it. */
	if (mark - mark_base >= mark_count)
		return TC_ACT_UNSPEC;
	m = bpf_map_lookup_elem(&steer_targets, &mark);
	if (!m)
		return count(STEER_STAT_NO_ENTRY, TC_ACT_UNSPEC);
	t = *m;

	/* A marked packet that cannot be steered is dropped: sent on to the
	 * VIP it would be balanced to any backend, and the probe would lie. */
	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6))
		return count(STEER_STAT_NOT_IP, TC_ACT_SHOT);
	if (t.mode == STEER_MODE_IPIP) {
		if (encap(skb, &t))
			return count(STEER_STAT_ERROR, TC_ACT_SHOT);
	} else if (t.mode != STEER_MODE_DSR) {
		return count(STEER_STAT_ERROR, TC_ACT_SHOT);
	}
	if (bpf_skb_store_bytes(skb, 0, t.dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, t.smac, ETH_ALEN, 0))
		return count(STEER_STAT_ERROR, TC_ACT_SHOT);
	if (t.ifindex && t.ifindex != skb->ifindex) {
		long rc = bpf_redirect(t.ifindex, 0);

		return count(rc == TC_ACT_REDIRECT ? STEER_STAT_STEERED : STEER_STAT_ERROR, rc);
	}
	return count(STEER_STAT_STEERED, TC_ACT_OK);
}

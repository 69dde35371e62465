/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What every outer IP header Fulcrum writes shares: the XDP balancer's ipip
 * mode (encap.h) and the tc program that steers health probes
 * (healthsteer.c) build theirs from these. */
#ifndef FULCRUM_OUTER_H
#define FULCRUM_OUTER_H

#include <linux/types.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define AF_INET6 10
#define OUTER_TTL 64
#define IP_DF 0x4000

/* ipv4_csum returns the header checksum of a 20-byte IPv4 header whose
 * check field is zero. */
static __always_inline __u16 ipv4_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

#endif

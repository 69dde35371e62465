/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The destination prefilter: one bit per hash of a destination address, set
 * by Go for every address that has a VIP or a fragment policy
 * (internal/datapath/hostfilter.go). A packet whose bit is clear is not for
 * a VIP and goes to the host stack before the connection table is touched:
 * traffic to the balancer's own addresses (SSH, BGP, health replies) costs
 * an inlined array lookup, not a miss in a 1 M-entry table. A set bit only
 * says "maybe": colliding addresses take the normal path, which decides.
 * Go sets an address's bit before any VIP on it is published and clears it
 * only after the last VIP and policy on it are gone, so a packet to a VIP
 * address is never filtered out. docs/datapath.md, "Destination
 * prefilter", has the design and the figures. */
#ifndef FULCRUM_HOSTFILTER_H
#define FULCRUM_HOSTFILTER_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include "maps.h"
#include "flowhash.h"
#include "parse.h"

/* An address's bit is the top 20 bits of host_filter_hash: the word its
 * top 14 (HOST_FILTER_WORDS must be 2^14), the bit in the word the next 6. */
#define HOST_FILTER_WORD_SHIFT (32 - 14)
#define HOST_FILTER_BIT_SHIFT (32 - 14 - 6)
_Static_assert(HOST_FILTER_WORDS == 1 << (32 - HOST_FILTER_WORD_SHIFT), "host_filter size and shift disagree");

/* host_filter_hash is Fibonacci hashing: one multiply by 2^32 / phi. Its
 * top bits depend on every bit of the address (the last octet of an IPv4
 * address, the top byte as loaded, maps one to one onto the top byte), and
 * it costs one multiply on every packet's path where a full mixer costs
 * a chain of five dependent steps. Go's hostFilterHash computes the same:
 * change both or neither. */
static __always_inline __u32 host_filter_hash(__u32 a)
{
	return a * 0x9e3779b1;
}

/* may_be_vip reports whether the flow's destination address may have a VIP
 * or a fragment policy: its bit in host_filter is set. The address word is
 * the IPv4 address or the XOR-folded IPv6 address, as loaded
 * (little-endian), as the flow hash takes them. */
static __always_inline int may_be_vip(const struct flow *f)
{
	__u32 h = host_filter_hash(f->family == 4 ? f->dst.v4 : fold6(f->dst.v6));
	__u32 w = h >> HOST_FILTER_WORD_SHIFT;
	__u64 *word = bpf_map_lookup_elem(&host_filter, &w);

	if (!word)
		return 1; /* cannot happen (w < HOST_FILTER_WORDS): the normal path decides */
	/* One 8-byte load: Go rewrites a word with one 8-byte store. */
	return (*(volatile __u64 *)word >> ((h >> HOST_FILTER_BIT_SHIFT) & 63)) & 1;
}

#endif

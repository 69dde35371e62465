/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The flow hash. pkg/flowhash implements the same function in Go and the
 * two are checked against each other with shared vectors: change both or
 * neither.
 *
 * It is Bob Jenkins' lookup3 final mix over three 32-bit words. Words are
 * the packet's bytes loaded as little-endian u32s (the program only runs on
 * little-endian hosts: bpf2go builds bpfel). IPv6 addresses are folded to one
 * word by XOR first. */
#ifndef FULCRUM_FLOWHASH_H
#define FULCRUM_FLOWHASH_H

#include <linux/types.h>
#include "consts.h"

static __always_inline __u32 rol32(__u32 w, __u32 s)
{
	return (w << s) | (w >> (32 - s));
}

/* jhash3 returns lookup3's hash of three words with an initial value. */
static __always_inline __u32 jhash3(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += 0xdeadbeef + 12 + initval;
	b += 0xdeadbeef + 12 + initval;
	c += 0xdeadbeef + 12 + initval;
	c ^= b; c -= rol32(b, 14);
	a ^= c; a -= rol32(c, 11);
	b ^= a; b -= rol32(a, 25);
	c ^= b; c -= rol32(b, 16);
	a ^= c; a -= rol32(c, 4);
	b ^= a; b -= rol32(a, 14);
	c ^= b; c -= rol32(b, 24);
	return c;
}

/* flow_hash returns the hash of a flow given folded addresses, the port
 * pair as loaded from the L4 header (source port in the low 16 bits on
 * little-endian) and the protocol. */
static __always_inline __u32 flow_hash(__u32 src, __u32 dst, __u32 ports, __u8 proto)
{
	return jhash3(src, dst, ports, FLOW_HASH_SEED + proto);
}

/* fold6 folds an IPv6 address into one word. */
static __always_inline __u32 fold6(const __be32 *a)
{
	return a[0] ^ a[1] ^ a[2] ^ a[3];
}

/* ring_slot maps a 32-bit hash onto [0, size) with a multiply and a shift
 * (Lemire's reduction) instead of a division: uniform for any size, and
 * several nanoseconds cheaper than a modulo per packet. */
static __always_inline __u32 ring_slot(__u32 hash, __u32 size)
{
	return (__u32)(((__u64)hash * size) >> 32);
}

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Constants and map layouts of the backend-side decapsulation program
 * (bpf/decap.c). Go (internal/decap) reads them through BTF (bpf2go -type). */
#ifndef FULCRUM_DECAP_H
#define FULCRUM_DECAP_H

#include <linux/types.h>

/* Capacity of each VIP set (IPv4 and IPv6). */
#define DECAP_MAX_VIPS 4096

/* Counters of the decap_stats map. Every packet moves exactly one verdict
 * counter (the first five); a decapsulated packet also moves one of the
 * four family counters and, if it carried a congestion mark, DECAP_STAT_CE. */
enum decap_stat {
	DECAP_STAT_PASS_NOT_ENCAP = 0, /* not IPv4/IPv6 with protocol 4 or 41 */
	DECAP_STAT_PASS_FOREIGN,       /* encapsulated, inner destination not a VIP */
	DECAP_STAT_DROP_MALFORMED,     /* encapsulated, a header is broken or cut */
	DECAP_STAT_DROP_ECN,           /* outer CE mark, inner not ECN-capable */
	DECAP_STAT_DECAP,              /* outer header removed, passed to the stack */
	DECAP_STAT_DECAP_4IN4,         /* inner IPv4 in outer IPv4 */
	DECAP_STAT_DECAP_6IN4,         /* inner IPv6 in outer IPv4 (protocol 41) */
	DECAP_STAT_DECAP_4IN6,         /* inner IPv4 in outer IPv6 */
	DECAP_STAT_DECAP_6IN6,         /* inner IPv6 in outer IPv6 */
	DECAP_STAT_CE,                 /* outer CE mark copied to the inner header */
	DECAP_STAT_MAX,
};

/* decap_stat_table is the per-CPU counter table: one lookup per packet. */
struct decap_stat_table {
	__u64 count[DECAP_STAT_MAX];
};

#endif

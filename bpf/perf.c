// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* Programs of the benchmark rig (internal/perf). None of them is part of the
 * load balancer; they surround it:
 *   gen_frames   a traffic generator, run with BPF_PROG_RUN in live-frame
 *                mode on the generator's veth;
 *   gen_flows    the same generator over a wide flow set (source address
 *                and port), for a connection table of a million entries;
 *   ceiling_fwd  the least an XDP forwarder does: MAC rewrite and a devmap
 *                redirect to the egress port, the ceiling of every figure;
 *   sink_count   counts what reaches the backends, per backend, and drops
 *                it;
 *   ct_walk      gives every BPF_PROG_RUN repeat the next flow of a large
 *                set, then tail-calls the balancer: fills and walks a big
 *                connection table.
 * Frames are Ethernet + IPv4 without options + TCP or UDP; the Go side
 * builds them so. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Every generated frame is this long: a 64-byte frame on the wire (the
 * veth carries no FCS, so the 4 bytes of one are data here). */
#define GEN_FRAME_LEN 64
/* Offsets in a frame of Ethernet + IPv4 without options. */
#define L3_OFF 14
#define L4_OFF 34
#define UDP_CSUM_OFF (L4_OFF + 6)
#define TCP_CSUM_OFF (L4_OFF + 16)

/* gen_plan is the generator's template and flow plan. */
struct gen_plan {
	/* Every byte of every frame: live-frame pages are recycled with
	 * whatever the last hop left in them, so nothing is assumed. The
	 * source port and the L4 checksum are then fixed up per frame. */
	__u8 frame[GEN_FRAME_LEN];
	/* Frame i on CPU c gets source port
	 * sport_base + c * flows + (i mod flows): one flow set per CPU. */
	__u16 sport_base;
	__u16 flows; /* a power of two */
	/* gen_flows only: frame i on CPU c is flow
	 * f = c * wide_flows + (i mod wide_flows) (a power of two), with
	 * source port sport_base + f mod 2^WIDE_PORT_BITS and the template's
	 * source address plus f / 2^WIDE_PORT_BITS. */
	__u32 wide_flows;
};

/* The source ports of a gen_flows address: 16 384, as many as gen_frames
 * gives each CPU. */
#define WIDE_PORT_BITS 14

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct gen_plan);
	__uint(max_entries, 1);
} gen_config SEC(".maps");

/* gen_seq counts the frames each CPU generated. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} gen_seq SEC(".maps");

/* csum_replace16 returns checksum csum after one 16-bit word of the data
 * it covers changed from old to new (RFC 1624, eqn. 3). Byte order does
 * not matter as long as all three are in the same one. */
static __always_inline __u16 csum_replace16(__u16 csum, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~csum + (__u32)(__u16)~old + new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* csum_replace32 is csum_replace16 for a 32-bit word, in network order. */
static __always_inline __u16 csum_replace32(__u16 csum, __u32 old, __u32 new)
{
	csum = csum_replace16(csum, old >> 16, new >> 16);
	return csum_replace16(csum, old & 0xffff, new & 0xffff);
}

/* generate writes the template over the frame, gives it the next flow of
 * this CPU's flow set with correct checksums, and sends it out of the
 * ingress device (in live-frame mode XDP_TX transmits there). The flow set
 * is source ports only, or with wide (a constant, so that gen_frames keeps
 * its per-frame cost) source addresses too. */
static __always_inline int generate(struct xdp_md *ctx, const int wide)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, cpu = bpf_get_smp_processor_id();
	struct gen_plan *cfg = bpf_map_lookup_elem(&gen_config, &zero);
	__u64 *seq = bpf_map_lookup_elem(&gen_seq, &zero);
	__u16 *sport, *csum, port;
	struct iphdr *ip;
	__u32 f, saddr;

	if (!cfg || !seq || data + GEN_FRAME_LEN > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, cfg->frame, GEN_FRAME_LEN);

	/* gen_frames's order of old, which keeps its code as it was. */
	if (!wide) {
		port = bpf_htons(cfg->sport_base + cpu * cfg->flows + (*seq & (cfg->flows - 1)));
		*seq += 1;
	}
	ip = data + L3_OFF;
	sport = data + L4_OFF;
	if (ip->protocol == IPPROTO_UDP)
		csum = data + UDP_CSUM_OFF;
	else
		csum = data + TCP_CSUM_OFF;
	if (wide) {
		f = cpu * cfg->wide_flows + (*seq & (cfg->wide_flows - 1));
		port = bpf_htons(cfg->sport_base + (f & ((1 << WIDE_PORT_BITS) - 1)));
		/* The source address is in the IP header checksum and in the
		 * L4 one's pseudo-header. */
		saddr = bpf_htonl(bpf_ntohl(ip->saddr) + (f >> WIDE_PORT_BITS));
		ip->check = csum_replace32(ip->check, ip->saddr, saddr);
		*csum = csum_replace32(*csum, ip->saddr, saddr);
		ip->saddr = saddr;
		*seq += 1;
	}
	*csum = csum_replace16(*csum, *sport, port);
	if (ip->protocol == IPPROTO_UDP && *csum == 0)
		*csum = 0xffff; /* 0 means "no checksum" in UDP */
	*sport = port;
	return XDP_TX;
}

SEC("xdp")
int gen_frames(struct xdp_md *ctx)
{
	return generate(ctx, 0);
}

SEC("xdp")
int gen_flows(struct xdp_md *ctx)
{
	return generate(ctx, 1);
}

/* ceiling_macs holds the MAC addresses ceiling_fwd writes. */
struct ceiling_macs {
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ceiling_macs);
	__uint(max_entries, 1);
} ceiling_config SEC(".maps");

/* ceiling_port[0] is the egress interface (its ifindex, resolved in the
 * namespace of whoever writes it). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} ceiling_port SEC(".maps");

/* ceiling_fwd rewrites both MAC addresses and redirects to the egress
 * port. */
SEC("xdp")
int ceiling_fwd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	struct ceiling_macs *cfg = bpf_map_lookup_elem(&ceiling_config, &zero);

	if (!cfg || (void *)(eth + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(eth->h_dest, cfg->dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->src, ETH_ALEN);
	return bpf_redirect_map(&ceiling_port, 0, 0);
}

/* ceiling_tx rewrites both MAC addresses and sends the frame back out of
 * the port it came in on: the ceiling of the one-armed configurations. */
SEC("xdp")
int ceiling_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	struct ceiling_macs *cfg = bpf_map_lookup_elem(&ceiling_config, &zero);

	if (!cfg || (void *)(eth + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(eth->h_dest, cfg->dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->src, ETH_ALEN);
	return XDP_TX;
}

/* How sink_count tells backends apart. */
enum sink_key {
	/* by the last byte of the destination MAC (dsr, ceiling) */
	SINK_BY_MAC = 0,
	/* by the last byte of the (outer) IPv4 destination (ipip, nat) */
	SINK_BY_IP = 1,
};

const enum sink_key _sink_key __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} sink_mode SEC(".maps");

/* sink_counts[b] counts the IPv4 frames whose key byte is b. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 256);
} sink_counts SEC(".maps");

/* sink_count counts and drops IPv4 frames; anything else (ARP, IPv6
 * neighbour discovery) goes on to the host stack. */
SEC("xdp")
int sink_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + L3_OFF;
	__u32 zero = 0, key;
	__u32 *mode;
	__u64 *n;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	mode = bpf_map_lookup_elem(&sink_mode, &zero);
	if (mode && *mode == SINK_BY_IP)
		key = bpf_ntohl(ip->daddr) & 0xff;
	else
		key = eth->h_dest[5];
	n = bpf_map_lookup_elem(&sink_counts, &key);
	if (n)
		*n += 1;
	return XDP_DROP;
}

/* walk_plan is the flow set of ct_walk. Flow i (CPU c walks i from
 * c * flows to (c + 1) * flows - 1, then again) has
 *   source address  src_base + i / 256, source port 10000 + i % 256,
 *   VIP v = i mod vips at vip_base + v mod vip_addrs,
 *   port dport_base + v / vip_addrs.
 * Addresses are in host byte order here. */
struct walk_plan {
	__u32 src_base;
	__u32 vip_base;
	__u32 flows;
	__u32 vips;
	__u32 vip_addrs;
	__u16 dport_base;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct walk_plan);
	__uint(max_entries, 1);
} walk_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} walk_seq SEC(".maps");

/* walk_target[0] is the balancer. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} walk_target SEC(".maps");

/* ct_walk rewrites the addresses and ports of an IPv4 TCP or UDP frame to
 * those of this CPU's next flow, then tail-calls the balancer. Checksums
 * are left stale: the balancer does not read them. */
SEC("xdp")
int ct_walk(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + L3_OFF;
	__u16 *ports = data + L4_OFF;
	__u32 zero = 0, cpu = bpf_get_smp_processor_id();
	struct walk_plan *cfg = bpf_map_lookup_elem(&walk_config, &zero);
	__u64 *seq = bpf_map_lookup_elem(&walk_seq, &zero);
	__u32 i, v;

	if (!cfg || !seq || (void *)(ports + 2) > end || !cfg->flows || !cfg->vips || !cfg->vip_addrs)
		return XDP_ABORTED;
	i = cpu * cfg->flows + (__u32)(*seq % cfg->flows);
	*seq += 1;
	v = i % cfg->vips;
	ip->saddr = bpf_htonl(cfg->src_base + i / 256);
	ip->daddr = bpf_htonl(cfg->vip_base + v % cfg->vip_addrs);
	ports[0] = bpf_htons(10000 + i % 256);
	ports[1] = bpf_htons(cfg->dport_base + v / cfg->vip_addrs);
	bpf_tail_call(ctx, &walk_target, 0);
	return XDP_ABORTED;
}

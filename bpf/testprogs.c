// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* Programs used only by the benchmarks and tests: the floor every figure
 * is a ratio to, and a wrapper that makes each BPF_PROG_RUN repeat a new
 * flow before tail-calling the balancer. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* bench_floor swaps the MAC addresses and transmits: the least any XDP
 * forwarder does. */
SEC("xdp")
int bench_floor(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	unsigned char tmp[ETH_ALEN];

	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	return XDP_TX;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} bench_target SEC(".maps");

/* bench_seq is shared by all CPUs, so flows stay new when the benchmark
 * moves to another CPU between runs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} bench_seq SEC(".maps");

/* bench_newflow gives every run a source address never seen before (an
 * IPv4 packet without options is assumed), then tail-calls bench_target. */
SEC("xdp")
int bench_newflow(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__u32 zero = 0, *seq;

	if ((void *)(ip + 1) > end)
		return XDP_ABORTED;
	seq = bpf_map_lookup_elem(&bench_seq, &zero);
	if (!seq)
		return XDP_ABORTED;
	__sync_fetch_and_add(seq, 1);
	ip->saddr = *seq;
	bpf_tail_call(ctx, &bench_target, 0);
	return XDP_ABORTED;
}

/* bench_tail tail-calls bench_target without touching the packet: with
 * the floor as target it measures what the wrapper itself costs. */
SEC("xdp")
int bench_tail(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &bench_target, 0);
	return XDP_ABORTED;
}

/* bench_ipip undoes the previous repeat's IPv4-in-IPv4 encapsulation
 * (BPF_PROG_RUN keeps the buffer, and the data pointer, between repeats),
 * so that every repeat encapsulates the same packet, then tail-calls
 * bench_target. The MAC addresses are left as the balancer wrote them:
 * it reads neither. */
SEC("xdp")
int bench_ipip(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > end)
		return XDP_ABORTED;
	if (eth->h_proto == bpf_htons(ETH_P_IP) && ip->protocol == IPPROTO_IPIP) {
		if (bpf_xdp_adjust_head(ctx, sizeof(struct iphdr)))
			return XDP_ABORTED;
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		eth = data;
		if ((void *)(eth + 1) > end)
			return XDP_ABORTED;
		eth->h_proto = bpf_htons(ETH_P_IP);
	}
	bpf_tail_call(ctx, &bench_target, 0);
	return XDP_ABORTED;
}

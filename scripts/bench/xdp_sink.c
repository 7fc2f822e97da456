// XDP sink for scripts/bench-throughput.sh, attached to the sink namespace's veth.
//
// Drops the benchmark's UDP frames (plain, behind one 802.1Q tag, or Geneve, which is UDP too)
// at the earliest point, so the sink namespace's kernel spends nothing on them. The count is the
// veth's own per-queue counter `rx_queue_0_xdp_drops` (ethtool -S), which moves once per
// XDP_DROP and never for anything else; `rx_packets` is no use, it also counts what goes on to
// the stack. Everything that is not UDP over IPv4 (ARP, the ICMP of the latency probe) is passed
// on, so the sink still answers ARP and ping. The program is frags-aware ("xdp.frags"): with an
// MTU of 9000 a frame arrives in several buffers, and only the first, which holds the headers,
// is looked at.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>

#define SEC(name) __attribute__((section(name), used))

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

SEC("xdp.frags")
int xdp_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	__be16 proto;
	struct iphdr *ip;

	if (l3 > end)
		return XDP_PASS;
	proto = eth->h_proto;
	if (proto == __builtin_bswap16(ETH_P_8021Q)) {
		struct vlan_tag *tag = l3;

		if ((void *)(tag + 1) > end)
			return XDP_PASS;
		proto = tag->proto;
		l3 = tag + 1;
	}
	if (proto != __builtin_bswap16(ETH_P_IP))
		return XDP_PASS;
	ip = l3;
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";

//go:build ignore

/* loupe's kernel-drop tracepoint: one program on skb:kfree_skb (tp_btf).
 *
 *   loupe_kfree_skb  every packet the kernel frees as dropped, anywhere:
 *                    skips reasons on the deny-list (kdrop_deny), drops
 *                    with neither device nor socket (no namespace to tie
 *                    them to: counted), and what the per-CPU rate limit
 *                    holds back (counted); writes the rest to the shared
 *                    events ring as a LOUPE_EF_KERNEL drop record.
 *
 * Its cost falls on every freed-as-dropped packet of the machine: one array
 * lookup for the deny-list, a few pointer reads, one token-bucket lookup.
 * Which agent reports a record is decided in Go (contract.ReportsNetns),
 * by the netns_ino this program writes. Kernel types come through CO-RE, so
 * the object runs on any kernel with BTF. */

#include "common.h"
#include "ring.h"
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char __license[] SEC("license") = "Dual MIT/GPL";

/* The few kernel fields read, laid out by CO-RE at load. */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sock_common {
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned char *head;
	__u16 network_header;
	__u16 transport_header;
	__be16 protocol;
} __attribute__((preserve_access_index));

/* Set by the loader through spec.Variables before load. */
volatile const __u64 kdrop_ev_rate = 500;  /* kernel-drop events per second, per CPU */
volatile const __u64 kdrop_ev_burst = 500; /* bucket depth, per CPU */

/* Reasons at or above this are never denied (subsystem reasons carry high bits). */
#define KDROP_DENY_SLOTS 1024

/* kdrop_deny[reason] != 0: the reason is not reported. Written by Go. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KDROP_DENY_SLOTS);
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kdrop_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct token_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kdrop_ev_bucket SEC(".maps");

static __always_inline unsigned int netns_of(struct sk_buff *skb, __u32 *ifindex)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		*ifindex = BPF_CORE_READ(dev, ifindex);
		return BPF_CORE_READ(dev, nd_net.net, ns.inum);
	}
	struct sock *sk = BPF_CORE_READ(skb, sk);
	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return 0;
}

/* read_headers fills the addresses and ports from the packet's network
 * and transport headers, as far as they are set and readable. */
static __always_inline void read_headers(struct sk_buff *skb, struct loupe_event *ev)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 l4 = 0;

	if (!head || nh == (__u16)~0U)
		return;
	__u8 vers = 0;
	if (bpf_probe_read_kernel(&vers, 1, head + nh))
		return;
	vers >>= 4;
	if (vers == 4) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return;
		ev->family = 4;
		__builtin_memcpy(ev->saddr, &ip.saddr, 4);
		__builtin_memcpy(ev->daddr, &ip.daddr, 4);
		ev->pkt_len = bpf_ntohs(ip.tot_len);
		l4 = ip.protocol;
		if (th == (__u16)~0U || th == nh)
			th = nh + ip.ihl * 4;
	} else if (vers == 6) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return;
		ev->family = 6;
		__builtin_memcpy(ev->saddr, &ip6.saddr, 16);
		__builtin_memcpy(ev->daddr, &ip6.daddr, 16);
		ev->pkt_len = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
		l4 = ip6.nexthdr; /* extension headers are not walked */
		if (th == (__u16)~0U || th == nh)
			th = nh + sizeof(ip6);
	} else {
		return;
	}
	ev->proto = l4;
	if (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP || l4 == IPPROTO_SCTP) {
		__be16 ports[2];
		if (bpf_probe_read_kernel(ports, sizeof(ports), head + th) == 0) {
			ev->sport = bpf_ntohs(ports[0]);
			ev->dport = bpf_ntohs(ports[1]);
		}
		if (l4 == IPPROTO_TCP) {
			__u8 fl = 0;
			if (bpf_probe_read_kernel(&fl, 1, head + th + 13) == 0)
				ev->tcp_flags = fl;
		}
	} else if (l4 == IPPROTO_ICMP || l4 == IPPROTO_ICMPV6) {
		__u8 tc[2];
		if (bpf_probe_read_kernel(tc, sizeof(tc), head + th) == 0) {
			ev->icmp_type = tc[0];
			ev->icmp_code = tc[1];
		}
	}
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(loupe_kfree_skb, struct sk_buff *skb, void *location, int reason)
{
	__u32 r = reason;
	if (r < KDROP_DENY_SLOTS) {
		__u8 *deny = bpf_map_lookup_elem(&kdrop_deny, &r);
		if (deny && *deny)
			return 0;
	}
	__u32 ifindex = 0;
	unsigned int inum = netns_of(skb, &ifindex);
	if (!inum) {
		stat_inc(STAT_KDROP_NO_NETNS);
		return 0;
	}
	__u64 now = bpf_ktime_get_boot_ns();
	if (!bucket_take(&kdrop_ev_bucket, now, kdrop_ev_rate, kdrop_ev_burst, STAT_KDROP_LIMITED))
		return 0;
	struct loupe_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(STAT_RINGBUF_FULL);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = now;
	ev->type = LOUPE_EVENT_DROP;
	ev->verdict = LOUPE_VERDICT_DROPPED;
	ev->flags = LOUPE_EF_KERNEL;
	ev->ifindex = ifindex;
	ev->kernel_reason = r;
	ev->netns_ino = inum;
	ev->location = (__u64)location;
	read_headers(skb, ev);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

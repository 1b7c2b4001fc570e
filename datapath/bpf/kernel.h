//go:build ignore

/* The kernel types loupe's tracepoint programs read, laid out by CO-RE at
 * load (only the fields used are declared), and the helpers that take a
 * namespace and addresses out of them. Shared by kdrop.c and tcp.c. */
#pragma once

#include "common.h"
#include <linux/in6.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

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
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct tcp_sock {
	__u32 total_retrans;
} __attribute__((preserve_access_index));

/* TCP's control block in skb->cb (tcp_gso_segs sits in an anonymous
 * union, which CO-RE finds by name). tcp_flags is a __u8 on older kernels:
 * only its low byte is used. */
struct tcp_skb_cb {
	__u16 tcp_gso_segs;
	__u16 tcp_flags;
} __attribute__((preserve_access_index));

struct sk_buff {
	unsigned int len;
	char cb[48];
	struct net_device *dev;
	struct sock *sk;
	unsigned char *head;
	__u16 network_header;
	__u16 transport_header;
	__be16 protocol;
} __attribute__((preserve_access_index));

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

static __always_inline unsigned int sock_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* sock_tuple fills the connection's addresses and ports from the socket:
 * the local side as source, or as destination when reverse is set. An
 * IPv4-mapped IPv6 socket is left as IPv6 (the decoder unmaps it). */
static __always_inline void sock_tuple(const struct sock *sk, struct loupe_event *ev, int reverse)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u16 lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	__u16 rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__u8 *local = reverse ? ev->daddr : ev->saddr;
	__u8 *remote = reverse ? ev->saddr : ev->daddr;

	if (family == 2 /* AF_INET */) {
		ev->family = 4;
		bpf_core_read(local, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(remote, 4, &sk->__sk_common.skc_daddr);
	} else if (family == 10 /* AF_INET6 */) {
		ev->family = 6;
		bpf_core_read(local, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(remote, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		return;
	}
	ev->proto = IPPROTO_TCP;
	ev->sport = reverse ? rport : lport;
	ev->dport = reverse ? lport : rport;
}

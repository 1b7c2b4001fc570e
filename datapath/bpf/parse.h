//go:build ignore

/* Header parsing shared by XDP and TCX. Works on [data, data_end) and the
 * packet's full length, so a TCX caller can tell "truncated" (malformed)
 * from "not in the linear area yet" (pull and parse again). */
#pragma once

#include "common.h"

#define PARSE_OK 0
#define PARSE_NOT_IP 1    /* not IPv4/IPv6: passed unchecked (ARP, ...) */
#define PARSE_MALFORMED 2 /* truncated or invalid L3/L4 header: drop 134 */
#define PARSE_NEED_PULL 3 /* headers exist but are not in the linear area */

#define PKT_F_FRAG 0x01  /* non-first fragment: there is no L4 header */
#define PKT_F_NO_CT 0x02 /* ICMPv6 neighbour discovery / MLD: not tracked */

#define IPV6_MAX_EXT_HDRS 4
#define IPV6_MAX_L4_OFF 1024 /* bound for the verifier; longer chains are malformed */

struct pkt {
	__u32 saddr[4]; /* network order; IPv4 uses [0] */
	__u32 daddr[4];
	__u32 len;      /* whole packet from the Ethernet header */
	__u32 segs;     /* wire packets this buffer stands for (GSO), >= 1 */
	__u16 sport;    /* host order; ICMP echo: identifier */
	__u16 dport;
	__u8 family;    /* 4 or 6 */
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 flags;     /* PKT_F_* */
	__u16 payload_off; /* TCP/UDP: L4 payload offset from the Ethernet header (l7.h) */
	__u16 l4_off;      /* L4 header offset from the Ethernet header (service.h rewrites) */
};

/* Ways to "run out of bytes": beyond what the IP header says the packet
 * holds is malformed; beyond the linear data but within it needs a pull. */
static __always_inline int short_rc(__u64 need, __u64 have_by_header)
{
	return need > have_by_header ? PARSE_MALFORMED : PARSE_NEED_PULL;
}

static __always_inline int parse_l4(void *l4, void *data_end, __u32 l4_len, int frag, struct pkt *p)
{
	__u8 *b = l4;

	switch (p->proto) {
	case IPPROTO_TCP: {
		if (l4_len < 20)
			return PARSE_MALFORMED;
		if (l4 + 20 > data_end)
			return PARSE_NEED_PULL;
		__u32 doff = (b[12] >> 4) * 4;
		if (doff < 20 || doff > l4_len)
			return PARSE_MALFORMED;
		p->sport = ((__u16)b[0] << 8) | b[1];
		p->dport = ((__u16)b[2] << 8) | b[3];
		p->tcp_flags = b[13];
		p->payload_off += doff;
		return PARSE_OK;
	}
	case IPPROTO_UDP: {
		if (l4_len < 8)
			return PARSE_MALFORMED;
		if (l4 + 8 > data_end)
			return PARSE_NEED_PULL;
		__u32 ulen = ((__u32)b[4] << 8) | b[5];
		/* A first fragment's UDP length covers the whole datagram; a
		 * zero length is legal only for jumbo (BIG TCP-sized) payloads. */
		if (!frag && (ulen < 8 || ulen > l4_len) && !(ulen == 0 && l4_len > 0xffff))
			return PARSE_MALFORMED;
		p->sport = ((__u16)b[0] << 8) | b[1];
		p->dport = ((__u16)b[2] << 8) | b[3];
		p->payload_off += 8;
		return PARSE_OK;
	}
	case IPPROTO_SCTP: {
		if (l4_len < 12)
			return PARSE_MALFORMED;
		if (l4 + 12 > data_end)
			return PARSE_NEED_PULL;
		p->sport = ((__u16)b[0] << 8) | b[1];
		p->dport = ((__u16)b[2] << 8) | b[3];
		return PARSE_OK;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		if (l4_len < 8)
			return PARSE_MALFORMED;
		if (l4 + 8 > data_end)
			return PARSE_NEED_PULL;
		p->icmp_type = b[0];
		p->icmp_code = b[1];
		__u8 t = b[0];
		if (p->proto == IPPROTO_ICMP) {
			if (t == 8 || t == 0) /* echo request / reply */
				p->sport = ((__u16)b[4] << 8) | b[5];
		} else {
			if (t == 128 || t == 129)
				p->sport = ((__u16)b[4] << 8) | b[5];
			else if ((t >= 130 && t <= 137) || t == 143)
				p->flags |= PKT_F_NO_CT;
		}
		return PARSE_OK;
	}
	}
	return PARSE_OK;
}

static __always_inline int parse_ipv4(void *l3, void *data_end, __u32 l3_len, struct pkt *p)
{
	struct iphdr *ip = l3;

	p->family = 4;
	if ((void *)(ip + 1) > data_end)
		return short_rc(sizeof(*ip), l3_len);
	__u32 ihl = ip->ihl * 4;
	if (ip->version != 4 || ihl < sizeof(*ip))
		return PARSE_MALFORMED;
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (tot == 0 && l3_len > 0xffff) /* BIG TCP */
		tot = l3_len;
	if (tot < ihl || tot > l3_len)
		return PARSE_MALFORMED;
	p->proto = ip->protocol;
	p->saddr[0] = ip->saddr;
	p->daddr[0] = ip->daddr;
	__u16 frag = bpf_ntohs(ip->frag_off);
	if (frag & 0x1fff) {
		p->flags |= PKT_F_FRAG;
		return PARSE_OK;
	}
	p->payload_off = sizeof(struct ethhdr) + ihl;
	p->l4_off = p->payload_off;
	return parse_l4(l3 + ihl, data_end, tot - ihl, frag & 0x2000, p);
}

struct ipv6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
	__u16 frag_off; /* fragment header only */
	__u32 _rest;
};

static __always_inline int parse_ipv6(void *l3, void *data_end, __u32 l3_len, struct pkt *p)
{
	struct ipv6hdr *ip6 = l3;

	p->family = 6;
	if ((void *)(ip6 + 1) > data_end)
		return short_rc(sizeof(*ip6), l3_len);
	if (ip6->version != 6)
		return PARSE_MALFORMED;
	__u32 end = bpf_ntohs(ip6->payload_len) + sizeof(*ip6); /* L3 bytes per header */
	if (end == sizeof(*ip6) && l3_len > 0xffff + sizeof(*ip6)) /* BIG TCP */
		end = l3_len;
	if (end > l3_len)
		return PARSE_MALFORMED;
	__builtin_memcpy(p->saddr, &ip6->saddr, 16);
	__builtin_memcpy(p->daddr, &ip6->daddr, 16);

	__u8 nh = ip6->nexthdr;
	__u32 off = sizeof(*ip6);
	int frag = 0;
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT_HDRS; i++) {
		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
		    nh != IPPROTO_FRAGMENT)
			break;
		if (off > IPV6_MAX_L4_OFF)
			return PARSE_MALFORMED;
		struct ipv6_ext *ext = l3 + off;
		if ((void *)(ext + 1) > data_end)
			return short_rc(off + sizeof(*ext), end);
		if (nh == IPPROTO_FRAGMENT) {
			nh = ext->nexthdr;
			if (bpf_ntohs(ext->frag_off) & 0xfff8) {
				p->proto = nh;
				p->flags |= PKT_F_FRAG;
				return PARSE_OK;
			}
			frag = 1;
			off += 8;
		} else {
			nh = ext->nexthdr;
			off += ((__u32)ext->hdrlen + 1) * 8;
		}
	}
	p->proto = nh;
	if (off > IPV6_MAX_L4_OFF || off > end)
		return PARSE_MALFORMED;
	p->payload_off = sizeof(struct ethhdr) + off;
	p->l4_off = p->payload_off;
	return parse_l4(l3 + off, data_end, end - off, frag, p);
}

/* parse_packet fills p from an Ethernet frame of len bytes whose linear part is
 * [data, data_end). */
static __always_inline int parse_packet(void *data, void *data_end, __u32 len, struct pkt *p)
{
	struct ethhdr *eth = data;

	p->len = len;
	p->family = 4;
	if ((void *)(eth + 1) > data_end)
		return short_rc(sizeof(*eth), len);
	__u32 l3_len = len - sizeof(*eth);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(eth + 1, data_end, l3_len, p);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(eth + 1, data_end, l3_len, p);
	return PARSE_NOT_IP;
}

/* Largest header area pulled into the linear part when headers straddle it. */
#define PULL_LEN 256

static __always_inline int parse_skb(struct __sk_buff *skb, struct pkt *p)
{
	int rc = parse_packet((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, p);
	if (rc != PARSE_NEED_PULL)
		return rc;
	__u32 want = skb->len < PULL_LEN ? skb->len : PULL_LEN;
	if (bpf_skb_pull_data(skb, want))
		return PARSE_MALFORMED;
	rc = parse_packet((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, p);
	return rc == PARSE_NEED_PULL ? PARSE_MALFORMED : rc;
}

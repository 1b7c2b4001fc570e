//go:build ignore

/* Connection tracking, one LRU table for the node. A key is taken from the
 * endpoint's side of its host veth (local = pod address, remote = peer), so
 * both directions of a connection hit the same entry with one lookup, and
 * two local pods talking keep separate entries (one per veth): each side's
 * policy is decided on its own. */
#pragma once

#include "common.h"
#include "parse.h"

struct ct_key {
	__u8 local[16];  /* pod side, network order; IPv4 in the first 4 bytes */
	__u8 remote[16];
	__u32 ifindex;   /* host-side veth */
	__u16 lport;     /* host order; ICMP echo: identifier in lport */
	__u16 rport;
	__u8 proto;
	__u8 family;
	__u16 _pad;
};

struct ct_entry {
	__u64 first_seen;  /* bpf_ktime_get_boot_ns */
	__u64 last_seen;
	__u64 last_report; /* last event for this connection (periodic records) */
	__u64 packets_fwd; /* in first_dir */
	__u64 bytes_fwd;
	__u64 packets_rev;
	__u64 bytes_rev;
	__u32 rule_id;     /* policy rule that allowed the connection, 0 for none */
	__u8 first_dir;    /* LOUPE_DIR_* of the first packet */
	__u8 match_type;   /* LOUPE_MATCH_* */
	__u8 tcp_flags_fwd; /* union of TCP flags seen in each direction */
	__u8 tcp_flags_rev;
	__u64 handshake_ns; /* TCP: SYN to SYN-ACK (client's veth) or SYN to the client's ACK (server's veth); 0 = not yet */
	__u32 svc_id;       /* frontend the connection was translated from (service.h), 0 = none */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

static __always_inline void ct_key_of(struct ct_key *k, const struct pkt *p, __u32 ifindex, __u8 dir)
{
	/* From the pod (egress), the pod is the source; to the pod, the destination. */
	if (dir == LOUPE_DIR_EGRESS) {
		__builtin_memcpy(k->local, p->saddr, 16);
		__builtin_memcpy(k->remote, p->daddr, 16);
		k->lport = p->sport;
		k->rport = p->dport;
	} else {
		__builtin_memcpy(k->local, p->daddr, 16);
		__builtin_memcpy(k->remote, p->saddr, 16);
		k->lport = p->dport;
		k->rport = p->sport;
	}
	/* Echo request and reply carry the same identifier: keep it on one side. */
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		k->lport = p->sport;
		k->rport = 0;
	}
	k->ifindex = ifindex;
	k->proto = p->proto;
	k->family = p->family;
}

/* ct_handshake times a TCP handshake on the entry once. On the client's
 * veth (first packet left the pod) it runs from the SYN to the SYN-ACK,
 * which is what the client's connect() waits for. On the server's veth it
 * runs from the SYN to the client's first ACK: the nearest it can see to
 * the client's connect() returning. An entry made mid-stream (no SYN)
 * gets no timing. */
static __always_inline void ct_handshake(struct ct_entry *e, const struct pkt *p, int reply, __u64 now)
{
	if (e->handshake_ns || p->proto != IPPROTO_TCP || !(e->tcp_flags_fwd & TCP_FLAG_SYN))
		return;
	__u8 fl = p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK);
	int done;
	if (e->first_dir == LOUPE_DIR_EGRESS)
		done = reply && fl == (TCP_FLAG_SYN | TCP_FLAG_ACK);
	else
		done = !reply && fl == TCP_FLAG_ACK && (e->tcp_flags_rev & TCP_FLAG_SYN);
	if (done) {
		__u64 d = now - e->first_seen;
		e->handshake_ns = d ? d : 1;
	}
}

/* A SYN without ACK on a connection that already saw FIN or RST starts a new one. */
static __always_inline int ct_is_reopen(const struct ct_entry *e, const struct pkt *p)
{
	if ((p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return 0;
	return ((e->tcp_flags_fwd | e->tcp_flags_rev) & (TCP_FLAG_FIN | TCP_FLAG_RST)) != 0;
}

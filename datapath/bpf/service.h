//go:build ignore

/* ClusterIP Service translation in the from-pod program, before egress
 * policy, so policy judges the backend pod's identity (docs/datapath.md,
 * "Services").
 *
 *   svc_frontends  {ClusterIP, port, proto} -> frontend id, backend count
 *   svc_slots      {frontend id, slot}      -> backend id (slots 0..count-1)
 *   svc_backends   backend id               -> backend address, port
 *   svc_revnat     frontend id              -> ClusterIP, port (replies)
 *   svc_conns      original tuple (LRU)     -> chosen backend (id and address)
 *   svc_affinity   {frontend id, client}    -> backend (sessionAffinity ClientIP)
 *
 * A packet to a frontend keeps the backend its connection chose (svc_conns)
 * while that backend exists, and a TCP connection keeps it after it was
 * removed too (UDP picks again); a new connection picks a random ready slot.
 * Conntrack keys the connection on the translated tuple and keeps the
 * frontend id, so the reply on the to-pod side finds it with its usual
 * lookup and gets its source turned back into the ClusterIP. A frontend
 * with no ready backend answers at once with ICMP port unreachable, which
 * fails a TCP connect with ECONNREFUSED as kube-proxy's REJECT does.
 *
 * Hairpin (a pod reaching itself): the source becomes SVC_HAIRPIN_V4 and
 * the packet goes straight back into the pod (bpf_redirect_peer); the
 * pod's reply to that address is un-SNATed, matched to the client's
 * conntrack entry as a reply, reverse-translated and sent back the same
 * way. A pod talking to itself is not judged by its ingress policy.
 *
 * Cost for a packet to no Service: one hash lookup (TCP/UDP only). To a
 * Service: three lookups for an established connection, plus the rewrite. */
#pragma once

#include "common.h"
#include "parse.h"
#include "endpoint.h"
#include "conntrack.h"

#define SVC_F_AFFINITY 0x01      /* frontend: sessionAffinity ClientIP */
#define SVC_BE_TERMINATING 0x01  /* backend: keeps its connections, gets no new one */

/* 169.254.42.1: the source a hairpinned packet carries into its own pod. */
#define SVC_HAIRPIN_V4 bpf_htonl(0xa9fe2a01)

#define SVC_CONTINUE 0x100   /* not a verdict: go on with conntrack and policy */
#define SVC_NO_BACKEND 0x101 /* not a verdict: the frontend has no ready backend */

struct svc_key {
	__u8 addr[16]; /* network order; IPv4 in the first 4 bytes */
	__u16 port;    /* host order */
	__u8 proto;
	__u8 family;
};

struct svc_frontend {
	__u32 id;
	__u32 count;            /* ready backends: slots 0..count-1 */
	__u32 flags;            /* SVC_F_* */
	__u32 affinity_timeout; /* seconds */
};

struct svc_slot_key {
	__u32 id;
	__u32 slot;
};

struct svc_backend {
	__u8 addr[16];
	__u16 port;
	__u8 family;
	__u8 flags; /* SVC_BE_* */
};

struct svc_conn {
	__u32 frontend_id;
	__u32 backend_id;
	struct svc_backend be; /* as chosen: a TCP connection outlives its backend's entry */
};

struct svc_affinity_key {
	__u32 id;
	__u8 client[16];
};

struct svc_affinity_val {
	__u64 last_ns;
	__u32 backend_id;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc_key);
	__type(value, struct svc_frontend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc_slot_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct svc_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct svc_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct svc_conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct svc_affinity_key);
	__type(value, struct svc_affinity_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_affinity SEC(".maps");

/* What translation tells the rest of the program about a packet. */
struct svc_xlate {
	__u32 svc_id;  /* frontend id for the event and a new conntrack entry */
	__u8 hairpin;  /* from pod: SNAT to SVC_HAIRPIN_V4 and send back into the pod */
	__u8 unsnat;   /* from pod: a reply to SVC_HAIRPIN_V4, un-SNATed */
};

static __always_inline int svc_syn_only(const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

static __always_inline __u32 svc_addr_len(const struct pkt *p)
{
	return p->family == 4 ? 4 : 16;
}

static __always_inline __u32 svc_l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
}

/* svc_set_addr rewrites the source (src=1) or destination address, fixing
 * the IPv4 header checksum and the L4 checksum's pseudo-header. */
static __always_inline int svc_set_addr(struct __sk_buff *skb, struct pkt *p, int src, const __u32 *to)
{
	__u32 *cur = src ? p->saddr : p->daddr;
	__u32 csum_flags = BPF_F_PSEUDO_HDR | (p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
	__s64 diff;
	__u32 off;
	if (p->family == 4) {
		diff = bpf_csum_diff(cur, 4, (__u32 *)to, 4, 0);
		off = sizeof(struct ethhdr) + (src ? 12 : 16);
		if (bpf_l3_csum_replace(skb, sizeof(struct ethhdr) + 10, 0, diff, 0))
			return -1;
	} else {
		diff = bpf_csum_diff(cur, 16, (__u32 *)to, 16, 0);
		off = sizeof(struct ethhdr) + (src ? 8 : 24);
	}
	if (diff < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, svc_l4_csum_off(p), 0, diff, csum_flags))
		return -1;
	if (bpf_skb_store_bytes(skb, off, to, svc_addr_len(p), 0))
		return -1;
	__builtin_memcpy(cur, to, 16);
	return 0;
}

static __always_inline int svc_set_port(struct __sk_buff *skb, struct pkt *p, int src, __u16 to)
{
	__u16 *cur = src ? &p->sport : &p->dport;
	if (*cur == to)
		return 0;
	__u16 old = bpf_htons(*cur), new = bpf_htons(to);
	__u32 csum_flags = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	if (bpf_l4_csum_replace(skb, svc_l4_csum_off(p), old, new, csum_flags | sizeof(__u16)))
		return -1;
	if (bpf_skb_store_bytes(skb, p->l4_off + (src ? 0 : 2), &new, sizeof(new), 0))
		return -1;
	*cur = to;
	return 0;
}

/* svc_swap_macs turns the frame around, to send it back into the pod. */
static __always_inline int svc_swap_macs(struct __sk_buff *skb)
{
	__u8 mac[12];
	if (bpf_skb_load_bytes(skb, 0, mac, sizeof(mac)))
		return -1;
	if (bpf_skb_store_bytes(skb, 0, mac + 6, 6, 0) || bpf_skb_store_bytes(skb, 6, mac, 6, 0))
		return -1;
	return 0;
}

static __always_inline __u16 svc_fold(__s64 sum)
{
	__u32 s = (__u32)sum;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s;
}

struct svc_icmp4 {
	struct iphdr ip;
	__u8 type, code;
	__u16 csum;
	__u32 unused;
};

/* The quote of an ICMP error: the packet's IP header and 8 bytes of L4,
 * or for TCP its 20-byte header: a TCP packet of the pod's stack leaves
 * its checksum to the device (CHECKSUM_PARTIAL), and the kernel keeps the
 * packet at least that long. */
#define SVC_QUOTE_MAX 40

/* svc_reject answers a packet to a frontend without a ready backend with
 * ICMP port unreachable from the ClusterIP, straight back into the pod.
 * IPv4 with a 20-byte header only; anything else is dropped. */
static __always_inline int svc_reject(struct __sk_buff *skb, const struct pkt *p)
{
	if (p->family != 4 || p->l4_off != sizeof(struct ethhdr) + 20)
		return TCX_DROP;
	__u32 qlen = p->proto == IPPROTO_TCP ? 40 : 28;
	__u8 buf[sizeof(struct svc_icmp4) - sizeof(struct iphdr) + SVC_QUOTE_MAX] = {};
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), buf + 8, qlen))
		return TCX_DROP;
	struct svc_icmp4 r = {};
	buf[0] = r.type = 3;
	buf[1] = r.code = 3;
	/* Zero padding adds nothing to the sum. */
	r.csum = svc_fold(bpf_csum_diff(0, 0, (__u32 *)buf, sizeof(buf), 0));
	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.tot_len = bpf_htons(sizeof(r) + qlen);
	r.ip.saddr = p->daddr[0];
	r.ip.daddr = p->saddr[0];
	r.ip.check = svc_fold(bpf_csum_diff(0, 0, (__u32 *)&r.ip, sizeof(r.ip), 0));
	/* Keep Ethernet and the quote, then grow by the new IP and ICMP
	 * headers in front of it. */
	if (bpf_skb_change_tail(skb, sizeof(struct ethhdr) + qlen, 0))
		return TCX_DROP;
	if (bpf_skb_adjust_room(skb, sizeof(r), BPF_ADJ_ROOM_MAC, 0))
		return TCX_DROP;
	if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &r, sizeof(r), 0))
		return TCX_DROP;
	if (svc_swap_macs(skb))
		return TCX_DROP;
	return bpf_redirect_peer(skb->ifindex, 0);
}

static __always_inline const struct svc_backend *svc_backend_of(__u32 id)
{
	return bpf_map_lookup_elem(&svc_backends, &id);
}

/* svc_select picks a ready backend for a new connection: the client's
 * affinity backend while it is fresh and ready, else a random slot. */
static __always_inline const struct svc_backend *svc_select(const struct svc_frontend *fe,
							    const struct pkt *p, __u32 *beid)
{
	struct svc_affinity_key ak = {.id = fe->id};
	__u64 now = 0;
	if (fe->flags & SVC_F_AFFINITY) {
		now = bpf_ktime_get_boot_ns();
		__builtin_memcpy(ak.client, p->saddr, 16);
		struct svc_affinity_val *a = bpf_map_lookup_elem(&svc_affinity, &ak);
		if (a && now - a->last_ns <= (__u64)fe->affinity_timeout * 1000000000ULL) {
			const struct svc_backend *be = svc_backend_of(a->backend_id);
			if (be && !(be->flags & SVC_BE_TERMINATING)) {
				a->last_ns = now;
				*beid = a->backend_id;
				return be;
			}
		}
	}
	if (fe->count == 0)
		return 0;
	struct svc_slot_key sk = {.id = fe->id, .slot = bpf_get_prandom_u32() % fe->count};
	__u32 *id = bpf_map_lookup_elem(&svc_slots, &sk);
	if (!id)
		return 0;
	*beid = *id;
	const struct svc_backend *be = svc_backend_of(*id);
	if (be && (fe->flags & SVC_F_AFFINITY)) {
		struct svc_affinity_val v = {.last_ns = now, .backend_id = *id};
		bpf_map_update_elem(&svc_affinity, &ak, &v, BPF_ANY);
	}
	return be;
}

/* svc_translate runs on packets from the pod before conntrack and policy.
 * It returns SVC_CONTINUE, SVC_NO_BACKEND, or TCX_DROP when a rewrite
 * failed. */
static __always_inline int svc_translate(struct __sk_buff *skb, const struct endpoint_info *ep,
					 struct pkt *p, struct svc_xlate *x)
{
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return SVC_CONTINUE;
	if (p->family == 4 && p->daddr[0] == SVC_HAIRPIN_V4) {
		/* The pod answering itself through its Service. */
		__u32 self[4] = {*(const __u32 *)ep->ipv4};
		if (svc_set_addr(skb, p, 0, self))
			return TCX_DROP;
		x->unsnat = 1;
		return SVC_CONTINUE;
	}
	struct svc_key k = {.port = p->dport, .proto = p->proto, .family = p->family};
	__builtin_memcpy(k.addr, p->daddr, 16);
	const struct svc_frontend *fe = bpf_map_lookup_elem(&svc_frontends, &k);
	if (!fe)
		return SVC_CONTINUE;
	x->svc_id = fe->id;

	struct ct_key ck = {};
	ct_key_of(&ck, p, skb->ifindex, LOUPE_DIR_EGRESS);
	const struct svc_backend *be = 0;
	__u32 beid = 0;
	struct svc_conn *c = bpf_map_lookup_elem(&svc_conns, &ck);
	if (c && c->frontend_id == fe->id) {
		beid = c->backend_id;
		be = svc_backend_of(beid);
		if (!be && p->proto == IPPROTO_TCP)
			be = &c->be; /* removed from the Service: established TCP stays, as with kube-proxy */
		/* A reused tuple opening a new connection gets a ready backend. */
		if (be && svc_syn_only(p) && (be == &c->be || (be->flags & SVC_BE_TERMINATING)))
			be = 0;
	}
	if (!be) {
		be = svc_select(fe, p, &beid);
		if (!be)
			return SVC_NO_BACKEND;
		struct svc_conn n = {.frontend_id = fe->id, .backend_id = beid, .be = *be};
		bpf_map_update_elem(&svc_conns, &ck, &n, BPF_ANY);
	}
	__u32 to[4];
	__builtin_memcpy(to, be->addr, 16);
	__u16 port = be->port;
	if (svc_set_addr(skb, p, 0, to) || svc_set_port(skb, p, 0, port))
		return TCX_DROP;
	if (p->family == 4 && p->daddr[0] == p->saddr[0])
		x->hairpin = 1;
	return SVC_CONTINUE;
}

/* svc_reverse turns a reply's source back into the frontend it was sent to. */
static __always_inline int svc_reverse(struct __sk_buff *skb, struct pkt *p, __u32 svc_id)
{
	const struct svc_key *fe = bpf_map_lookup_elem(&svc_revnat, &svc_id);
	if (!fe)
		return 0;
	__u32 to[4];
	__builtin_memcpy(to, fe->addr, 16);
	__u16 port = fe->port;
	if (svc_set_addr(skb, p, 1, to) || svc_set_port(skb, p, 1, port))
		return -1;
	return 0;
}

/* svc_hairpin_out sends a translated packet whose backend is its own pod
 * back in, from SVC_HAIRPIN_V4 so the pod does not see its own address as
 * the source. */
static __always_inline int svc_hairpin_out(struct __sk_buff *skb, struct pkt *p)
{
	__u32 from[4] = {SVC_HAIRPIN_V4};
	if (svc_set_addr(skb, p, 1, from) || svc_swap_macs(skb))
		return TCX_DROP;
	return bpf_redirect_peer(skb->ifindex, 0);
}

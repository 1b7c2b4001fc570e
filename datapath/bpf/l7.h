//go:build ignore

/* L7 capture without a proxy: the first bytes of DNS messages (by port) and
 * of HTTP/1.x messages (by content) go to userspace as struct
 * loupe_l7_record on a ring buffer of their own (l7_events), under a rate
 * limit of their own, with loss counts of their own (l7_stats): L7 can
 * neither crowd flow events out of the events ring nor vanish silently.
 *
 * Cost on a packet that is not captured: UDP, a compare of both ports
 * against the DNS port set; TCP with payload, also one bounds check and one
 * 4-byte load compared against the constant set of HTTP/1.x first tokens.
 * Only a message's first packet starts with one, so bulk data is never
 * copied. With l7_mode 0 (--l7=off) the verifier removes all of it. */
#pragma once

#include "common.h"
#include "parse.h"
#include "endpoint.h"
#include "ring.h"

#define LOUPE_L7_DNS 1  /* l7_mode bit and record kind */
#define LOUPE_L7_HTTP 2 /* l7_mode bit and record kind */

/* 512 bytes: the classic DNS-over-UDP limit (RFC 1035 4.2.1), so a typical
 * query or answer is whole; HTTP takes l7_http_len of them. */
#define LOUPE_L7_DATA_LEN 512
#define LOUPE_L7_DNS_PORTS 4

struct loupe_l7_record {
	__u64 ts_ns; /* bpf_ktime_get_boot_ns(), as struct loupe_event */
	__u32 ifindex;
	__u32 ep_id;
	__u32 src_identity;
	__u32 dst_identity;
	__u8 saddr[16]; /* IPv4 uses the first 4 bytes */
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 kind;      /* LOUPE_L7_DNS or LOUPE_L7_HTTP */
	__u8 direction; /* LOUPE_DIR_*, seen from the endpoint */
	__u8 tcp_flags;
	__u8 _pad[3];
	__u32 payload_len; /* L4 payload bytes of the packet */
	__u32 cap_len;     /* bytes of data[] that hold payload */
	__u32 _pad2;
	__u8 data[LOUPE_L7_DATA_LEN];
};

_Static_assert(sizeof(struct loupe_l7_record) == 592, "loupe_l7_record layout changed: update datapath/l7event.go");

static struct loupe_l7_record *loupe_l7_record_btf __attribute__((used));

/* Set by the loader through spec.Variables before load. */
volatile const __u8 l7_mode = LOUPE_L7_DNS | LOUPE_L7_HTTP;
volatile const __u16 l7_dns_ports[LOUPE_L7_DNS_PORTS] = {53, 5353, 0, 0}; /* 0: unused slot */
volatile const __u32 l7_http_len = 256;   /* HTTP bytes copied, at most LOUPE_L7_DATA_LEN */
volatile const __u64 l7_ev_rate = 10000;  /* records per second, per CPU */
volatile const __u64 l7_ev_burst = 10000; /* bucket depth, per CPU */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* 4 MiB: ~7k records */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_events SEC(".maps");

#define L7_STAT_RINGBUF_FULL 0 /* a record was lost: no room in l7_events */
#define L7_STAT_LIMITED 1      /* a record was suppressed by the L7 rate limit */
#define L7_STAT_MAX 2

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, L7_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct token_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_ev_bucket SEC(".maps");

static __always_inline void l7_stat_inc(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&l7_stats, &slot);
	if (v)
		*v += 1;
}

static __always_inline int l7_dns_port(__u16 port)
{
#pragma unroll
	for (int i = 0; i < LOUPE_L7_DNS_PORTS; i++)
		if (l7_dns_ports[i] != 0 && l7_dns_ports[i] == port)
			return 1;
	return 0;
}

/* First four bytes of an HTTP/1.x request line (a method and a space, or a
 * method's first four letters) or status line, as a little-endian load
 * sees them. The agent checks the whole line. */
#define L7_TOK(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)

static __always_inline int l7_http_token(__u32 w)
{
	switch (w) {
	case L7_TOK('G', 'E', 'T', ' '):
	case L7_TOK('P', 'O', 'S', 'T'):
	case L7_TOK('P', 'U', 'T', ' '):
	case L7_TOK('H', 'E', 'A', 'D'):
	case L7_TOK('D', 'E', 'L', 'E'):
	case L7_TOK('P', 'A', 'T', 'C'):
	case L7_TOK('O', 'P', 'T', 'I'):
	case L7_TOK('C', 'O', 'N', 'N'):
	case L7_TOK('T', 'R', 'A', 'C'):
	case L7_TOK('H', 'T', 'T', 'P'):
		return 1;
	}
	return 0;
}

/* l7_observe is called for every packet the TCX programs let through. */
static __always_inline void l7_observe(struct __sk_buff *skb, __u32 ifindex, const struct endpoint_info *ep,
				       const struct pkt *p, __u8 dir)
{
	if (l7_mode == 0 || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP))
		return;
	__u32 off = p->payload_off;
	if (off == 0 || off >= p->len)
		return; /* no payload */
	__u32 plen = p->len - off;
	__u8 kind = 0;
	__u32 want = LOUPE_L7_DATA_LEN;
	if ((l7_mode & LOUPE_L7_DNS) && (l7_dns_port(p->dport) || l7_dns_port(p->sport))) {
		kind = LOUPE_L7_DNS;
	} else if ((l7_mode & LOUPE_L7_HTTP) && p->proto == IPPROTO_TCP && plen >= 4) {
		/* The first payload bytes are in the linear area nearly always:
		 * read them directly, the helper only when they are not. */
		__u32 w = 0;
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		/* The mask bounds the offset for the verifier, which sets no
		 * packet range on a pointer that may be 64 KiB in. */
		__u32 o = off & 0x7ff;
		if (o == off && data + o + 4 <= data_end)
			__builtin_memcpy(&w, data + o, 4);
		else if (bpf_skb_load_bytes(skb, off, &w, 4))
			return;
		if (!l7_http_token(w))
			return;
		kind = LOUPE_L7_HTTP;
		want = l7_http_len;
	}
	if (!kind)
		return;

	__u64 now = bpf_ktime_get_boot_ns();
	/* Slot STAT_MAX of event_stats does not exist: the L7 bucket counts
	 * in l7_stats, not in the flow events' stats. */
	if (!bucket_take(&l7_ev_bucket, now, l7_ev_rate, l7_ev_burst, STAT_MAX)) {
		l7_stat_inc(L7_STAT_LIMITED);
		return;
	}
	struct loupe_l7_record *r = bpf_ringbuf_reserve(&l7_events, sizeof(*r), 0);
	if (!r) {
		l7_stat_inc(L7_STAT_RINGBUF_FULL);
		return;
	}
	r->ts_ns = now;
	r->ifindex = ifindex;
	r->ep_id = ep->id;
	if (dir == LOUPE_DIR_EGRESS) {
		r->src_identity = ep->identity;
		r->dst_identity = ipcache_identity(p->family, p->daddr);
	} else {
		r->src_identity = ipcache_identity(p->family, p->saddr);
		r->dst_identity = ep->identity;
	}
	__builtin_memcpy(r->saddr, p->saddr, 16);
	__builtin_memcpy(r->daddr, p->daddr, 16);
	r->sport = p->sport;
	r->dport = p->dport;
	r->family = p->family;
	r->proto = p->proto;
	r->kind = kind;
	r->direction = dir;
	r->tcp_flags = p->tcp_flags;
	r->_pad[0] = r->_pad[1] = r->_pad[2] = 0;
	r->payload_len = plen;
	r->_pad2 = 0;
	r->cap_len = 0;

	__u32 cap = plen < want ? plen : want;
	barrier_var(cap);
	if (cap > LOUPE_L7_DATA_LEN)
		cap = LOUPE_L7_DATA_LEN;
	barrier_var(cap);
	if (cap > 0 && bpf_skb_load_bytes(skb, off, r->data, cap) == 0)
		r->cap_len = cap;
	bpf_ringbuf_submit(r, 0);
}

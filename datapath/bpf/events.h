//go:build ignore

/* Ring-buffer events (struct loupe_event, event.h) and the drop-event rate
 * limit. Events go out only on triggers (new connection, SYN/FIN/RST, drop,
 * periodic record), never per packet. */
#pragma once

#include "common.h"
#include "parse.h"
#include "endpoint.h"
#include "conntrack.h"
#include "policy.h"
#include "ring.h"

/* Set by the loader through spec.Variables before load. */
volatile const __u64 drop_ev_rate = 500;   /* drop events per second, per CPU */
volatile const __u64 drop_ev_burst = 500;  /* bucket depth, per CPU */
volatile const __u64 report_interval_ns = 5000000000ULL; /* periodic records */
/* Per-connection bytes and handshake timing; 0 keeps only the packet
 * counts conntrack needs (agent --connection-stats=false). */
volatile const __u64 conn_stats = 1;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct token_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drop_ev_bucket SEC(".maps");

/* drop_event_allowed takes a token from this CPU's bucket. */
static __always_inline int drop_event_allowed(__u64 now)
{
	return bucket_take(&drop_ev_bucket, now, drop_ev_rate, drop_ev_burst, STAT_DROP_EV_LIMITED);
}

/* What an event says beyond the packet itself. */
struct ev_meta {
	__u64 now;
	const struct ct_entry *ct; /* may be NULL */
	__u32 ifindex;
	__u32 policy_id;
	const struct endpoint_info *ep;
	__u8 type;
	__u8 verdict;
	__u8 drop_reason;
	__u8 direction;
	__u8 flags;
	__u8 match_type;
	__u32 svc_id;
};

static __always_inline struct loupe_event *event_reserve(const struct pkt *p, const struct ev_meta *m)
{
	struct loupe_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(STAT_RINGBUF_FULL);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = m->now;
	ev->type = m->type;
	ev->obs_point = obs_point_of(m->direction);
	ev->verdict = m->verdict;
	ev->drop_reason = m->drop_reason;
	ev->family = p->family;
	ev->proto = p->proto;
	ev->tcp_flags = p->tcp_flags;
	ev->flags = m->flags;
	ev->ifindex = m->ifindex;
	ev->ep_id = m->ep->id;
	/* The peer's identity costs an LPM lookup: only on events. */
	if (m->direction == LOUPE_DIR_EGRESS) {
		ev->src_identity = m->ep->identity;
		ev->dst_identity = ipcache_identity(p->family, p->daddr);
	} else {
		ev->src_identity = ipcache_identity(p->family, p->saddr);
		ev->dst_identity = m->ep->identity;
	}
	__builtin_memcpy(ev->saddr, p->saddr, 16);
	__builtin_memcpy(ev->daddr, p->daddr, 16);
	if (p->proto != IPPROTO_ICMP && p->proto != IPPROTO_ICMPV6) {
		ev->sport = p->sport;
		ev->dport = p->dport;
	}
	ev->icmp_type = p->icmp_type;
	ev->icmp_code = p->icmp_code;
	ev->match_type = m->match_type;
	ev->direction = m->direction;
	ev->policy_id = m->policy_id;
	ev->pkt_len = p->len;
	ev->svc_id = m->svc_id;
	if (m->ct) {
		ev->packets_fwd = m->ct->packets_fwd;
		ev->bytes_fwd = m->ct->bytes_fwd;
		ev->packets_rev = m->ct->packets_rev;
		ev->bytes_rev = m->ct->bytes_rev;
		ev->handshake_ns = m->ct->handshake_ns;
	}
	return ev;
}

/* capture_len is the number of packet bytes to copy, in [1, 128], or 0.
 * barrier_var keeps clang from moving the checks onto a copy of the
 * register the verifier must see bounded. */
static __always_inline __u32 capture_len(const struct pkt *p)
{
	__u32 cap = p->len;
	if (cap == 0)
		return 0;
	barrier_var(cap);
	if (cap > LOUPE_EVENT_DATA_LEN)
		cap = LOUPE_EVENT_DATA_LEN;
	barrier_var(cap);
	return cap;
}

static __always_inline void emit_skb(struct __sk_buff *skb, const struct pkt *p, const struct ev_meta *m)
{
	struct loupe_event *ev = event_reserve(p, m);
	if (!ev)
		return;
	__u32 cap = capture_len(p);
	if (cap && bpf_skb_load_bytes(skb, 0, ev->data, cap) == 0)
		ev->cap_len = cap;
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline void emit_xdp(struct xdp_md *ctx, const struct pkt *p, const struct ev_meta *m)
{
	struct loupe_event *ev = event_reserve(p, m);
	if (!ev)
		return;
	__u32 cap = capture_len(p);
	if (cap && bpf_xdp_load_bytes(ctx, 0, ev->data, cap) == 0)
		ev->cap_len = cap;
	bpf_ringbuf_submit(ev, 0);
}

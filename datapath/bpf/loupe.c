//go:build ignore

/* loupe's datapath: three programs on each pod's host-side veth.
 *
 *   xdp          packets from the pod, earliest: anti-spoofing and malformed
 *                headers only, everything else passes.
 *   tcx/ingress  "from pod": the same checks (XDP may be off), conntrack,
 *                egress policy, counters, events.
 *   tcx/egress   "to pod": conntrack, ingress policy, counters, events.
 *
 * A packet from one pod to another pod of the node runs the destination's
 * "to pod" half in the source's program and goes straight into the
 * destination pod (deliver_local, docs/datapath.md "Local delivery").
 *
 * The per-packet path of an established connection is one endpoint lookup,
 * one conntrack lookup and update, and one per-CPU counter bump; l7.h adds
 * a port compare, and on TCP with payload one 4-byte load (--l7). */

#include "common.h"
#include "parse.h"
#include "endpoint.h"
#include "counters.h"
#include "conntrack.h"
#include "policy.h"
#include "events.h"
#include "l7.h"
#include "service.h"

char __license[] SEC("license") = "Dual MIT/GPL";

/* ifindex is the endpoint's host veth: the packet's own, or the
 * destination's when deliver_local runs the to-pod half. */
static __always_inline int drop_skb(struct __sk_buff *skb, __u32 ifindex, const struct endpoint_info *ep,
				    const struct pkt *p, __u8 reason, __u8 dir, __u32 rule_id, __u32 svc_id)
{
	count_packet(reason, dir, ep->id, rule_id, p->segs, p->len);
	__u64 now = bpf_ktime_get_boot_ns();
	if (drop_event_allowed(now)) {
		struct ev_meta m = {
			.now = now,
			.ifindex = ifindex,
			.policy_id = rule_id,
			.ep = ep,
			.type = LOUPE_EVENT_DROP,
			.verdict = LOUPE_VERDICT_DROPPED,
			.drop_reason = reason,
			.direction = dir,
			.svc_id = svc_id,
		};
		emit_skb(skb, p, &m);
	}
	return TCX_DROP;
}

static __always_inline int ct_and_policy(struct __sk_buff *skb, __u32 ifindex, const struct endpoint_info *ep,
					 const struct pkt *p, __u8 dir, struct svc_xlate *x)
{
	__u64 now = bpf_ktime_get_boot_ns();
	struct ct_key k = {};
	ct_key_of(&k, p, ifindex, dir);

	struct ct_entry *e = bpf_map_lookup_elem(&conntrack, &k);
	if (e && !ct_is_reopen(e, p)) {
		int reply = dir != e->first_dir;
		x->svc_id = e->svc_id;
		int first_reply = 0;
		__u8 flags = 0;
		if (reply) {
			/* The first packet back is reported, as Cilium's monitor
			 * aggregation reports it: it tells an answered ping or UDP
			 * request from an unanswered one. */
			first_reply = e->packets_rev == 0;
			__sync_fetch_and_add(&e->packets_rev, p->segs);
			if (conn_stats)
				__sync_fetch_and_add(&e->bytes_rev, p->len);
			if ((e->tcp_flags_rev & p->tcp_flags) != p->tcp_flags)
				e->tcp_flags_rev |= p->tcp_flags;
			flags = LOUPE_EF_REPLY;
		} else if (conn_stats) {
			__sync_fetch_and_add(&e->packets_fwd, p->segs);
			__sync_fetch_and_add(&e->bytes_fwd, p->len);
		}
		if (!reply && (e->tcp_flags_fwd & p->tcp_flags) != p->tcp_flags)
			e->tcp_flags_fwd |= p->tcp_flags;
		if (conn_stats)
			ct_handshake(e, p, reply, now);
		e->last_seen = now;
		count_packet(LOUPE_VERDICT_FORWARDED, dir, ep->id, e->rule_id, p->segs, p->len);

		int report = first_reply || (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST));
		__u64 last = e->last_report;
		if (now - last >= report_interval_ns &&
		    __sync_val_compare_and_swap(&e->last_report, last, now) == last) {
			/* One CPU wins the periodic record of this interval. */
			report = 1;
			flags |= LOUPE_EF_PERIODIC;
		} else if (report) {
			e->last_report = now;
		}
		if (report) {
			struct ev_meta m = {
				.now = now,
				.ct = e,
				.ifindex = ifindex,
				.policy_id = e->rule_id,
				.ep = ep,
				.type = LOUPE_EVENT_TRACE,
				.verdict = LOUPE_VERDICT_FORWARDED,
				.direction = dir,
				.flags = flags,
				.match_type = e->match_type,
				.svc_id = e->svc_id,
			};
			emit_skb(skb, p, &m);
		}
		return TCX_NEXT;
	}

	/* New connection (or a reopened TCP one). */
	struct policy_result r = {};
	__u8 type = LOUPE_EVENT_TRACE;
	if (ep->flags & ep_policy_flag(dir)) {
		__u32 peer = ipcache_identity(p->family, dir == LOUPE_DIR_EGRESS ? p->daddr : p->saddr);
		policy_lookup(ep->id, peer, p->dport, p->proto, dir, &r);
		if (r.verdict != POLICY_ALLOW)
			return drop_skb(skb, ifindex, ep, p, LOUPE_DROP_POLICY_DENIED, dir, r.rule_id, x->svc_id);
		type = LOUPE_EVENT_POLICY_VERDICT;
	}
	/* A TCP packet without SYN that conntrack does not know is the middle
	 * of a connection whose entry is gone: a policy change cut it (the
	 * agent removes the entries a new policy denies) or it was evicted.
	 * It passes if policy allows its own direction, but it only creates an
	 * entry if policy would also let the peer open the connection, the
	 * other way: else a retransmission leaving a server pod would re-create
	 * the entry and the cut client's packets would pass as replies. */
	if (p->proto == IPPROTO_TCP && !(p->tcp_flags & TCP_FLAG_SYN)) {
		__u8 rdir = dir == LOUPE_DIR_EGRESS ? LOUPE_DIR_INGRESS : LOUPE_DIR_EGRESS;
		if (ep->flags & ep_policy_flag(rdir)) {
			struct policy_result rr = {};
			__u32 rpeer = ipcache_identity(p->family, dir == LOUPE_DIR_EGRESS ? p->daddr : p->saddr);
			policy_lookup(ep->id, rpeer, p->sport, p->proto, rdir, &rr);
			if (rr.verdict != POLICY_ALLOW) {
				count_packet(LOUPE_VERDICT_FORWARDED, dir, ep->id, r.rule_id, p->segs, p->len);
				return TCX_NEXT;
			}
		}
	}
	struct ct_entry n = {
		.first_seen = now,
		.last_seen = now,
		.last_report = now,
		/* Off, the first packet is not counted either: flows then carry no counters. */
		.packets_fwd = conn_stats ? p->segs : 0,
		.bytes_fwd = conn_stats ? p->len : 0,
		.rule_id = r.rule_id,
		.first_dir = dir,
		.match_type = r.match_type,
		.tcp_flags_fwd = p->tcp_flags,
		.svc_id = x->svc_id,
	};
	bpf_map_update_elem(&conntrack, &k, &n, BPF_ANY);
	count_packet(LOUPE_VERDICT_FORWARDED, dir, ep->id, r.rule_id, p->segs, p->len);

	struct ev_meta m = {
		.now = now,
		.ct = &n,
		.ifindex = ifindex,
		.policy_id = r.rule_id,
		.ep = ep,
		.type = type,
		.verdict = LOUPE_VERDICT_FORWARDED,
		.direction = dir,
		.flags = LOUPE_EF_CT_NEW,
		.match_type = r.match_type,
		.svc_id = x->svc_id,
	};
	emit_skb(skb, p, &m);
	return TCX_NEXT;
}

/* to_endpoint is the to-pod half: conntrack and ingress policy for the
 * endpoint behind host veth ifindex, its L7 records, and the reverse
 * translation of a Service reply into a client pod. */
static __always_inline int to_endpoint(struct __sk_buff *skb, __u32 ifindex, const struct endpoint_info *ep,
				       struct pkt *p, struct svc_xlate *x)
{
	int verdict = ct_and_policy(skb, ifindex, ep, p, LOUPE_DIR_INGRESS, x);
	if (verdict != TCX_NEXT)
		return verdict;
	l7_observe(skb, ifindex, ep, p, LOUPE_DIR_INGRESS);
	/* Only a connection opened from this pod carries svc_id, so a to-pod
	 * packet that found one is its reply. */
	if (x->svc_id && svc_reverse(skb, p, x->svc_id))
		return TCX_DROP;
	return TCX_NEXT;
}

/* route_to_local does what the host's forwarding would do to a packet for
 * a local pod: one hop off the TTL (hop limit), and the frame addressed
 * from the pod's gateway (its host veth) to the pod. It returns -1 when the
 * kernel must handle the packet (TTL about to expire: ICMP time exceeded). */
static __always_inline int route_to_local(struct __sk_buff *skb, const struct pkt *p, const struct local_ep *le)
{
	const __u32 l3 = sizeof(struct ethhdr);
	if (p->family == 4) {
		__u8 ttl;
		if (bpf_skb_load_bytes(skb, l3 + offsetof(struct iphdr, ttl), &ttl, 1) || ttl <= 1)
			return -1;
		/* The checksum covers TTL as the high byte of a 16-bit word. */
		__u16 from = bpf_htons((__u16)ttl << 8), to = bpf_htons((__u16)(ttl - 1) << 8);
		ttl--;
		if (bpf_l3_csum_replace(skb, l3 + offsetof(struct iphdr, check), from, to, 2) ||
		    bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, ttl), &ttl, 1, 0))
			return -1;
	} else {
		__u8 hops;
		if (bpf_skb_load_bytes(skb, l3 + offsetof(struct ipv6hdr, hop_limit), &hops, 1) || hops <= 1)
			return -1;
		hops--;
		if (bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, hop_limit), &hops, 1, 0))
			return -1;
	}
	__u8 macs[12];
	__builtin_memcpy(macs, le->pod_mac, 6);
	__builtin_memcpy(macs + 6, le->host_mac, 6);
	return bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0) ? -1 : 0;
}

/* deliver_local takes a from-pod packet that its own pod let out to the
 * pod it is addressed to, when that pod is on this node: the to-pod half
 * runs here, and the packet goes straight into the pod (bpf_redirect_peer),
 * past the host's routing and the to-pod program, which would find the same
 * conntrack entry and policy. Anything else returns TCX_NEXT to be routed. */
static __always_inline int deliver_local(struct __sk_buff *skb, struct pkt *p)
{
	struct local_key lk = {.family = p->family};
	__builtin_memcpy(lk.addr, p->daddr, 16);
	const struct local_ep *le = bpf_map_lookup_elem(&local_eps, &lk);
	if (!le)
		return TCX_NEXT;
	__u32 ifindex = le->ifindex;
	const struct endpoint_info *ep = bpf_map_lookup_elem(&endpoints, &ifindex);
	if (!ep || route_to_local(skb, p, le))
		return TCX_NEXT;
	struct svc_xlate x = {};
	int verdict = to_endpoint(skb, ifindex, ep, p, &x);
	if (verdict != TCX_NEXT)
		return verdict;
	return bpf_redirect_peer(ifindex, 0);
}

static __always_inline int handle_skb(struct __sk_buff *skb, __u8 dir)
{
	__u32 ifindex = skb->ifindex;
	__u32 segs = skb->gso_segs;
	if (segs == 0)
		segs = 1;

	const struct endpoint_info *ep = bpf_map_lookup_elem(&endpoints, &ifindex);
	if (!ep) {
		count_packet(LOUPE_REASON_NO_ENDPOINT, dir, 0, 0, segs, skb->len);
		return TCX_NEXT;
	}

	struct pkt p = {};
	int rc = parse_skb(skb, &p);
	p.segs = segs;
	if (rc == PARSE_MALFORMED)
		return drop_skb(skb, ifindex, ep, &p, LOUPE_DROP_INVALID_PACKET, dir, 0, 0);
	if (rc == PARSE_OK && dir == LOUPE_DIR_EGRESS && !src_allowed(ep, &p))
		return drop_skb(skb, ifindex, ep, &p, LOUPE_DROP_INVALID_SOURCE_IP, dir, 0, 0);
	if (rc != PARSE_OK || (p.flags & (PKT_F_FRAG | PKT_F_NO_CT))) {
		count_packet(LOUPE_VERDICT_FORWARDED, dir, ep->id, 0, segs, p.len);
		return TCX_NEXT;
	}
	struct svc_xlate x = {};
	if (dir == LOUPE_DIR_INGRESS)
		return to_endpoint(skb, ifindex, ep, &p, &x);

	/* Services are translated before policy: policy judges the backend. */
	int s = svc_translate(skb, ep, &p, &x);
	if (s == SVC_NO_BACKEND) {
		drop_skb(skb, ifindex, ep, &p, LOUPE_DROP_NO_SERVICE, dir, 0, x.svc_id);
		return svc_reject(skb, &p);
	}
	if (s != SVC_CONTINUE)
		return s;
	if (x.unsnat) {
		/* A hairpin reply, un-SNATed, is the packet into the client. */
		int verdict = to_endpoint(skb, ifindex, ep, &p, &x);
		if (verdict != TCX_NEXT)
			return verdict;
		return svc_swap_macs(skb) ? TCX_DROP : bpf_redirect_peer(ifindex, 0);
	}
	int verdict = ct_and_policy(skb, ifindex, ep, &p, dir, &x);
	if (verdict != TCX_NEXT)
		return verdict;
	l7_observe(skb, ifindex, ep, &p, dir);
	if (x.hairpin)
		return svc_hairpin_out(skb, &p);
	if (local_redirect)
		return deliver_local(skb, &p);
	return TCX_NEXT;
}

SEC("tcx/ingress")
int loupe_from_pod(struct __sk_buff *skb)
{
	return handle_skb(skb, LOUPE_DIR_EGRESS);
}

SEC("tcx/egress")
int loupe_to_pod(struct __sk_buff *skb)
{
	return handle_skb(skb, LOUPE_DIR_INGRESS);
}

SEC("xdp")
int loupe_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 ifindex = ctx->ingress_ifindex;

	const struct endpoint_info *ep = bpf_map_lookup_elem(&endpoints, &ifindex);
	if (!ep)
		return XDP_PASS; /* TCX counts it */

	struct pkt p = {};
	__u8 reason;
	int rc = parse_packet(data, data_end, data_end - data, &p);
	p.segs = 1;
	if (rc == PARSE_MALFORMED)
		reason = LOUPE_DROP_INVALID_PACKET;
	else if (rc == PARSE_OK && !src_allowed(ep, &p))
		reason = LOUPE_DROP_INVALID_SOURCE_IP;
	else
		return XDP_PASS;

	count_packet(reason, LOUPE_DIR_EGRESS, ep->id, 0, 1, p.len);
	__u64 now = bpf_ktime_get_boot_ns();
	if (drop_event_allowed(now)) {
		struct ev_meta m = {
			.now = now,
			.ifindex = ifindex,
			.ep = ep,
			.type = LOUPE_EVENT_DROP,
			.verdict = LOUPE_VERDICT_DROPPED,
			.drop_reason = reason,
			.direction = LOUPE_DIR_EGRESS,
			.flags = LOUPE_EF_XDP,
		};
		emit_xdp(ctx, &p, &m);
	}
	return XDP_DROP;
}

//go:build ignore

/* loupe's TCP health tracepoints (tp_btf), for every socket of the machine:
 *
 *   loupe_tcp_retransmit      tcp:tcp_retransmit_skb, a segment sent again
 *                             (only when it left: err == 0). Record flagged
 *                             LOUPE_EF_TCP_RETRANSMIT: the segments and bytes
 *                             of this retransmission (packets_fwd,
 *                             bytes_fwd), the connection's total so far
 *                             (tcp_sock.total_retrans, what ss -ti shows, in
 *                             packets_rev), the segment's flags.
 *   loupe_tcp_send_reset      tcp:tcp_send_reset, an RST the stack sends,
 *                             with its enum sk_rst_reason (kernel_reason).
 *   loupe_tcp_receive_reset   tcp:tcp_receive_reset, an RST a socket took.
 *
 * Records are written from the socket's side: source = local end, except
 * for a received reset, whose source is the peer that sent it; direction
 * EGRESS for what the socket sent, INGRESS for what it received. All go to
 * the shared events ring under their own per-CPU rate limit (tcp_ev_bucket);
 * what it holds back, and events with no namespace, count in tcp_stats.
 * Cost: nothing on packets that are neither retransmitted nor resets; a
 * few pointer reads and a token-bucket lookup on those that are. Which
 * agent reports a record is decided in Go (contract.ReportsNetns). */

#include "common.h"
#include "ring.h"
#include "kernel.h"

char __license[] SEC("license") = "Dual MIT/GPL";

/* Set by the loader through spec.Variables before load. */
volatile const __u64 tcp_ev_rate = 500;  /* TCP events per second, per CPU */
volatile const __u64 tcp_ev_burst = 500; /* bucket depth, per CPU */

/* tcp_stats slots */
#define TCP_STAT_LIMITED 0  /* an event held back by the rate limit */
#define TCP_STAT_NO_NETNS 1 /* an event with no namespace to tie it to */
#define TCP_STAT_MAX 2

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tcp_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct token_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tcp_ev_bucket SEC(".maps");

/* tcp_record reserves a zeroed TCP record for namespace inum, or returns
 * NULL (counted) when there is none, the limit is reached or the ring is
 * full. */
static __always_inline struct loupe_event *tcp_record(unsigned int inum, __u8 flags, __u8 dir)
{
	if (!inum) {
		stat_inc_in(&tcp_stats, TCP_STAT_NO_NETNS);
		return NULL;
	}
	__u64 now = bpf_ktime_get_boot_ns();
	if (!bucket_take_in(&tcp_ev_bucket, now, tcp_ev_rate, tcp_ev_burst, &tcp_stats, TCP_STAT_LIMITED))
		return NULL;
	struct loupe_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(STAT_RINGBUF_FULL);
		return NULL;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = now;
	ev->type = LOUPE_EVENT_TRACE;
	ev->verdict = LOUPE_VERDICT_FORWARDED;
	ev->flags = flags;
	ev->direction = dir;
	ev->netns_ino = inum;
	ev->proto = IPPROTO_TCP;
	return ev;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(loupe_tcp_retransmit, const struct sock *sk, const struct sk_buff *skb, int err)
{
	if (err || !sk)
		return 0;
	struct loupe_event *ev = tcp_record(sock_netns(sk), LOUPE_EF_TCP_RETRANSMIT, LOUPE_DIR_EGRESS);
	if (!ev)
		return 0;
	sock_tuple(sk, ev, 0);
	if (skb) {
		struct tcp_skb_cb *cb = (void *)skb + bpf_core_field_offset(struct sk_buff, cb);
		__u16 segs = BPF_CORE_READ(cb, tcp_gso_segs);
		ev->packets_fwd = segs ? segs : 1;
		ev->tcp_flags = BPF_CORE_READ(cb, tcp_flags) & 0xff;
		ev->bytes_fwd = BPF_CORE_READ(skb, len);
	}
	ev->packets_rev = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(loupe_tcp_send_reset, const struct sock *sk, const struct sk_buff *skb, int reason)
{
	__u32 ifindex = 0;
	unsigned int inum = sk ? sock_netns(sk) : (skb ? netns_of((struct sk_buff *)skb, &ifindex) : 0);
	struct loupe_event *ev = tcp_record(inum, LOUPE_EF_TCP_RESET, LOUPE_DIR_EGRESS);
	if (!ev)
		return 0;
	if (skb) {
		/* The packet answered: the reset goes back along it. */
		struct loupe_event in = {};
		read_headers((struct sk_buff *)skb, &in);
		ev->family = in.family;
		__builtin_memcpy(ev->saddr, in.daddr, 16);
		__builtin_memcpy(ev->daddr, in.saddr, 16);
		ev->sport = in.dport;
		ev->dport = in.sport;
	} else if (sk) {
		sock_tuple(sk, ev, 0);
	}
	ev->proto = IPPROTO_TCP;
	ev->tcp_flags = TCP_FLAG_RST;
	ev->kernel_reason = (__u32)reason;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(loupe_tcp_receive_reset, struct sock *sk)
{
	if (!sk)
		return 0;
	struct loupe_event *ev = tcp_record(sock_netns(sk), LOUPE_EF_TCP_RESET, LOUPE_DIR_INGRESS);
	if (!ev)
		return 0;
	sock_tuple(sk, ev, 1);
	ev->tcp_flags = TCP_FLAG_RST;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

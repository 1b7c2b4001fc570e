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
#include "kernel.h"

char __license[] SEC("license") = "Dual MIT/GPL";

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

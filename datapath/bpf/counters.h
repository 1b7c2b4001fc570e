//go:build ignore

/* Exact per-CPU packet and byte counters per (reason, direction, endpoint,
 * rule). reason is LOUPE_VERDICT_FORWARDED, a LOUPE_DROP_* code, or
 * LOUPE_REASON_NO_ENDPOINT. rule_id is the policy rule that allowed or denied
 * (0 when no policy decided). */
#pragma once

#include "common.h"

struct counter_key {
	__u32 ep_id;
	__u32 rule_id;
	__u8 reason;
	__u8 direction; /* LOUPE_DIR_* */
	__u16 _pad;
};

struct counter_val {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct counter_key);
	__type(value, struct counter_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

static __always_inline void count_packet(__u8 reason, __u8 dir, __u32 ep_id, __u32 rule_id,
					 __u32 packets, __u32 bytes)
{
	struct counter_key k = {
		.ep_id = ep_id,
		.rule_id = rule_id,
		.reason = reason,
		.direction = dir,
	};
	struct counter_val *v = bpf_map_lookup_elem(&counters, &k);
	if (v) {
		/* Per-CPU value: no other writer, no atomics needed. */
		v->packets += packets;
		v->bytes += bytes;
		return;
	}
	struct counter_val n = { .packets = packets, .bytes = bytes };
	if (bpf_map_update_elem(&counters, &k, &n, BPF_NOEXIST) == 0)
		return;
	/* Lost the race to create it (e.g. a nested hook): add to the winner. */
	v = bpf_map_lookup_elem(&counters, &k);
	if (v) {
		v->packets += packets;
		v->bytes += bytes;
	}
}

//go:build ignore

/* The maps every event source shares: the events ring buffer, the loss
 * counters, and the per-CPU token bucket that limits an event source. The
 * packet programs (loupe.c) and the kernel-drop tracepoint (kdrop.c) are
 * two objects; both pin these maps by name, so they write one ring. */
#pragma once

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* 4 MiB: ~16k events */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* event_stats slots */
#define STAT_RINGBUF_FULL 0    /* an event was lost: no room in the ring */
#define STAT_DROP_EV_LIMITED 1 /* a drop event was suppressed by the rate limit */
#define STAT_KDROP_LIMITED 2   /* a kernel-drop event was suppressed by its rate limit */
#define STAT_KDROP_NO_NETNS 3  /* a kernel drop with neither device nor socket: no agent reports it */
#define STAT_MAX 4

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} event_stats SEC(".maps");

struct token_bucket {
	__u64 tokens;
	__u64 last_ns;
};

/* stat_inc_in adds one to slot of a per-CPU array of __u64 counters. */
static __always_inline void stat_inc_in(void *stats, __u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(stats, &slot);
	if (v)
		*v += 1;
}

static __always_inline void stat_inc(__u32 slot)
{
	stat_inc_in(&event_stats, slot);
}

/* bucket_take_in takes a token from this CPU's bucket in map (a one-slot
 * per-CPU array of struct token_bucket), refilled at rate per second up to
 * burst; an empty bucket counts in slot stat of the counter array stats. */
static __always_inline int bucket_take_in(void *map, __u64 now, __u64 rate, __u64 burst, void *stats, __u32 stat)
{
	__u32 zero = 0;
	struct token_bucket *b = bpf_map_lookup_elem(map, &zero);
	if (!b)
		return 0;
	__u64 elapsed = now - b->last_ns;
	if (elapsed > 1000000000ULL)
		elapsed = 1000000000ULL;
	__u64 add = elapsed * rate / 1000000000ULL;
	if (add > 0) {
		__u64 t = b->tokens + add;
		b->tokens = t > burst ? burst : t;
		b->last_ns = now;
	}
	if (b->tokens == 0) {
		stat_inc_in(stats, stat);
		return 0;
	}
	b->tokens--;
	return 1;
}

/* bucket_take is bucket_take_in counting in event_stats. */
static __always_inline int bucket_take(void *map, __u64 now, __u64 rate, __u64 burst, __u32 stat)
{
	return bucket_take_in(map, now, rate, burst, &event_stats, stat);
}

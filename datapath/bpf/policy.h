//go:build ignore

/* Policy lookup hook. The datapath never evaluates selectors: the policy
 * compiler writes (endpoint, peer identity, port, proto, direction) entries
 * and the datapath looks them up, most specific first:
 *
 *   1. {ep, peer, dport, proto}  L3_L4
 *   2. {ep, peer, 0,     proto}  L3_L4   (all ports of proto)
 *   3. {ep, peer, 0,     0}      L3_ONLY
 *   4. {ep, ANY,  dport, proto}  L4_ONLY
 *   5. {ep, ANY,  0,     proto}  L4_ONLY
 *   6. {ep, ANY,  0,     0}      ALL
 *
 * ANY is identity 0. Port ranges are expanded into one entry per port. The
 * first entry found decides (allow or deny); no entry means default deny
 * (rule 0). Only consulted for a new connection in a direction whose
 * EP_F_POLICY_* flag is set; replies and established connections follow
 * conntrack. */
#pragma once

#include "common.h"

#define LOUPE_IDENTITY_ANY 0
#define LOUPE_IDENTITY_WORLD 2 /* peer address not in the ipcache */

#define POLICY_ALLOW 1
#define POLICY_DENY 2

struct ipcache_key {
	__u32 prefixlen; /* 32 (family + pad) + prefix bits */
	__u8 family;     /* 4 or 6 */
	__u8 _pad[3];
	__u8 addr[16];   /* network order; IPv4 in the first 4 bytes */
};

struct ipcache_value {
	__u32 identity;
	__u32 flags; /* reserved for the policy work */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ipcache SEC(".maps");

struct policy_key {
	__u32 ep_id;
	__u32 peer_identity; /* LOUPE_IDENTITY_ANY for any peer */
	__u16 dport;         /* host order; 0 for any port */
	__u8 proto;          /* IPPROTO_*; 0 for any protocol */
	__u8 direction;      /* LOUPE_DIR_* */
};

struct policy_value {
	__u32 rule_id; /* reported in events and counters */
	__u8 verdict;  /* POLICY_ALLOW or POLICY_DENY */
	__u8 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy SEC(".maps");

static __always_inline __u32 ipcache_identity(__u8 family, const __u32 *addr)
{
	struct ipcache_key k = {
		.prefixlen = 32 + (family == 4 ? 32 : 128),
		.family = family,
	};
	__builtin_memcpy(k.addr, addr, 16);
	if (family == 4)
		__builtin_memset(k.addr + 4, 0, 12);
	struct ipcache_value *v = bpf_map_lookup_elem(&ipcache, &k);
	return v ? v->identity : LOUPE_IDENTITY_WORLD;
}

struct policy_result {
	__u32 rule_id;
	__u8 verdict;
	__u8 match_type;
};

static __always_inline void policy_lookup(__u32 ep_id, __u32 peer, __u16 dport, __u8 proto,
					  __u8 dir, struct policy_result *r)
{
	struct policy_key k = {
		.ep_id = ep_id,
		.peer_identity = peer,
		.dport = dport,
		.proto = proto,
		.direction = dir,
	};
	struct policy_value *v;
	__u8 match = LOUPE_MATCH_L3_L4;

	v = bpf_map_lookup_elem(&policy, &k);
	if (v)
		goto found;
	k.dport = 0;
	v = bpf_map_lookup_elem(&policy, &k);
	if (v)
		goto found;
	k.proto = 0;
	match = LOUPE_MATCH_L3_ONLY;
	v = bpf_map_lookup_elem(&policy, &k);
	if (v)
		goto found;
	k.peer_identity = LOUPE_IDENTITY_ANY;
	k.proto = proto;
	k.dport = dport;
	match = LOUPE_MATCH_L4_ONLY;
	v = bpf_map_lookup_elem(&policy, &k);
	if (v)
		goto found;
	k.dport = 0;
	v = bpf_map_lookup_elem(&policy, &k);
	if (v)
		goto found;
	k.proto = 0;
	match = LOUPE_MATCH_ALL;
	v = bpf_map_lookup_elem(&policy, &k);
	if (v)
		goto found;
	r->verdict = POLICY_DENY;
	r->rule_id = 0;
	r->match_type = LOUPE_MATCH_NONE;
	return;
found:
	r->verdict = v->verdict == POLICY_ALLOW ? POLICY_ALLOW : POLICY_DENY;
	r->rule_id = v->rule_id;
	r->match_type = match;
}

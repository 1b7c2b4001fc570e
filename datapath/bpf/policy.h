//go:build ignore

/* Policy lookup hook. The datapath never evaluates selectors: the policy
 * compiler writes (endpoint, direction, peer identity, protocol, port block)
 * entries and the datapath looks them up, most specific first.
 *
 * The policy map is an LPM trie, as Cilium's policy map is. The key's fixed
 * part (ep, peer, direction: POLICY_PREFIX_FIXED bits) is always matched in
 * full; then come the protocol (8 bits) and the port in network order, so
 * a prefix length ends an entry's key after the peer (any protocol), after
 * the protocol (any port), or inside the port: an aligned block of 2^n
 * ports is the port with prefix length POLICY_PREFIX_FULL - n. An endPort
 * range is split by Go into the fewest such blocks (1000-65535 is 8, 1-65535
 * is 16), so every range is enforced exactly. Blocks nest or are disjoint.
 *
 *   1. {ep, peer, proto, dport} longest prefix: L3_L4 (a port block or any
 *      port of proto) or L3_ONLY (any protocol)
 *   2. {ep, ANY,  proto, dport} longest prefix: L4_ONLY or ALL
 *
 * ANY is identity 0. The longest prefix of the first lookup that finds an
 * entry decides (allow or deny), so a peer's entry beats any ANY entry and a
 * smaller port block beats the block or protocol around it; no entry means
 * default deny (rule 0). The value says whether its key named a protocol,
 * which gives the match type without knowing the matched prefix.
 *
 * Cost per policy_lookup: at most two LPM-trie lookups (one when the peer
 * has an entry), where the hash map took up to six exact lookups. An LPM
 * lookup walks the trie from the root, one node per branching on the way
 * to the 96-bit key, so it grows with the trie's depth, not with the
 * number of entries; with 250,000 entries a denied new connection (both
 * lookups miss) measured the same as the six hash lookups, 200-290 ns per
 * packet on a loaded 2-core machine (BenchmarkFromPodNewDeniedFullPolicyMap).
 * Only for a new connection in a direction whose EP_F_POLICY_* flag is set:
 * replies and established connections follow conntrack. */
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

/* Prefix lengths of struct policy_key: ep_id, peer_identity and direction
 * always; then proto; then the port's bits. */
#define POLICY_PREFIX_FIXED 72
#define POLICY_PREFIX_PROTO 80
#define POLICY_PREFIX_FULL 96

struct policy_key {
	__u32 prefixlen;     /* POLICY_PREFIX_FIXED .. POLICY_PREFIX_FULL */
	__u32 ep_id;
	__u32 peer_identity; /* LOUPE_IDENTITY_ANY for any peer */
	__u8 direction;      /* LOUPE_DIR_* */
	__u8 proto;          /* IPPROTO_*; past the prefix for any protocol */
	__be16 dport;        /* network order, so a prefix is a port block */
};

#define POLICY_F_L4 0x01 /* the key names a protocol (L3_L4 or L4_ONLY) */

struct policy_value {
	__u32 rule_id; /* reported in events and counters */
	__u8 verdict;  /* POLICY_ALLOW or POLICY_DENY */
	__u8 flags;    /* POLICY_F_* */
	__u8 _pad[2];
};

/* Capacity: 786,432 entries (3 x 2^18). Memory grows with the entries
 * (BPF_F_NO_PREALLOC), not with this bound: measured in the kernel's
 * memory cgroup, an entry costs at most 144 bytes (its node and at most one
 * branching node, 72 bytes each), so a full map stays under 108 MiB
 * (datapath.PolicyEntryBytes; docs/DESIGN.md, "Policy map size"). The
 * 1,000-policy x 5,000-pod benchmark needs 262,960 on a node of 500 pods,
 * and 731k with one key per port. The agent refuses a policy set that does
 * not fit instead of writing part of it. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 786432);
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
		.prefixlen = POLICY_PREFIX_FULL,
		.ep_id = ep_id,
		.peer_identity = peer,
		.direction = dir,
		.proto = proto,
		.dport = bpf_htons(dport),
	};
	struct policy_value *v;
	__u8 l4 = LOUPE_MATCH_L3_L4, l3 = LOUPE_MATCH_L3_ONLY;

	v = bpf_map_lookup_elem(&policy, &k);
	if (!v) {
		k.peer_identity = LOUPE_IDENTITY_ANY;
		l4 = LOUPE_MATCH_L4_ONLY;
		l3 = LOUPE_MATCH_ALL;
		v = bpf_map_lookup_elem(&policy, &k);
	}
	if (!v) {
		r->verdict = POLICY_DENY;
		r->rule_id = 0;
		r->match_type = LOUPE_MATCH_NONE;
		return;
	}
	r->verdict = v->verdict == POLICY_ALLOW ? POLICY_ALLOW : POLICY_DENY;
	r->rule_id = v->rule_id;
	r->match_type = v->flags & POLICY_F_L4 ? l4 : l3;
}

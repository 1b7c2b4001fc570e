//go:build ignore

/* Local endpoints, keyed by the ifindex of the pod's host-side veth.
 * Written by the agent (datapath.UpsertEndpoint). */
#pragma once

#include "common.h"
#include "parse.h"

#define EP_F_POLICY_INGRESS 0x01 /* ingress (to pod) policy is enforced */
#define EP_F_POLICY_EGRESS 0x02  /* egress (from pod) policy is enforced */
#define EP_F_HAS_IPV4 0x04
#define EP_F_HAS_IPV6 0x08

struct endpoint_info {
	__u32 id;
	__u32 identity;
	__u32 flags;     /* EP_F_* */
	__u8 ipv4[4];    /* network order */
	__u8 ipv6[16];   /* network order */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* host-side ifindex */
	__type(value, struct endpoint_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

static __always_inline __u32 ep_policy_flag(__u8 dir)
{
	return dir == LOUPE_DIR_INGRESS ? EP_F_POLICY_INGRESS : EP_F_POLICY_EGRESS;
}

/* Anti-spoofing: the source must be the endpoint's own address. IPv6
 * link-local and :: pass so neighbour discovery and DAD work. */
static __always_inline int src_allowed(const struct endpoint_info *ep, const struct pkt *p)
{
	if (p->family == 4)
		return (ep->flags & EP_F_HAS_IPV4) && p->saddr[0] == *(const __u32 *)ep->ipv4;
	if ((p->saddr[0] & bpf_htonl(0xffc00000)) == bpf_htonl(0xfe800000))
		return 1;
	if ((p->saddr[0] | p->saddr[1] | p->saddr[2] | p->saddr[3]) == 0)
		return 1;
	const __u32 *a = (const __u32 *)ep->ipv6;
	return (ep->flags & EP_F_HAS_IPV6) && p->saddr[0] == a[0] && p->saddr[1] == a[1] &&
	       p->saddr[2] == a[2] && p->saddr[3] == a[3];
}

/* Local endpoints by address: a from-pod packet addressed to another pod
 * on this node is delivered straight into that pod (bpf_redirect_peer)
 * instead of through the host's routing, and its to-pod half (conntrack,
 * ingress policy, counters, events) runs in the same program
 * (loupe.c, deliver_local). Written by the agent with the endpoint; an
 * endpoint whose MACs are unknown has no entry and is reached by routing. */
struct local_key {
	__u32 addr[4]; /* network order; IPv4 in addr[0], the rest 0 */
	__u8 family;   /* 4 or 6 */
	__u8 _pad[3];
};

struct local_ep {
	__u32 ifindex;   /* host-side veth */
	__u8 pod_mac[6]; /* the pod's interface: the frame's new destination */
	__u8 host_mac[6]; /* its host-side veth: the frame's new source */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768); /* two addresses per endpoint */
	__type(key, struct local_key);
	__type(value, struct local_ep);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_eps SEC(".maps");

/* local_redirect = 0 (the agent's --local-redirect=false) routes
 * pod-to-pod packets through the host instead. */
volatile const __u8 local_redirect = 1;

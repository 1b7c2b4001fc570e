/* The record every datapath program writes to the events ring buffer.
 * Layout is fixed and little-endian; datapath/event.go decodes it.
 * Numbering follows Hubble/Cilium so events map straight onto flow.Flow. */
#pragma once

/* The numbers shared with Hubble are contract/monitor.go's; datapath's
 * TestHeaderMatchesContract fails when one side changes alone. */

/* type: Cilium monitor message types. */
#define LOUPE_EVENT_DROP 1
#define LOUPE_EVENT_TRACE 4
#define LOUPE_EVENT_POLICY_VERDICT 5

/* obs_point: Cilium trace observation points. */
#define LOUPE_OBS_TO_LXC 0   /* to the pod: TCX egress on the host veth */
#define LOUPE_OBS_FROM_LXC 5 /* from the pod: XDP / TCX ingress on the host veth */

/* verdict: flow.Verdict. */
#define LOUPE_VERDICT_FORWARDED 1
#define LOUPE_VERDICT_DROPPED 2

/* drop_reason: flow.DropReason. */
#define LOUPE_DROP_INVALID_SOURCE_IP 132
#define LOUPE_DROP_POLICY_DENIED 133
#define LOUPE_DROP_INVALID_PACKET 134
#define LOUPE_DROP_NO_SERVICE 158 /* Service without a ready backend */

/* direction: flow.TrafficDirection, seen from the endpoint. */
#define LOUPE_DIR_INGRESS 1 /* to the pod */
#define LOUPE_DIR_EGRESS 2  /* from the pod */

/* flags */
#define LOUPE_EF_REPLY 0x01    /* conntrack: packet goes against the connection's first direction */
#define LOUPE_EF_CT_NEW 0x02   /* first packet of a connection */
#define LOUPE_EF_PERIODIC 0x04 /* periodic record of a long-lived connection */
#define LOUPE_EF_XDP 0x08      /* emitted by the XDP program */
#define LOUPE_EF_KERNEL 0x10   /* a kernel drop (kdrop.c): kernel_reason, netns_ino, location are set */
#define LOUPE_EF_TCP_RETRANSMIT 0x20 /* a TCP retransmission (tcp.c): netns_ino, packets_fwd, bytes_fwd, packets_rev are set */
#define LOUPE_EF_TCP_RESET 0x40      /* a TCP reset sent or received (tcp.c, direction says which): netns_ino, kernel_reason */

/* match_type: Cilium policy match types (monitor/api). */
#define LOUPE_MATCH_NONE 0
#define LOUPE_MATCH_L3_ONLY 1
#define LOUPE_MATCH_L3_L4 2
#define LOUPE_MATCH_L4_ONLY 3
#define LOUPE_MATCH_ALL 4

#define LOUPE_EVENT_DATA_LEN 128

struct loupe_event {
	__u64 ts_ns; /* bpf_ktime_get_boot_ns() */
	__u8 type;
	__u8 obs_point;
	__u8 verdict;
	__u8 drop_reason;
	__u8 family; /* 4 or 6 */
	__u8 proto;  /* IPPROTO_* */
	__u8 tcp_flags;
	__u8 flags;
	__u32 ifindex; /* host-side veth */
	__u32 ep_id;
	__u32 src_identity;
	__u32 dst_identity;
	__u8 saddr[16]; /* IPv4 uses the first 4 bytes */
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 match_type;
	__u8 direction;
	__u32 policy_id; /* rule that allowed or denied, 0 for none */
	__u32 pkt_len;   /* length of the whole packet */
	__u32 cap_len;   /* bytes of data[] that hold packet bytes, from the Ethernet header */
	__u32 kernel_reason; /* LOUPE_EF_KERNEL: the kernel's enum skb_drop_reason value */
	__u64 packets_fwd; /* conntrack counters at the time of the event */
	__u64 bytes_fwd;
	__u64 packets_rev;
	__u64 bytes_rev;
	__u8 data[LOUPE_EVENT_DATA_LEN];
	__u64 netns_ino; /* LOUPE_EF_KERNEL: inode of the drop's network namespace */
	__u64 location;  /* LOUPE_EF_KERNEL: kernel address where the packet was freed */
	__u64 handshake_ns; /* the connection's TCP handshake time (conntrack.h ct_handshake), 0 = none */
	__u32 svc_id; /* Service frontend the packet was translated from or to (service.h), 0 = none */
	__u32 _pad2;
};

_Static_assert(sizeof(struct loupe_event) == 280, "loupe_event layout changed: update datapath/event.go");

/* Keeps struct loupe_event in the object's BTF, where datapath's
 * TestEventLayoutMatchesBTF reads its layout. Static, so bpf2go makes no
 * variable of it; no program refers to it, so LoadAndAssign never creates
 * its .bss map. */
static struct loupe_event *loupe_event_btf __attribute__((used));

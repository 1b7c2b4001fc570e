package contract

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/structpb"
)

// TCP health events (loupe's tcp:tcp_retransmit_skb, tcp:tcp_send_reset
// and tcp:tcp_receive_reset tracepoints) are flows of their own, not
// fields on the connection's flows: the kernel raises them on its own
// timers, when no packet program sees a new packet to attach them to.
// Each is a FORWARDED trace flow (the segment or the reset did leave or
// arrive) with sub_type from-stack (sent: retransmit, reset_sent) or
// to-stack (reset_received), source and destination as the packet went,
// no TCP flags on its L4 (so Hubble's TCP flag metrics do not count the
// packet twice: loupe's packet programs see the same segment), a summary
// "TCP retransmission …" / "TCP reset sent …" / "TCP reset received", and
// its facts under the extensions Struct's "tcp" key:
//
//	{"tcp": {"event": "retransmit", "segments": 1, "bytes": 1448,
//	  "connection_retransmits": 17, "flags": "SYN", "netns_inode": 4026532890,
//	  "attributed_by": "netns"}}
//	{"tcp": {"event": "reset_sent", "reason": "SK_RST_REASON_NO_SOCKET",
//	  "reason_code": 1, "netns_inode": 4026532890, "attributed_by": "netns"}}
const (
	ExtTCP = "tcp"

	ExtTCPEvent        = "event"                  // TCPEvent*
	ExtTCPSegments     = "segments"               // retransmit: segments sent again
	ExtTCPBytes        = "bytes"                  // retransmit: bytes sent again
	ExtTCPConnRetrans  = "connection_retransmits" // retransmit: the connection's retransmitted segments so far (ss -ti's retrans total)
	ExtTCPFlags        = "flags"                  // retransmit: the segment's flags, e.g. "SYN" for a connect that goes unanswered
	ExtTCPReason       = "reason"                 // reset_sent: enum sk_rst_reason as the running kernel's BTF spells it
	ExtTCPReasonCode   = "reason_code"            // reset_sent: its value on that kernel (not portable)
	ExtTCPNetnsInode   = "netns_inode"            // inode of the socket's network namespace
	ExtTCPAttributedBy = "attributed_by"          // netns, address or none, as for kernel drops

	TCPEventRetransmit    = "retransmit"
	TCPEventResetSent     = "reset_sent"
	TCPEventResetReceived = "reset_received"

	// TCPResetReasonPrefix starts every enum sk_rst_reason name.
	TCPResetReasonPrefix = "SK_RST_REASON_"
)

// TCPEvent returns the fields of a flow's tcp extension, or nil when the
// flow is not a TCP health event.
func TCPEvent(f *flowpb.Flow) map[string]*structpb.Value {
	return extension(f, ExtTCP)
}

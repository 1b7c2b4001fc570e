package contract

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/structpb"
)

// A kernel drop (a packet the kernel freed as dropped, seen by loupe's
// skb:kfree_skb tracepoint) is a DROPPED flow of event type drop, sub_type
// 0 and drop_reason_desc DROP_REASON_UNKNOWN: Hubble's enums have no kernel
// reasons. Its kernel facts are in flow.extensions, an Any holding a
// google.protobuf.Struct (which the stock hubble CLI can print):
//
//	{"kernel_drop": {"reason": "SKB_DROP_REASON_NO_SOCKET", "reason_code": 2,
//	  "function": "__udp4_lib_rcv", "netns_inode": 4026532890,
//	  "attributed_by": "netns"}}
//
// and its summary ends in "; kernel drop SKB_DROP_REASON_NO_SOCKET in
// __udp4_lib_rcv", so any Hubble printer shows them.
const (
	// KernelDropReasonPrefix starts every enum skb_drop_reason name; names
	// may be given and printed without it.
	KernelDropReasonPrefix = "SKB_DROP_REASON_"

	ExtKernelDrop         = "kernel_drop"
	ExtKernelReason       = "reason"        // as the running kernel's BTF spells it
	ExtKernelReasonCode   = "reason_code"   // its enum skb_drop_reason value on that kernel
	ExtKernelFunction     = "function"      // the kernel function that freed the packet, when known
	ExtKernelNetnsInode   = "netns_inode"   // inode of the network namespace of the drop
	ExtKernelAttributedBy = "attributed_by" // netns, address or none
)

// KernelDrop returns the fields of a flow's kernel_drop extension, or nil
// when the flow is not a kernel drop.
func KernelDrop(f *flowpb.Flow) map[string]*structpb.Value {
	return extension(f, ExtKernelDrop)
}

// extension returns the fields under key of a flow's extensions Struct.
func extension(f *flowpb.Flow, key string) map[string]*structpb.Value {
	x := f.GetExtensions()
	if x == nil || x.GetTypeUrl() != structTypeURL {
		return nil
	}
	var s structpb.Struct
	if err := x.UnmarshalTo(&s); err != nil {
		return nil
	}
	return s.GetFields()[key].GetStructValue().GetFields()
}

var structTypeURL = "type.googleapis.com/" + string((&structpb.Struct{}).ProtoReflect().Descriptor().FullName())

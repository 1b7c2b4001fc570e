package observer

import (
	"errors"
	"net/netip"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// Kernel drops (datapath.FlagKernel records) become DROPPED flows as
// contract/kerneldrop.go lays them out.
const (
	ExtKernelDrop         = contract.ExtKernelDrop
	ExtKernelReason       = contract.ExtKernelReason
	ExtKernelReasonCode   = contract.ExtKernelReasonCode
	ExtKernelFunction     = contract.ExtKernelFunction
	ExtKernelNetnsInode   = contract.ExtKernelNetnsInode
	ExtKernelAttributedBy = contract.ExtKernelAttributedBy
)

// How a kernel drop was tied to a pod (the attributed_by value).
const (
	AttributedNetns   = "netns"   // it happened in the pod's network namespace
	AttributedAddress = "address" // in the node's: a packet address is a pod's
	AttributedNone    = "none"    // in the node's, and no address is a pod's
)

// ErrNotReported is returned for a kernel record another agent (or none)
// reports: it happened outside this node's and its endpoints' namespaces.
var ErrNotReported = errors.New("kernel event of another node's namespace")

// NetnsEndpoint is an endpoint of this node whose network namespace a
// kernel event happened in.
type NetnsEndpoint struct {
	ID, Identity uint32
	IPv4, IPv6   netip.Addr
}

// pingRcv frees every ICMP echo reply that no ICMP datagram ("ping")
// socket claims, with NO_SOCKET, also when a raw socket (iputils' ping)
// took its copy: a reply was delivered or nobody waited for it, so
// neither is a pod's traffic dropped, and reporting them inflated the
// Echo-Reply counts Hubble's "missing replies" panel subtracts.
const pingRcv = "ping_rcv"

// KernelEvents names and places the kernel's own records. The agent
// implements it; nil drops every kernel record.
type KernelEvents interface {
	// Netns applies contract.ReportsNetns to a namespace inode: report is
	// whether this agent reports the event, ep the endpoint whose
	// namespace it is (nil for the node's own).
	Netns(inum uint64) (report bool, ep *NetnsEndpoint)
	// DropReason names an enum skb_drop_reason value as the running
	// kernel's BTF spells it.
	DropReason(code uint32) string
	// Function names the kernel function at addr, or "".
	Function(addr uint64) string
	// Identity is the identity the datapath's ipcache gives an address
	// (a kernel record carries none), or 0.
	Identity(a netip.Addr) uint32
	// ResetReason names an enum sk_rst_reason value as the running
	// kernel's BTF spells it.
	ResetReason(code uint32) string
}

// KernelReasonShort is a kernel reason name without its enum prefix
// ("NO_SOCKET"), for filters and compact output.
func KernelReasonShort(name string) string {
	return strings.TrimPrefix(name, datapath.DropReasonPrefix)
}

// kernelDrop fills the drop-specific part of a kernel drop's flow: the
// verdict, the endpoints (the namespace's pod, else a pod by address) and
// the extensions. It returns the attribution.
func (d *Decoder) kernelDrop(b *flowBlock, ev *datapath.Event, ep *NetnsEndpoint) string {
	f := &b.flow
	f.Verdict = flowpb.Verdict_DROPPED
	b.etype.Type = contract.MessageTypeDrop
	f.EventType = &b.etype
	attributed := d.placeKernel(b, ev, ep)
	reason := d.kernel.DropReason(ev.KernelReason)
	d.kreason = reason
	fields := map[string]*structpb.Value{
		ExtKernelReason:       structpb.NewStringValue(reason),
		ExtKernelReasonCode:   structpb.NewNumberValue(float64(ev.KernelReason)),
		ExtKernelNetnsInode:   structpb.NewNumberValue(float64(ev.NetnsIno)),
		ExtKernelAttributedBy: structpb.NewStringValue(attributed),
	}
	sum := f.Summary + "; kernel drop " + reason
	if fn := d.kernel.Function(ev.Location); fn != "" {
		fields[ExtKernelFunction] = structpb.NewStringValue(fn)
		sum += " in " + fn
	}
	f.Summary = sum
	setExtension(f, ExtKernelDrop, &structpb.Struct{Fields: fields})
	return attributed
}

// placeKernel fills the endpoints and the direction of a kernel record's
// flow: the pod whose namespace it happened in (ep), else a pod by address
// (the node's namespace). It returns the attribution.
func (d *Decoder) placeKernel(b *flowBlock, ev *datapath.Event, ep *NetnsEndpoint) string {
	f := &b.flow
	ix := d.index.Load()

	attributed := AttributedNone
	var srcID, dstID, srcIdentity, dstIdentity uint32
	dir := flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN
	if ep != nil {
		attributed = AttributedNetns
		isPod := func(a netip.Addr) bool { return a.IsValid() && (a == ep.IPv4 || a == ep.IPv6) }
		switch {
		case isPod(ev.Dst):
			dir, dstID, dstIdentity = flowpb.TrafficDirection_INGRESS, ep.ID, ep.Identity
		case isPod(ev.Src):
			dir, srcID, srcIdentity = flowpb.TrafficDirection_EGRESS, ep.ID, ep.Identity
		}
	} else {
		switch {
		case ev.Dst.IsValid() && ix.pods[ev.Dst] != nil:
			attributed, dir = AttributedAddress, flowpb.TrafficDirection_INGRESS
		case ev.Src.IsValid() && ix.pods[ev.Src] != nil:
			attributed, dir = AttributedAddress, flowpb.TrafficDirection_EGRESS
		}
	}
	f.TrafficDirection = dir
	if ev.Src.IsValid() {
		if srcIdentity == 0 {
			srcIdentity = d.kernel.Identity(ev.Src)
		}
		if dstIdentity == 0 {
			dstIdentity = d.kernel.Identity(ev.Dst)
		}
		f.Source = d.endpoint(ix, ev.Src, srcID, srcIdentity)
		f.Destination = d.endpoint(ix, ev.Dst, dstID, dstIdentity)
	}
	if ep != nil && dir == flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN {
		// Neither address is the pod's (loopback inside it, or no IP
		// header): the drop still belongs to the pod; name it on both
		// sides by its own address.
		pod := ep.IPv4
		if !pod.IsValid() {
			pod = ep.IPv6
		}
		if pod.IsValid() {
			pe := d.endpoint(ix, pod, ep.ID, ep.Identity)
			f.Source, f.Destination = pe, pe
		}
	}

	return attributed
}

// KernelDropOf returns a flow's kernel-drop extension fields, or nil when
// the flow is not a kernel drop.
func KernelDropOf(f *flowpb.Flow) map[string]*structpb.Value { return contract.KernelDrop(f) }

package contract

import (
	"net"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Ports of the Observer API, as Hubble's: an agent's, and the relay's.
const (
	ObserverPort = 4244
	RelayPort    = 4245
)

// ObserverAddressAnnotation on a Node holds that node's Observer address
// (HOST:PORT) where the InternalIP and ObserverPort would be wrong: the
// lab's agents listen on their own bridge address.
const ObserverAddressAnnotation = "loupe.dev/observer-address"

// NodeInternalIP returns a node's first InternalIP.
func NodeInternalIP(n *corev1.Node) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}

// ObserverAddress is where a node's agent serves the Observer API: its
// ObserverAddressAnnotation, else its InternalIP on port (ObserverPort
// unless configured). It is "" for a node with neither.
func ObserverAddress(n *corev1.Node, port string) string {
	if a := n.Annotations[ObserverAddressAnnotation]; a != "" {
		return a
	}
	if ip, ok := NodeInternalIP(n); ok {
		return net.JoinHostPort(ip.String(), port)
	}
	return ""
}

// TLSServerName is the name an agent's server certificate carries, by
// Hubble's rule: <node>.<cluster>.hubble-grpc.cilium.io with cluster
// "default" and the dots of the node name turned into hyphens, so that one
// *.default.hubble-grpc.cilium.io certificate covers every node. The
// agent advertises it in its Peer and Node answers, and Hubble Relay and
// loupe-relay verify it.
func TLSServerName(node string) string {
	return strings.ReplaceAll(node, ".", "-") + ".default.hubble-grpc.cilium.io"
}

// FlowBatches is loupe's streaming method beside Hubble's GetFlows,
// between its agents and its relay: the same GetFlowsRequest, and the same
// responses in the same order, many to a gRPC message:
//
//	message FlowBatch { repeated observer.GetFlowsResponse responses = 1; }
//
// A GetFlows stream pays gRPC's per-message cost on both ends for every
// flow; loupe-relay follows every agent all the time, so it asks for
// batches, and falls back to GetFlows on an agent that answers
// Unimplemented (Cilium's).
//
// A client that sends FlowBlocksHeader: FlowBlocksFormat may also get
// blocks of the agent's flow history in a FlowBatch, in order with the
// responses around them:
//
//	message FlowBatch {
//	  repeated observer.GetFlowsResponse responses = 1;
//	  repeated FlowBlock blocks = 2;
//	}
//	message FlowBlock {
//	  string node_name = 1;
//	  bytes block = 2; // one block as the history stores it (observer/history.DecodeBlock)
//	  uint64 from_seq = 3;
//	}
//
// Each flow record of a block from the sequence number from_seq on stands
// for the GetFlowsResponse {flow, node_name, time: the flow's time}, each
// lost record for {lost_events, node_name, time: the record's}; records
// before from_seq are not part of the stream. The agent sends one to a follower that
// runs behind its history writer, whose flows are then encoded and
// compressed once for the disk and the follower.
const (
	FlowBatchesService      = "loupe.observer.v1.FlowBatches"
	FlowBatchesStream       = "GetFlowBatches"
	FlowBatchesMethod       = "/" + FlowBatchesService + "/" + FlowBatchesStream
	FlowBatchResponsesField = 1 // FlowBatch.responses
	FlowBatchBlocksField    = 2 // FlowBatch.blocks
	FlowBlockNodeField      = 1 // FlowBlock.node_name
	FlowBlockDataField      = 2 // FlowBlock.block
	FlowBlockFromField      = 3 // FlowBlock.from_seq
	// FlowBlocksHeader is the gRPC metadata key by which a FlowBatches
	// client says it reads FlowBlocks of format FlowBlocksFormat.
	FlowBlocksHeader = "loupe-flow-blocks"
	FlowBlocksFormat = "history-block-1"
)

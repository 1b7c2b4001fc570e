package contract

import (
	"strconv"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// Monitor message types: flow.event_type.type. Cilium's pkg/monitor/api
// numbers them; Hubble's CLI, UI and metrics switch on them.
const (
	MessageTypeUnspec        = 0
	MessageTypeDrop          = 1
	MessageTypeDebug         = 2
	MessageTypeCapture       = 3
	MessageTypeTrace         = 4
	MessageTypePolicyVerdict = 5
	MessageTypeTraceSock     = 7
	MessageTypeAccessLog     = 129 // L7 records
	MessageTypeAgent         = 130
)

// MessageTypeNames are the names `hubble observe --type` accepts, as
// Cilium's MessageTypeNames.
var MessageTypeNames = map[string]int32{
	"drop":           MessageTypeDrop,
	"debug":          MessageTypeDebug,
	"capture":        MessageTypeCapture,
	"trace":          MessageTypeTrace,
	"l7":             MessageTypeAccessLog,
	"agent":          MessageTypeAgent,
	"policy-verdict": MessageTypePolicyVerdict,
	"trace-sock":     MessageTypeTraceSock,
}

// Trace observation points in the monitor's numbering: the sub_type of a
// trace event. flow.TraceObservationPoint renumbers TO_ENDPOINT (0 here) as
// 101; TraceObservationPoint converts.
const (
	TraceToLxc       = 0 // to the pod: loupe's TCX egress on the host veth
	TraceToProxy     = 1
	TraceToHost      = 2
	TraceToStack     = 3
	TraceToOverlay   = 4
	TraceFromLxc     = 5 // from the pod: loupe's XDP and TCX ingress on the host veth
	TraceFromProxy   = 6
	TraceFromHost    = 7
	TraceFromStack   = 8
	TraceFromOverlay = 9
	TraceFromNetwork = 10
	TraceToNetwork   = 11
	TraceFromCrypto  = 12
	TraceToCrypto    = 13
)

// TraceObservationPointNames are the monitor's names of the observation
// points, indexed by number: the TYPE column of a trace and the sub-types
// `--type trace:NAME` accepts.
var TraceObservationPointNames = []string{
	TraceToLxc:       "to-endpoint",
	TraceToProxy:     "to-proxy",
	TraceToHost:      "to-host",
	TraceToStack:     "to-stack",
	TraceToOverlay:   "to-overlay",
	TraceFromLxc:     "from-endpoint",
	TraceFromProxy:   "from-proxy",
	TraceFromHost:    "from-host",
	TraceFromStack:   "from-stack",
	TraceFromOverlay: "from-overlay",
	TraceFromNetwork: "from-network",
	TraceToNetwork:   "to-network",
	TraceFromCrypto:  "from-crypto",
	TraceToCrypto:    "to-crypto",
}

// TraceObservationPointName names a monitor observation point, or returns
// its number.
func TraceObservationPointName(p uint8) string {
	if int(p) < len(TraceObservationPointNames) {
		return TraceObservationPointNames[p]
	}
	return strconv.Itoa(int(p))
}

// TraceObservationPoint is the flow field for a monitor observation point,
// as Hubble's parser sets it.
func TraceObservationPoint(p uint8) flowpb.TraceObservationPoint {
	if p == TraceToLxc {
		return flowpb.TraceObservationPoint_TO_ENDPOINT
	}
	return flowpb.TraceObservationPoint(p)
}

// Agent notification sub-types, as `--type agent:NAME` names them.
var AgentNotificationNames = []string{
	0:  "unspecified",
	1:  "message",
	2:  "agent-started",
	3:  "endpoint-regenerate-success",
	4:  "endpoint-regenerate-failure",
	5:  "policy-updated",
	6:  "policy-deleted",
	7:  "endpoint-created",
	8:  "endpoint-deleted",
	9:  "ipcache-upserted",
	10: "ipcache-deleted",
}

// Policy match types of a policy-verdict event (flow.policy_match_type).
const (
	PolicyMatchNone      = 0
	PolicyMatchL3Only    = 1
	PolicyMatchL3L4      = 2
	PolicyMatchL4Only    = 3
	PolicyMatchAll       = 4
	PolicyMatchL3Proto   = 5
	PolicyMatchProtoOnly = 6
)

var policyMatchNames = []string{
	PolicyMatchNone:      "none",
	PolicyMatchL3Only:    "L3-Only",
	PolicyMatchL3L4:      "L3-L4",
	PolicyMatchL4Only:    "L4-Only",
	PolicyMatchAll:       "all",
	PolicyMatchL3Proto:   "L3-Proto",
	PolicyMatchProtoOnly: "Proto-Only",
}

// PolicyMatchName is Cilium's name of a policy match type ("L3-L4"), or
// "unknown".
func PolicyMatchName(m uint32) string {
	if int64(m) < int64(len(policyMatchNames)) {
		return policyMatchNames[m]
	}
	return "unknown"
}

// Verdicts and directions as the datapath writes them: the numbers of
// Hubble's flow.Verdict and flow.TrafficDirection, so a record's byte is
// the flow's enum.
const (
	VerdictForwarded = uint8(flowpb.Verdict_FORWARDED)
	VerdictDropped   = uint8(flowpb.Verdict_DROPPED)

	DirectionIngress = uint8(flowpb.TrafficDirection_INGRESS) // to the pod
	DirectionEgress  = uint8(flowpb.TrafficDirection_EGRESS)  // from the pod
)

// Drop reasons loupe's datapath raises: flow.DropReason numbers, which are
// Cilium's datapath drop codes.
const (
	DropInvalidSourceIP = uint8(flowpb.DropReason_INVALID_SOURCE_IP)
	DropPolicyDenied    = uint8(flowpb.DropReason_POLICY_DENIED)
	DropInvalidPacket   = uint8(flowpb.DropReason_INVALID_PACKET_DROPPED)
	// DropNoService: a packet to a Service without a ready backend; the
	// datapath answers it with ICMP port unreachable.
	DropNoService = uint8(flowpb.DropReason_SERVICE_BACKEND_NOT_FOUND)
)

package otlp

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
)

// Attribute names of a flow's log record. OpenTelemetry's semantic
// conventions where they have one; k8s.src.* / k8s.dst.* for the two sides
// (Beyla's convention, which the conventions lack); loupe.* for what only
// loupe and Hubble have. docs/otlp.md is the table of them.
const (
	AttrSourceAddress      = "source.address"
	AttrSourcePort         = "source.port"
	AttrDestinationAddress = "destination.address"
	AttrDestinationPort    = "destination.port"
	AttrNetworkTransport   = "network.transport"
	AttrNetworkType        = "network.type"
	AttrDNSQuestionName    = "dns.question.name"
	AttrHTTPMethod         = "http.request.method"
	AttrHTTPStatusCode     = "http.response.status_code"
	AttrURLPath            = "url.path"
	AttrK8sNamespace       = "k8s.namespace.name"
	AttrK8sPod             = "k8s.pod.name"
	AttrK8sNode            = "k8s.node.name"

	AttrSrcNamespace = "k8s.src.namespace"
	AttrSrcName      = "k8s.src.name"
	AttrSrcOwnerName = "k8s.src.owner.name"
	AttrSrcOwnerType = "k8s.src.owner.type"
	AttrDstNamespace = "k8s.dst.namespace"
	AttrDstName      = "k8s.dst.name"
	AttrDstOwnerName = "k8s.dst.owner.name"
	AttrDstOwnerType = "k8s.dst.owner.type"

	AttrVerdict          = "loupe.verdict"
	AttrDropReason       = "loupe.drop_reason"
	AttrTrafficDirection = "loupe.traffic_direction"
	AttrIsReply          = "loupe.is_reply"
	AttrTCPFlags         = "loupe.tcp.flags"
	AttrSrcIdentity      = "loupe.src.identity"
	AttrDstIdentity      = "loupe.dst.identity"
	AttrIngressAllowedBy = "loupe.policy.ingress_allowed_by"
	AttrEgressAllowedBy  = "loupe.policy.egress_allowed_by"
	AttrIngressDeniedBy  = "loupe.policy.ingress_denied_by"
	AttrEgressDeniedBy   = "loupe.policy.egress_denied_by"
	AttrFlowUUID         = "loupe.flow.uuid"
	// AttrFlowCount is how many flows a record stands for: 1 in raw mode,
	// the edge's count in aggregated mode. Summing it over what a collector
	// received gives the flows that arrived.
	AttrFlowCount = "loupe.flow.count"
	// AttrIntervalMillis is the aggregation interval of an aggregated record.
	AttrIntervalMillis = "loupe.aggregation.interval_ms"
	// ExtPrefix starts the attributes flattened from a flow's extensions
	// Struct: {"kernel_drop":{"reason":...}} becomes loupe.kernel_drop.reason.
	ExtPrefix = "loupe."
)

// Event names of the log records.
const (
	EventFlow          = "loupe.flow"
	EventFlowAggregate = "loupe.flow.aggregate"
)

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// appendStr appends a string attribute unless v is empty: an absent
// attribute says "unknown" better than an empty one.
func appendStr(kv []*commonpb.KeyValue, k, v string) []*commonpb.KeyValue {
	if v == "" {
		return kv
	}
	return append(kv, str(k, v))
}

// ports returns the transport name (semantic conventions' values, plus
// icmp and sctp) and the ports of a flow's L4 header (0 when it has none).
func ports(l4 *flowpb.Layer4) (transport string, sport, dport uint32) {
	switch p := l4.GetProtocol().(type) {
	case *flowpb.Layer4_TCP:
		return "tcp", p.TCP.GetSourcePort(), p.TCP.GetDestinationPort()
	case *flowpb.Layer4_UDP:
		return "udp", p.UDP.GetSourcePort(), p.UDP.GetDestinationPort()
	case *flowpb.Layer4_SCTP:
		return "sctp", p.SCTP.GetSourcePort(), p.SCTP.GetDestinationPort()
	case *flowpb.Layer4_ICMPv4, *flowpb.Layer4_ICMPv6:
		return "icmp", 0, 0
	}
	return "", 0, 0
}

func networkType(v flowpb.IPVersion) string {
	switch v {
	case flowpb.IPVersion_IPv4:
		return "ipv4"
	case flowpb.IPVersion_IPv6:
		return "ipv6"
	}
	return ""
}

// observedEndpoint is the pod the flow was observed at, for the
// single-pod k8s.namespace.name / k8s.pod.name: the destination of a flow
// seen going to an endpoint (or of an ingress connection), else the source.
func observedEndpoint(f *flowpb.Flow) *flowpb.Endpoint {
	switch f.GetTraceObservationPoint() {
	case flowpb.TraceObservationPoint_TO_ENDPOINT:
		return f.GetDestination()
	case flowpb.TraceObservationPoint_FROM_ENDPOINT:
		return f.GetSource()
	}
	if f.GetTrafficDirection() == flowpb.TrafficDirection_INGRESS && f.GetDestination().GetPodName() != "" {
		return f.GetDestination()
	}
	if f.GetSource().GetPodName() != "" {
		return f.GetSource()
	}
	return f.GetDestination()
}

// dropReason is the kernel's reason for a kernel drop (Hubble's enum has
// none of them), else Hubble's drop reason name; "" when not dropped.
func dropReason(f *flowpb.Flow, kd map[string]*structpb.Value) string {
	if f.GetVerdict() != flowpb.Verdict_DROPPED {
		return ""
	}
	if r := kd[contract.ExtKernelReason].GetStringValue(); r != "" {
		return r
	}
	return f.GetDropReasonDesc().String()
}

// extensionFields returns the top-level fields of a flow's extensions
// Struct (kernel_drop, and what other features add), or nil.
func extensionFields(f *flowpb.Flow) map[string]*structpb.Value {
	x := f.GetExtensions()
	if x == nil {
		return nil
	}
	var s structpb.Struct
	if err := x.UnmarshalTo(&s); err != nil {
		return nil
	}
	return s.GetFields()
}

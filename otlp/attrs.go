package otlp

import (
	"net/url"
	"strings"

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

func num(k string, v int64) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v}}}
}

func boolean(k string, v bool) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v}}}
}

func strs(k string, v []string) *commonpb.KeyValue {
	vals := make([]*commonpb.AnyValue, len(v))
	for i, s := range v {
		vals[i] = &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vals}}}}
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

func (a *attrs) side(ep *flowpb.Endpoint, ns, name, owner, ownerType, identity string) {
	a.strIf(ns, ep.GetNamespace())
	a.strIf(name, ep.GetPodName())
	if w := ep.GetWorkloads(); len(w) > 0 {
		a.strIf(owner, w[0].GetName())
		a.strIf(ownerType, w[0].GetKind())
	}
	if id := ep.GetIdentity(); id != 0 {
		a.num(identity, int64(id))
	}
}

func policyNames(ps []*flowpb.Policy) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		if p.GetNamespace() != "" {
			out = append(out, p.GetNamespace()+"/"+p.GetName())
		} else {
			out = append(out, p.GetName())
		}
	}
	return out
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

func tcpFlags(l4 *flowpb.Layer4) string {
	fl := l4.GetTCP().GetFlags()
	if fl == nil {
		return ""
	}
	var names []string
	for _, x := range []struct {
		on   bool
		name string
	}{{fl.SYN, "SYN"}, {fl.ACK, "ACK"}, {fl.FIN, "FIN"}, {fl.RST, "RST"}, {fl.PSH, "PSH"}, {fl.URG, "URG"}, {fl.ECE, "ECE"}, {fl.CWR, "CWR"}, {fl.NS, "NS"}} {
		if x.on {
			names = append(names, x.name)
		}
	}
	return strings.Join(names, ",")
}

// FlowAttributes returns the attributes of one flow's log record.
func FlowAttributes(f *flowpb.Flow) []*commonpb.KeyValue {
	a := newAttrs(40)
	a.strIf(AttrSourceAddress, f.GetIP().GetSource())
	a.strIf(AttrDestinationAddress, f.GetIP().GetDestination())
	a.strIf(AttrNetworkType, networkType(f.GetIP().GetIpVersion()))
	transport, sport, dport := ports(f.GetL4())
	a.strIf(AttrNetworkTransport, transport)
	if sport != 0 {
		a.num(AttrSourcePort, int64(sport))
	}
	if dport != 0 {
		a.num(AttrDestinationPort, int64(dport))
	}
	a.strIf(AttrTCPFlags, tcpFlags(f.GetL4()))
	a.l7(f.GetL7())

	obs := observedEndpoint(f)
	a.strIf(AttrK8sNamespace, obs.GetNamespace())
	a.strIf(AttrK8sPod, obs.GetPodName())
	a.strIf(AttrK8sNode, f.GetNodeName())
	a.side(f.GetSource(), AttrSrcNamespace, AttrSrcName, AttrSrcOwnerName, AttrSrcOwnerType, AttrSrcIdentity)
	a.side(f.GetDestination(), AttrDstNamespace, AttrDstName, AttrDstOwnerName, AttrDstOwnerType, AttrDstIdentity)

	a.str(AttrVerdict, f.GetVerdict().String())
	ext := extensionFields(f)
	kd := ext[contract.ExtKernelDrop].GetStructValue().GetFields()
	a.strIf(AttrDropReason, dropReason(f, kd))
	if d := f.GetTrafficDirection(); d != flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN {
		a.str(AttrTrafficDirection, d.String())
	}
	if r := f.GetIsReply(); r != nil {
		a.boolean(AttrIsReply, r.GetValue())
	}
	for _, p := range []struct {
		key string
		ps  []*flowpb.Policy
	}{{AttrIngressAllowedBy, f.GetIngressAllowedBy()}, {AttrEgressAllowedBy, f.GetEgressAllowedBy()},
		{AttrIngressDeniedBy, f.GetIngressDeniedBy()}, {AttrEgressDeniedBy, f.GetEgressDeniedBy()}} {
		if len(p.ps) > 0 {
			a.strs(p.key, policyNames(p.ps))
		}
	}
	a.extensions(ext)
	a.strIf(AttrFlowUUID, f.GetUuid())
	a.num(AttrFlowCount, 1)
	return a.kv
}

// appendL7 maps Hubble's L7 records (flow.L7: dns, http) to the semantic
// conventions' DNS and HTTP attributes.
func (a *attrs) l7(l7 *flowpb.Layer7) {
	if dns := l7.GetDns(); dns != nil {
		// Hubble keeps the query's trailing dot; the conventions' examples
		// have none.
		a.strIf(AttrDNSQuestionName, strings.TrimSuffix(dns.GetQuery(), "."))
	}
	if h := l7.GetHttp(); h != nil {
		a.strIf(AttrHTTPMethod, h.GetMethod())
		if h.GetCode() != 0 {
			a.num(AttrHTTPStatusCode, int64(h.GetCode()))
		}
		if u, err := url.Parse(h.GetUrl()); err == nil {
			a.strIf(AttrURLPath, u.Path)
		}
	}
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

// appendExtensions flattens the extensions Struct into loupe.<key>.<field>
// attributes, so that whatever a feature puts there is exported without
// this package knowing it. Numbers that are whole stay integers.
func (a *attrs) extensions(fields map[string]*structpb.Value) {
	for k, v := range fields {
		a.value(ExtPrefix+k, v)
	}
}

func (a *attrs) value(key string, v *structpb.Value) {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		for k, sub := range x.StructValue.GetFields() {
			a.value(key+"."+k, sub)
		}
	case *structpb.Value_StringValue:
		a.str(key, x.StringValue)
	case *structpb.Value_BoolValue:
		a.boolean(key, x.BoolValue)
	case *structpb.Value_NumberValue:
		if n := x.NumberValue; n == float64(int64(n)) {
			a.num(key, int64(n))
		} else {
			a.kv = append(a.kv, &commonpb.KeyValue{Key: key, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: n}}})
		}
	case *structpb.Value_ListValue:
		vals := make([]*commonpb.AnyValue, 0, len(x.ListValue.GetValues()))
		for _, e := range x.ListValue.GetValues() {
			sv := e.GetStringValue()
			if _, ok := e.GetKind().(*structpb.Value_StringValue); !ok {
				sv = e.String()
			}
			vals = append(vals, &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: sv}})
		}
		a.kv = append(a.kv, &commonpb.KeyValue{Key: key, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vals}}}})
	}
}

// attrs builds a record's attributes. The values come from slabs sized for
// one record, so a flow's 30-odd attributes cost a handful of allocations
// instead of three each; past a slab's capacity it allocates one by one
// (never appending to a slab, whose elements are pointed to).
type attrs struct {
	kv  []*commonpb.KeyValue
	kvs []commonpb.KeyValue
	avs []commonpb.AnyValue
	svs []commonpb.AnyValue_StringValue
	ivs []commonpb.AnyValue_IntValue
}

func newAttrs(n int) *attrs {
	return &attrs{kv: make([]*commonpb.KeyValue, 0, n), kvs: make([]commonpb.KeyValue, n), avs: make([]commonpb.AnyValue, n),
		svs: make([]commonpb.AnyValue_StringValue, n), ivs: make([]commonpb.AnyValue_IntValue, n/2)}
}

// add appends key with the AnyValue v points to, from the slabs.
func (a *attrs) kvFor(key string) *commonpb.KeyValue {
	var kv *commonpb.KeyValue
	var av *commonpb.AnyValue
	if i := len(a.kv); i < len(a.kvs) && i < len(a.avs) {
		kv, av = &a.kvs[i], &a.avs[i]
	} else {
		kv, av = &commonpb.KeyValue{}, &commonpb.AnyValue{}
	}
	kv.Key, kv.Value = key, av
	a.kv = append(a.kv, kv)
	return kv
}

func (a *attrs) str(k, v string) {
	kv := a.kvFor(k)
	var sv *commonpb.AnyValue_StringValue
	if len(a.svs) > 0 {
		sv, a.svs = &a.svs[0], a.svs[1:]
	} else {
		sv = &commonpb.AnyValue_StringValue{}
	}
	sv.StringValue = v
	kv.Value.Value = sv
}

// strIf adds a string attribute unless v is empty: an absent attribute
// says "unknown" better than an empty one.
func (a *attrs) strIf(k, v string) {
	if v != "" {
		a.str(k, v)
	}
}

func (a *attrs) num(k string, v int64) {
	kv := a.kvFor(k)
	var iv *commonpb.AnyValue_IntValue
	if len(a.ivs) > 0 {
		iv, a.ivs = &a.ivs[0], a.ivs[1:]
	} else {
		iv = &commonpb.AnyValue_IntValue{}
	}
	iv.IntValue = v
	kv.Value.Value = iv
}

func (a *attrs) boolean(k string, v bool) { a.kv = append(a.kv, boolean(k, v)) }

func (a *attrs) strs(k string, v []string) { a.kv = append(a.kv, strs(k, v)) }

package otlp

import (
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
)

// The exporter's previous encoder, kept as the oracle of the wire encoder
// (encode.go): it builds the OTLP protobuf objects of a flow's record the
// way docs/otlp.md describes them, one field at a time, and proto.Marshal
// encoded them. Its one change: it visits the extensions' keys in sorted
// order (Go's map order before), as the wire encoder writes them, so that
// the two can be compared exactly.

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

// refFlowAttributes returns the attributes of one flow's log record.
func refFlowAttributes(f *flowpb.Flow) []*commonpb.KeyValue {
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

// appendExtensions flattens the extensions Struct into loupe.<key>.<field>
// attributes, so that whatever a feature puts there is exported without
// this package knowing it. Numbers that are whole stay integers.
func (a *attrs) extensions(fields map[string]*structpb.Value) {
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		a.value(ExtPrefix+k, fields[k])
	}
}

func (a *attrs) value(key string, v *structpb.Value) {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		sub := x.StructValue.GetFields()
		for _, k := range slices.Sorted(maps.Keys(sub)) {
			a.value(key+"."+k, sub[k])
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

// refFlowRecord is one flow's log record: its time, the flow's summary as
// the body, and refFlowAttributes.
func refFlowRecord(f *flowpb.Flow, now time.Time) *logspb.LogRecord {
	r := &logspb.LogRecord{
		ObservedTimeUnixNano: uint64(now.UnixNano()),
		SeverityNumber:       logspb.SeverityNumber_SEVERITY_NUMBER_INFO,
		SeverityText:         "INFO",
		EventName:            EventFlow,
		Body:                 &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: f.GetSummary()}},
		Attributes:           refFlowAttributes(f),
	}
	if t := f.GetTime(); t != nil {
		r.TimeUnixNano = uint64(t.AsTime().UnixNano())
	}
	if f.GetVerdict() == flowpb.Verdict_DROPPED {
		r.SeverityNumber, r.SeverityText = logspb.SeverityNumber_SEVERITY_NUMBER_WARN, "WARN"
	}
	return r
}

func (a *attrs) edgeSide(s side, ns, name, owner, ownerType, addr, identity string) {
	a.strIf(ns, s.namespace)
	a.strIf(name, s.pod)
	a.strIf(owner, s.owner)
	a.strIf(ownerType, s.ownerType)
	a.strIf(addr, s.addr)
	if s.identity != 0 {
		a.num(identity, int64(s.identity))
	}
}

// refEdgeRecord is one edge's log record: the attributes of refFlowAttributes
// that the edge keeps, loupe.flow.count and the interval.
func refEdgeRecord(k edgeKey, c *edgeCount, now time.Time, interval time.Duration) *logspb.LogRecord {
	a := newAttrs(24)
	a.edgeSide(k.src, AttrSrcNamespace, AttrSrcName, AttrSrcOwnerName, AttrSrcOwnerType, AttrSourceAddress, AttrSrcIdentity)
	a.edgeSide(k.dst, AttrDstNamespace, AttrDstName, AttrDstOwnerName, AttrDstOwnerType, AttrDestinationAddress, AttrDstIdentity)
	obs := k.src
	if k.obsIsDst {
		obs = k.dst
	}
	a.strIf(AttrK8sNamespace, obs.namespace)
	a.strIf(AttrK8sPod, obs.pod)
	a.strIf(AttrK8sNode, k.node)
	if k.dport != 0 {
		a.num(AttrDestinationPort, int64(k.dport))
	}
	a.strIf(AttrNetworkTransport, k.transport)
	a.strIf(AttrNetworkType, k.netType)
	a.str(AttrVerdict, k.verdict.String())
	a.strIf(AttrDropReason, k.dropReason)
	a.strIf(AttrTrafficDirection, k.direction)
	if k.dns != "" || k.method != "" {
		l7 := &flowpb.Layer7{}
		if k.dns != "" {
			l7.Record = &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Query: k.dns}}
		} else {
			l7.Record = &flowpb.Layer7_Http{Http: &flowpb.HTTP{Method: k.method, Code: k.code}}
		}
		a.l7(l7)
	}
	a.num(AttrFlowCount, int64(c.count))
	a.num(AttrIntervalMillis, interval.Milliseconds())
	r := &logspb.LogRecord{
		TimeUnixNano:         c.first,
		ObservedTimeUnixNano: uint64(now.UnixNano()),
		SeverityNumber:       logspb.SeverityNumber_SEVERITY_NUMBER_INFO,
		SeverityText:         "INFO",
		EventName:            EventFlowAggregate,
		Attributes:           a.kv,
	}
	if k.verdict == flowpb.Verdict_DROPPED {
		r.SeverityNumber, r.SeverityText = logspb.SeverityNumber_SEVERITY_NUMBER_WARN, "WARN"
	}
	return r
}

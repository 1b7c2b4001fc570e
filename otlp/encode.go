package otlp

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The exporter writes each ExportLogsServiceRequest as protobuf bytes
// straight from the flows, as relay/frame.go forwards flows: no LogRecord,
// KeyValue or AnyValue objects per flow (about 25 allocations and most of
// the exporter's CPU), and no marshalling pass over them. A request is
//
//	ExportLogsServiceRequest{resource_logs: [ResourceLogs{
//	    resource: <fixed>, scope_logs: [ScopeLogs{scope: <fixed>, log_records: [...]}]}]}
//
// The records are appended to one buffer behind room left for the
// header; the header (whose lengths depend on the records) is written into
// that room when the batch is complete, so the bytes are never copied.
// TestEncoderMatchesProto and FuzzEncoder hold the bytes equal, decoded,
// to the OTLP protobuf objects the documented mapping describes.

// requestHeader holds the fixed parts of every request.
type requestHeader struct {
	resource []byte // ResourceLogs.resource, with its tag and length
	scope    []byte // ScopeLogs.scope, with its tag and length
	room     int    // bytes a batch leaves at its start for the header
}

func newRequestHeader(res *resourcepb.Resource, scope *commonpb.InstrumentationScope) (requestHeader, error) {
	var h requestHeader
	rb, err := proto.Marshal(res)
	if err != nil {
		return h, err
	}
	sb, err := proto.Marshal(scope)
	if err != nil {
		return h, err
	}
	h.resource = appendBytesField(nil, rlResource, rb)
	h.scope = appendBytesField(nil, slScope, sb)
	// Three tags of one byte and three lengths of at most 10.
	h.room = len(h.resource) + len(h.scope) + 3*(1+protowire.SizeVarint(^uint64(0)))
	return h, nil
}

// start returns an empty batch buffer on b's memory.
func (h *requestHeader) start(b []byte) []byte {
	if cap(b) < h.room {
		b = make([]byte, h.room, h.room+64<<10)
	}
	return b[:h.room]
}

// finish writes the header in front of the records of b (a buffer from
// start, then records) and returns where the request begins in b.
func (h *requestHeader) finish(b []byte) int {
	records := len(b) - h.room
	sl := len(h.scope) + records
	rl := len(h.resource) + protowire.SizeTag(rlScopeLogs) + protowire.SizeBytes(sl)
	size := protowire.SizeTag(reqResourceLogs) + protowire.SizeVarint(uint64(rl)) + len(h.resource) +
		protowire.SizeTag(rlScopeLogs) + protowire.SizeVarint(uint64(sl)) + len(h.scope)
	start := h.room - size
	w := b[start:start]
	w = protowire.AppendTag(w, reqResourceLogs, protowire.BytesType)
	w = protowire.AppendVarint(w, uint64(rl))
	w = append(w, h.resource...)
	w = protowire.AppendTag(w, rlScopeLogs, protowire.BytesType)
	w = protowire.AppendVarint(w, uint64(sl))
	_ = append(w, h.scope...)
	return start
}

// enumNames looks enum names up by number as the generated String() does,
// without its descriptor lookup: unknown numbers are written as digits.
type enumNames []string

func newEnumNames(m map[int32]string) enumNames {
	var e enumNames
	for n, name := range m {
		if n >= 0 && n < 1024 {
			for len(e) <= int(n) {
				e = append(e, "")
			}
			e[n] = name
		}
	}
	return e
}

func (e enumNames) name(n int32) string {
	if n >= 0 && int(n) < len(e) && e[n] != "" {
		return e[n]
	}
	return strconv.Itoa(int(n))
}

var (
	verdictNames    = newEnumNames(flowpb.Verdict_name)
	dropReasonNames = newEnumNames(flowpb.DropReason_name)
	directionNames  = newEnumNames(flowpb.TrafficDirection_name)
)

// recordEncoder appends flows' log records to a batch; its scratch space
// is reused from record to record. Not safe for concurrent use.
type recordEncoder struct {
	ext     extAttrs
	scratch []byte
}

// beginRecord starts one LogRecord (ScopeLogs.log_records) with what every
// record has; endRecord closes it.
func beginRecord(b []byte, t, now uint64, dropped bool, event string) ([]byte, int) {
	b = protowire.AppendTag(b, slLogRecords, protowire.BytesType)
	b, mark := beginLen(b, 2) // records are 128 B to 16 KiB
	if t != 0 {
		b = protowire.AppendTag(b, lrTime, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, t)
	}
	if now != 0 {
		b = protowire.AppendTag(b, lrObservedTime, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, now)
	}
	sev, text := uint64(severityInfo), "INFO"
	if dropped {
		sev, text = severityWarn, "WARN"
	}
	b = protowire.AppendTag(b, lrSeverityNumber, protowire.VarintType)
	b = protowire.AppendVarint(b, sev)
	b = appendBytesField(b, lrSeverityText, text)
	b = appendBytesField(b, lrEventName, event)
	return b, mark
}

func endRecord(b []byte, mark int) []byte { return endLen(b, mark, 2) }

func unixNano(now time.Time) uint64 { return uint64(now.UnixNano()) }

// appendFlow appends f's log record: its time, the flow's summary as the
// body, and the attributes docs/otlp.md lists, in that order.
func (r *recordEncoder) appendFlow(b []byte, f *flowpb.Flow, now time.Time) []byte {
	var t uint64
	if ft := f.GetTime(); ft != nil {
		t = uint64(ft.AsTime().UnixNano())
	}
	b, mark := beginRecord(b, t, unixNano(now), f.GetVerdict() == flowpb.Verdict_DROPPED, EventFlow)
	summary := f.GetSummary()
	if !validUTF8(summary) {
		summary = strings.ToValidUTF8(summary, "\uFFFD")
	}
	b = protowire.AppendTag(b, lrBody, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(protowire.SizeTag(avString)+sizeStr(summary)))
	b = appendBytesField(b, avString, summary)

	ip := f.GetIP()
	b = appendStrAttrIf(b, AttrSourceAddress, ip.GetSource())
	b = appendStrAttrIf(b, AttrDestinationAddress, ip.GetDestination())
	b = appendStrAttrIf(b, AttrNetworkType, networkType(ip.GetIpVersion()))
	transport, sport, dport := ports(f.GetL4())
	b = appendStrAttrIf(b, AttrNetworkTransport, transport)
	if sport != 0 {
		b = appendIntAttr(b, AttrSourcePort, int64(sport))
	}
	if dport != 0 {
		b = appendIntAttr(b, AttrDestinationPort, int64(dport))
	}
	r.scratch = appendTCPFlags(r.scratch[:0], f.GetL4())
	b = appendStrAttrIf(b, AttrTCPFlags, r.scratch)
	b = appendL7(b, f.GetL7())

	obs := observedEndpoint(f)
	b = appendStrAttrIf(b, AttrK8sNamespace, obs.GetNamespace())
	b = appendStrAttrIf(b, AttrK8sPod, obs.GetPodName())
	b = appendStrAttrIf(b, AttrK8sNode, f.GetNodeName())
	b = appendSide(b, f.GetSource(), AttrSrcNamespace, AttrSrcName, AttrSrcOwnerName, AttrSrcOwnerType, AttrSrcIdentity)
	b = appendSide(b, f.GetDestination(), AttrDstNamespace, AttrDstName, AttrDstOwnerName, AttrDstOwnerType, AttrDstIdentity)

	b = appendStrAttr(b, AttrVerdict, verdictNames.name(int32(f.GetVerdict())))
	r.ext.encode(f)
	if f.GetVerdict() == flowpb.Verdict_DROPPED {
		// The kernel's reason for a kernel drop (Hubble's enum has none of
		// them), else Hubble's drop reason name.
		if len(r.ext.kernelReason) > 0 {
			b = appendStrAttr(b, AttrDropReason, r.ext.kernelReason)
		} else {
			b = appendStrAttrIf(b, AttrDropReason, dropReasonNames.name(int32(f.GetDropReasonDesc())))
		}
	}
	if d := f.GetTrafficDirection(); d != flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN {
		b = appendStrAttr(b, AttrTrafficDirection, directionNames.name(int32(d)))
	}
	if rep := f.GetIsReply(); rep != nil {
		b = appendBoolAttr(b, AttrIsReply, rep.GetValue())
	}
	b = r.appendPolicies(b, AttrIngressAllowedBy, f.GetIngressAllowedBy())
	b = r.appendPolicies(b, AttrEgressAllowedBy, f.GetEgressAllowedBy())
	b = r.appendPolicies(b, AttrIngressDeniedBy, f.GetIngressDeniedBy())
	b = r.appendPolicies(b, AttrEgressDeniedBy, f.GetEgressDeniedBy())
	b = append(b, r.ext.out...)
	b = appendStrAttrIf(b, AttrFlowUUID, f.GetUuid())
	b = appendIntAttr(b, AttrFlowCount, 1)
	return endRecord(b, mark)
}

// appendSide appends one end's k8s.src.* or k8s.dst.* attributes.
func appendSide(b []byte, ep *flowpb.Endpoint, ns, name, owner, ownerType, identity string) []byte {
	b = appendStrAttrIf(b, ns, ep.GetNamespace())
	b = appendStrAttrIf(b, name, ep.GetPodName())
	if w := ep.GetWorkloads(); len(w) > 0 {
		b = appendStrAttrIf(b, owner, w[0].GetName())
		b = appendStrAttrIf(b, ownerType, w[0].GetKind())
	}
	if id := ep.GetIdentity(); id != 0 {
		b = appendIntAttr(b, identity, int64(id))
	}
	return b
}

// appendPolicies appends the policies' namespace/name as an array.
func (r *recordEncoder) appendPolicies(b []byte, key string, ps []*flowpb.Policy) []byte {
	if len(ps) == 0 {
		return b
	}
	b, a := beginArrayAttr(b, key)
	for _, p := range ps {
		r.scratch = r.scratch[:0]
		if ns := p.GetNamespace(); ns != "" {
			r.scratch = append(append(r.scratch, ns...), '/')
		}
		r.scratch = append(r.scratch, p.GetName()...)
		b = appendArrayStr(b, r.scratch)
	}
	return a.end(b)
}

// appendTCPFlags appends the TCP flags that are set, comma-separated.
func appendTCPFlags(b []byte, l4 *flowpb.Layer4) []byte {
	fl := l4.GetTCP().GetFlags()
	if fl == nil {
		return b
	}
	for _, x := range [...]struct {
		on   bool
		name string
	}{{fl.SYN, "SYN"}, {fl.ACK, "ACK"}, {fl.FIN, "FIN"}, {fl.RST, "RST"}, {fl.PSH, "PSH"}, {fl.URG, "URG"}, {fl.ECE, "ECE"}, {fl.CWR, "CWR"}, {fl.NS, "NS"}} {
		if x.on {
			if len(b) > 0 {
				b = append(b, ',')
			}
			b = append(b, x.name...)
		}
	}
	return b
}

// appendL7 maps Hubble's L7 records (flow.L7: dns, http) to the semantic
// conventions' DNS and HTTP attributes.
func appendL7(b []byte, l7 *flowpb.Layer7) []byte {
	if dns := l7.GetDns(); dns != nil {
		// Hubble keeps the query's trailing dot; the conventions' examples
		// have none.
		b = appendStrAttrIf(b, AttrDNSQuestionName, strings.TrimSuffix(dns.GetQuery(), "."))
	}
	if h := l7.GetHttp(); h != nil {
		b = appendStrAttrIf(b, AttrHTTPMethod, h.GetMethod())
		if h.GetCode() != 0 {
			b = appendIntAttr(b, AttrHTTPStatusCode, int64(h.GetCode()))
		}
		if h.GetUrl() != "" {
			if u, err := url.Parse(h.GetUrl()); err == nil {
				b = appendStrAttrIf(b, AttrURLPath, u.Path)
			}
		}
	}
	return b
}

// appendEdge appends one edge's aggregated log record: the attributes of
// a flow's record that the edge keeps, loupe.flow.count and the interval.
func appendEdge(b []byte, k edgeKey, c *edgeCount, now time.Time, interval time.Duration) []byte {
	b, mark := beginRecord(b, c.first, unixNano(now), k.verdict == flowpb.Verdict_DROPPED, EventFlowAggregate)
	b = appendEdgeSide(b, k.src, AttrSrcNamespace, AttrSrcName, AttrSrcOwnerName, AttrSrcOwnerType, AttrSourceAddress, AttrSrcIdentity)
	b = appendEdgeSide(b, k.dst, AttrDstNamespace, AttrDstName, AttrDstOwnerName, AttrDstOwnerType, AttrDestinationAddress, AttrDstIdentity)
	obs := k.src
	if k.obsIsDst {
		obs = k.dst
	}
	b = appendStrAttrIf(b, AttrK8sNamespace, obs.namespace)
	b = appendStrAttrIf(b, AttrK8sPod, obs.pod)
	b = appendStrAttrIf(b, AttrK8sNode, k.node)
	if k.dport != 0 {
		b = appendIntAttr(b, AttrDestinationPort, int64(k.dport))
	}
	b = appendStrAttrIf(b, AttrNetworkTransport, k.transport)
	b = appendStrAttrIf(b, AttrNetworkType, k.netType)
	b = appendStrAttr(b, AttrVerdict, verdictNames.name(int32(k.verdict)))
	b = appendStrAttrIf(b, AttrDropReason, k.dropReason)
	b = appendStrAttrIf(b, AttrTrafficDirection, k.direction)
	switch {
	case k.dns != "":
		b = appendStrAttrIf(b, AttrDNSQuestionName, strings.TrimSuffix(k.dns, "."))
	case k.method != "":
		b = appendStrAttr(b, AttrHTTPMethod, k.method)
		if k.code != 0 {
			b = appendIntAttr(b, AttrHTTPStatusCode, int64(k.code))
		}
	}
	b = appendIntAttr(b, AttrFlowCount, int64(c.count))
	b = appendIntAttr(b, AttrIntervalMillis, interval.Milliseconds())
	return endRecord(b, mark)
}

func appendEdgeSide(b []byte, s side, ns, name, owner, ownerType, addr, identity string) []byte {
	b = appendStrAttrIf(b, ns, s.namespace)
	b = appendStrAttrIf(b, name, s.pod)
	b = appendStrAttrIf(b, owner, s.owner)
	b = appendStrAttrIf(b, ownerType, s.ownerType)
	b = appendStrAttrIf(b, addr, s.addr)
	if s.identity != 0 {
		b = appendIntAttr(b, identity, int64(s.identity))
	}
	return b
}

// Package aggregate folds flows into per-edge aggregates over a time range:
// the answer to GetFlows when a client asks for aggregates (the gRPC request
// header MetadataKey), on an agent over its history and ring, and on the
// relay over every agent's aggregates.
//
// An edge is (source workload, destination workload, destination port,
// protocol, verdict); a reply counts on its connection's edge (client to
// server port). It travels as a flow.Flow, so the stock hubble CLI
// and Hubble Relay still read it: the key in source, destination, l4 and
// verdict, the last flow's time in time, "aggregate of N flows" in summary,
// and the counts in extensions (a google.protobuf.Struct) under the key
// "aggregate":
//
//	{"flows": 120, "first": "2026-...Z", "last": "2026-...Z",
//	 "l7_flows": 40, "l7_errors": 3, "l7_responses": 20, "l7_protocol": "HTTP",
//	 "l7_latency_ns_sum": 1.2e9, "l7_latency_ns_max": 9e7,
//	 "connections": 12, "bytes_sent": 52000, "bytes_received": 1.1e6,
//	 "packets_sent": 400, "packets_received": 900}
//
// The l7_ keys are there only when some flow of the edge had an L7 record
// (the latency sum is over the responses);
// the byte and packet keys only when some had connection totals
// (extensions.connection). Those count on the edge from the connection's
// client to its server port whichever way the flow went, "sent" being from
// the client. They are the growth between the reports read: a connection
// open before the range counts from its start, as the report before the
// range is not read. "connections" is connections seen in the range.
// A workload is the first of the endpoint's workloads (namespace/name), else
// its pod (namespace/name), else its reserved identity label, else its IP.
package aggregate

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/grpc/metadata"

	"github.com/loupe-project/loupe/observer/conndelta"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MetadataKey is the gRPC request header that asks GetFlows for aggregates
// ("edges" is the one value). A header rather than a request field: Hubble
// Relay does not pass it on, so through it a client gets plain flows, never
// a mix; and GetFlowsRequest has no field that means this.
const MetadataKey = "loupe-aggregate"

// MetadataValue is the header's value.
const MetadataValue = "edges"

// ExtensionKey is the key of the aggregate in the flow's extensions Struct.
const ExtensionKey = "aggregate"

// Requested reports whether the incoming request asks for aggregates.
func Requested(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return slices.Contains(md.Get(MetadataKey), MetadataValue)
}

// Ask returns ctx with the request header set, for clients.
func Ask(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, MetadataKey, MetadataValue)
}

// Key identifies an edge.
type Key struct {
	Source, Destination string
	Port                uint32
	Protocol            string
	Verdict             flowpb.Verdict
}

// Edge is the aggregate of the flows of one key.
type Edge struct {
	Key
	// src and dst are endpoints to print the edge with.
	src, dst          *flowpb.Endpoint
	srcIP, dstIP      string
	Flows             uint64
	First, Last       time.Time
	L7Flows, L7Errors uint64
	L7Responses       uint64 // L7 flows that are responses: the latencies' count
	L7Protocol        string // HTTP or DNS, of the last L7 flow
	L7LatencySum      uint64 // ns, over responses
	L7LatencyMax      uint64 // ns
	// Connection counts (extensions.connection); Conns is connections seen.
	Conns                    uint64
	BytesSent, BytesReceived uint64
	PktSent, PktReceived     uint64
	hasConn                  bool
}

// Set is the edges of a range.
type Set struct {
	edges map[Key]*Edge
	conns *conndelta.Tracker
}

// NewSet returns an empty Set.
func NewSet() *Set { return &Set{edges: map[Key]*Edge{}, conns: conndelta.New()} }

// Len is the number of edges.
func (s *Set) Len() int { return len(s.edges) }

// workload names an endpoint as the package doc says; ip is the flow's
// address of that side.
func workload(ep *flowpb.Endpoint, ip string) string {
	ns := ep.GetNamespace()
	if w := ep.GetWorkloads(); len(w) > 0 && w[0].GetName() != "" {
		return ns + "/" + w[0].GetName()
	}
	if p := ep.GetPodName(); p != "" {
		return ns + "/" + p
	}
	for _, l := range ep.GetLabels() {
		if strings.HasPrefix(l, "reserved:") {
			return l
		}
	}
	return ip
}

// keyOf is the edge a flow (or an aggregate flow) belongs to. A reply
// counts on the edge of the connection it answers (from the client to the
// server's port), as the UI's map counts it.
func keyOf(f *flowpb.Flow) Key {
	src, dst, sip, dip := sides(f)
	k := Key{
		Source:      workload(src, sip),
		Destination: workload(dst, dip),
		Verdict:     f.GetVerdict(),
	}
	reply := f.GetIsReply().GetValue()
	port := func(s, d uint32) uint32 {
		if reply {
			return s
		}
		return d
	}
	switch l4 := f.GetL4().GetProtocol().(type) {
	case *flowpb.Layer4_TCP:
		k.Protocol, k.Port = "TCP", port(l4.TCP.GetSourcePort(), l4.TCP.GetDestinationPort())
	case *flowpb.Layer4_UDP:
		k.Protocol, k.Port = "UDP", port(l4.UDP.GetSourcePort(), l4.UDP.GetDestinationPort())
	case *flowpb.Layer4_SCTP:
		k.Protocol, k.Port = "SCTP", port(l4.SCTP.GetSourcePort(), l4.SCTP.GetDestinationPort())
	case *flowpb.Layer4_ICMPv4:
		k.Protocol = "ICMPv4"
	case *flowpb.Layer4_ICMPv6:
		k.Protocol = "ICMPv6"
	}
	return k
}

func (s *Set) edge(f *flowpb.Flow) *Edge {
	src, dst, sip, dip := sides(f)
	return s.edgeOf(keyOf(f), src, dst, sip, dip)
}

// sides are the client's and the server's endpoints and addresses: the
// flow's source and destination, swapped on a reply.
func sides(f *flowpb.Flow) (src, dst *flowpb.Endpoint, sip, dip string) {
	src, dst, sip, dip = f.GetSource(), f.GetDestination(), f.GetIP().GetSource(), f.GetIP().GetDestination()
	if f.GetIsReply().GetValue() {
		return dst, src, dip, sip
	}
	return src, dst, sip, dip
}

func (s *Set) edgeOf(k Key, src, dst *flowpb.Endpoint, srcIP, dstIP string) *Edge {
	e := s.edges[k]
	if e == nil {
		e = &Edge{Key: k, src: slim(src), dst: slim(dst)}
		if k.Source == srcIP {
			e.srcIP = k.Source
		}
		if k.Destination == dstIP {
			e.dstIP = k.Destination
		}
		s.edges[k] = e
	}
	return e
}

// addConn counts what a connection flow adds on the edge from the
// connection's client to its server port.
func (s *Set) addConn(f *flowpb.Flow, k Key) {
	d, ok := s.conns.Add(f)
	if !ok {
		return
	}
	cip, sip := f.GetIP().GetSource(), f.GetIP().GetDestination()
	if f.GetIsReply().GetValue() {
		cip, sip = sip, cip
	}
	k.Source, k.Destination, k.Port = workload(d.Client, cip), workload(d.Server, sip), d.ServerPort
	e := s.edgeOf(k, d.Client, d.Server, cip, sip)
	e.merge(&Edge{Conns: b2u(d.New), BytesSent: d.BytesSent, BytesReceived: d.BytesReceived,
		PktSent: d.PacketsSent, PktReceived: d.PacketsReceived, hasConn: true})
}

// slim keeps what names an endpoint.
func slim(ep *flowpb.Endpoint) *flowpb.Endpoint {
	if ep == nil {
		return nil
	}
	out := &flowpb.Endpoint{Namespace: ep.GetNamespace(), Workloads: ep.GetWorkloads(), Identity: ep.GetIdentity()}
	if len(ep.GetWorkloads()) == 0 {
		out.PodName = ep.GetPodName()
	}
	for _, l := range ep.GetLabels() {
		if strings.HasPrefix(l, "reserved:") {
			out.Labels = append(out.Labels, l)
		}
	}
	return out
}

// Add counts one flow. An aggregate flow (from another aggregator) is
// merged with its counts.
func (s *Set) Add(f *flowpb.Flow) {
	e := s.edge(f)
	t := f.GetTime().AsTime()
	if a, ok := parseExtension(f); ok {
		e.merge(a)
		return
	}
	e.merge(&Edge{Flows: 1, First: t, Last: t})
	s.addConn(f, e.Key)
	if l7 := f.GetL7(); l7 != nil {
		lat := l7.GetLatencyNs()
		// An unanswered DNS query is a response with verdict ERROR.
		bad := l7Error(l7) || f.GetVerdict() == flowpb.Verdict_ERROR
		e.merge(&Edge{L7Flows: 1, L7Errors: b2u(bad), L7LatencySum: lat, L7LatencyMax: lat,
			L7Responses: b2u(l7.GetType() == flowpb.L7FlowType_RESPONSE), L7Protocol: l7Protocol(l7)})
	}
}

func l7Protocol(l7 *flowpb.Layer7) string {
	switch {
	case l7.GetHttp() != nil:
		return "HTTP"
	case l7.GetDns() != nil:
		return "DNS"
	}
	return ""
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// l7Error is an HTTP status of 500 or more, or a DNS answer other than
// NOERROR.
func l7Error(l7 *flowpb.Layer7) bool {
	if h := l7.GetHttp(); h != nil {
		return h.GetCode() >= 500
	}
	if d := l7.GetDns(); d != nil && l7.GetType() == flowpb.L7FlowType_RESPONSE {
		return d.GetRcode() != 0
	}
	return false
}

func (e *Edge) merge(o *Edge) {
	if o.Flows > 0 {
		if e.Flows == 0 || o.First.Before(e.First) {
			e.First = o.First
		}
		if o.Last.After(e.Last) {
			e.Last = o.Last
		}
	}
	e.Flows += o.Flows
	e.L7Flows += o.L7Flows
	e.L7Errors += o.L7Errors
	e.L7Responses += o.L7Responses
	if o.L7Protocol != "" {
		e.L7Protocol = o.L7Protocol
	}
	e.L7LatencySum += o.L7LatencySum
	e.L7LatencyMax = max(e.L7LatencyMax, o.L7LatencyMax)
	e.Conns += o.Conns
	e.BytesSent += o.BytesSent
	e.BytesReceived += o.BytesReceived
	e.PktSent += o.PktSent
	e.PktReceived += o.PktReceived
	e.hasConn = e.hasConn || o.hasConn
}

// Edges returns the edges sorted by key.
func (s *Set) Edges() []*Edge {
	out := make([]*Edge, 0, len(s.edges))
	for _, e := range s.edges {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *Edge) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Destination, b.Destination),
			cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Verdict, b.Verdict))
	})
	return out
}

// Flow is the edge as a flow, as the package doc describes.
func (e *Edge) Flow(node string) *flowpb.Flow {
	f := &flowpb.Flow{
		Time:        timestamppb.New(e.Last),
		NodeName:    node,
		Verdict:     e.Verdict,
		Source:      e.src,
		Destination: e.dst,
		Summary:     fmt.Sprintf("aggregate of %d flows", e.Flows),
	}
	if e.srcIP != "" || e.dstIP != "" {
		f.IP = &flowpb.IP{Source: e.srcIP, Destination: e.dstIP}
	}
	switch e.Protocol {
	case "TCP":
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{DestinationPort: e.Port}}}
	case "UDP":
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{DestinationPort: e.Port}}}
	case "SCTP":
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{DestinationPort: e.Port}}}
	case "ICMPv4":
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{}}}
	case "ICMPv6":
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{}}}
	}
	agg := map[string]any{
		"flows": float64(e.Flows),
		"first": e.First.UTC().Format(time.RFC3339Nano),
		"last":  e.Last.UTC().Format(time.RFC3339Nano),
	}
	if e.L7Flows > 0 {
		agg["l7_flows"] = float64(e.L7Flows)
		agg["l7_errors"] = float64(e.L7Errors)
		agg["l7_responses"] = float64(e.L7Responses)
		agg["l7_protocol"] = e.L7Protocol
		agg["l7_latency_ns_sum"] = float64(e.L7LatencySum)
		agg["l7_latency_ns_max"] = float64(e.L7LatencyMax)
	}
	if e.hasConn {
		agg["connections"] = float64(e.Conns)
		agg["bytes_sent"] = float64(e.BytesSent)
		agg["bytes_received"] = float64(e.BytesReceived)
		agg["packets_sent"] = float64(e.PktSent)
		agg["packets_received"] = float64(e.PktReceived)
	}
	st, err := structpb.NewStruct(map[string]any{ExtensionKey: agg})
	if err == nil {
		f.Extensions, _ = anypb.New(st)
	}
	return f
}

// IsAggregate reports whether f is an aggregate flow.
func IsAggregate(f *flowpb.Flow) bool {
	_, ok := parseExtension(f)
	return ok
}

// Of returns the counts of an aggregate flow.
func Of(f *flowpb.Flow) (*Edge, bool) {
	a, ok := parseExtension(f)
	if !ok {
		return nil, false
	}
	a.Key = keyOf(f)
	return a, true
}

func parseExtension(f *flowpb.Flow) (*Edge, bool) {
	if f.GetExtensions() == nil {
		return nil, false
	}
	st := &structpb.Struct{}
	if err := f.GetExtensions().UnmarshalTo(st); err != nil {
		return nil, false
	}
	v, ok := st.GetFields()[ExtensionKey]
	if !ok {
		return nil, false
	}
	m := v.GetStructValue().GetFields()
	num := func(k string) uint64 { return uint64(m[k].GetNumberValue()) }
	tm := func(k string) time.Time {
		t, _ := time.Parse(time.RFC3339Nano, m[k].GetStringValue())
		return t
	}
	_, hasConn := m["bytes_sent"]
	return &Edge{Flows: num("flows"), First: tm("first"), Last: tm("last"),
		L7Flows: num("l7_flows"), L7Errors: num("l7_errors"), L7Responses: num("l7_responses"),
		L7Protocol:   m["l7_protocol"].GetStringValue(),
		L7LatencySum: num("l7_latency_ns_sum"), L7LatencyMax: num("l7_latency_ns_max"),
		Conns: num("connections"), BytesSent: num("bytes_sent"), BytesReceived: num("bytes_received"),
		PktSent: num("packets_sent"), PktReceived: num("packets_received"), hasConn: hasConn}, true
}

package otlp

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/otlp/otlptest"
)

var tNow = time.Date(2026, 12, 3, 8, 0, 0, 123456789, time.UTC)

// testResource is the resource and scope New builds for an agent.
func testResource(t testing.TB) (requestHeader, *resourcepb.Resource, *commonpb.InstrumentationScope) {
	t.Helper()
	res := &resourcepb.Resource{Attributes: appendStr(appendStr([]*commonpb.KeyValue{str("service.name", "loupe-agent")},
		"service.version", "0.1.0"), AttrK8sNode, "node-1")}
	scope := &commonpb.InstrumentationScope{Name: ScopeName, Version: "0.1.0"}
	h, err := newRequestHeader(res, scope)
	if err != nil {
		t.Fatal(err)
	}
	return h, res, scope
}

// wireRequest is the wire encoder's request for flows.
func wireRequest(h requestHeader, enc *recordEncoder, flows []*flowpb.Flow, now time.Time) []byte {
	b := h.start(nil)
	for _, f := range flows {
		b = enc.appendFlow(b, f, now)
	}
	return b[h.finish(b):]
}

func protoRequest(res *resourcepb.Resource, scope *commonpb.InstrumentationScope, recs []*logspb.LogRecord) *collogspb.ExportLogsServiceRequest {
	return &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource: res, ScopeLogs: []*logspb.ScopeLogs{{Scope: scope, LogRecords: recs}},
	}}}
}

// checkSame decodes got with the OTLP protobuf types and requires it to
// equal want; on a difference it prints the first record that differs.
func checkSame(t testing.TB, got []byte, want *collogspb.ExportLogsServiceRequest) {
	t.Helper()
	var dec collogspb.ExportLogsServiceRequest
	if err := proto.Unmarshal(got, &dec); err != nil {
		t.Fatalf("the wire request does not decode: %v", err)
	}
	if proto.Equal(&dec, want) {
		return
	}
	g, w := dec.GetResourceLogs(), want.GetResourceLogs()
	if len(g) == 1 && len(w) == 1 && len(g[0].GetScopeLogs()) == 1 && len(w[0].GetScopeLogs()) == 1 {
		gr, wr := g[0].GetScopeLogs()[0].GetLogRecords(), w[0].GetScopeLogs()[0].GetLogRecords()
		for i := range min(len(gr), len(wr)) {
			if !proto.Equal(gr[i], wr[i]) {
				t.Fatalf("record %d differs:\nwire:  %s\nproto: %s", i, prototext.Format(gr[i]), prototext.Format(wr[i]))
			}
		}
		if len(gr) != len(wr) {
			t.Fatalf("%d records, want %d", len(gr), len(wr))
		}
	}
	t.Fatalf("requests differ:\nwire:  %s\nproto: %s", prototext.Format(&dec), prototext.Format(want))
}

type policies map[uint32][]*flowpb.Policy

func (p policies) ResolvePolicy(id uint32) []*flowpb.Policy { return p[id] }

// decoderCluster is what realFlows' decoder enriches from: pods of a
// Deployment (through its ReplicaSet) and a StatefulSet, a bare pod, a
// service.
const decoderCluster = `apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f7c6b9-abcde
  namespace: x
  labels: {app: web, pod-template-hash: 5d8f7c6b9}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f7c6b9, uid: u1, controller: true}]
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.1.10, podIPs: [{ip: 10.0.1.10}, {ip: "fd00:1::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: client}}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.1.11, podIPs: [{ip: 10.0.1.11}, {ip: "fd00:1::11"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: "y"
  ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: u2, controller: true}]
spec: {nodeName: node-2, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.2.20}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec: {clusterIP: 10.96.0.50, ports: [{port: 80, targetPort: 8080}]}
`

// realFlows are flows the observer's own decoder makes from records laid
// out as the datapath writes them (datapath's tests tie EncodeEvent to the
// compiled objects; observer's tests name the privileged test that reads
// each kind from the real datapath): traces of TCP, UDP, ICMP and IPv6,
// policy verdicts and drops naming their policies, and a connection's
// byte counts (the connection extension). Kernel records (kernel drops,
// TCP resets) need the agent's namespace lookup, which the standalone
// decoder lacks: kernelDrop is their shape.
func realFlows(t testing.TB) []*flowpb.Flow {
	t.Helper()
	snap := &metadata.Snapshot{Generation: "1"}
	if _, err := metadata.ParseManifests([]byte(decoderCluster), snap); err != nil {
		t.Fatal(err)
	}
	const allow, deny = 7, 8
	pols := policies{
		allow: {{Name: "allow-web", Namespace: "x", Kind: "NetworkPolicy"}, {Name: "allow-all", Kind: "ClusterNetworkPolicy"}},
		deny:  {{Name: "deny-db", Namespace: "y", Kind: "NetworkPolicy"}},
	}
	dec := observer.NewDecoder("node-1", metadata.Static{Snap: snap}, pols, func(uint32) string { return "lxc0" })
	a, b, db, world := netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.1.11"), netip.MustParseAddr("10.0.2.20"), netip.MustParseAddr("192.0.2.1")
	a6, b6 := netip.MustParseAddr("fd00:1::10"), netip.MustParseAddr("fd00:1::11")
	tcp := func(src, dst netip.Addr, sport, dport uint16) datapath.Event {
		return datapath.Event{Type: contract.MessageTypeTrace, Verdict: contract.VerdictForwarded, Proto: 6,
			Src: src, Dst: dst, SrcPort: sport, DstPort: dport, Ifindex: 7, EndpointID: 11, PacketLen: 60}
	}
	var evs []datapath.Event
	e := tcp(b, a, 40000, 80)
	e.ObsPoint, e.Direction, e.Flags, e.TCPFlags = contract.TraceFromLxc, contract.DirectionEgress, datapath.FlagCTNew, 0x02
	evs = append(evs, e)
	e = tcp(a, b, 80, 40000)
	e.ObsPoint, e.Direction, e.Flags, e.TCPFlags = contract.TraceToLxc, contract.DirectionIngress, datapath.FlagReply, 0x12
	evs = append(evs, e)
	e = tcp(b, netip.MustParseAddr("10.96.0.50"), 41000, 80)
	e.Proto, e.ObsPoint, e.Direction = 17, contract.TraceFromLxc, contract.DirectionEgress
	evs = append(evs, e)
	e = tcp(b, db, 0, 0)
	e.Proto, e.ICMPType, e.ObsPoint = 1, 8, contract.TraceFromLxc
	evs = append(evs, e)
	e = tcp(b6, a6, 42000, 443)
	e.ObsPoint, e.Direction, e.TCPFlags, e.Flags = contract.TraceToLxc, contract.DirectionIngress, 0x18, datapath.FlagCTNew
	evs = append(evs, e)
	e = tcp(world, a, 50000, 80)
	e.Type, e.MatchType, e.PolicyID, e.Direction, e.TCPFlags, e.Flags = contract.MessageTypePolicyVerdict, contract.PolicyMatchL3L4, allow, contract.DirectionIngress, 0x02, datapath.FlagCTNew
	evs = append(evs, e)
	e = tcp(a, db, 40001, 5432)
	e.Type, e.Verdict, e.DropReason, e.PolicyID, e.Direction, e.TCPFlags = contract.MessageTypeDrop, contract.VerdictDropped, contract.DropPolicyDenied, deny, contract.DirectionEgress, 0x02
	evs = append(evs, e)
	e = tcp(b, a, 40000, 80) // a connection's FIN with its byte counts
	e.TCPFlags, e.Direction, e.PacketsFwd, e.BytesFwd, e.PacketsRev, e.BytesRev, e.HandshakeNS = 0x11, contract.DirectionEgress, 70, 1_000_000, 40, 2_640, 84_000
	evs = append(evs, e)

	var out []*flowpb.Flow
	for i, ev := range evs {
		ev.TimestampNS = uint64(i+1) * 1e6
		f, err := dec.DecodeFlow(datapath.MustEncodeEvent(&ev))
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		out = append(out, f)
	}
	return out
}

// commonFlows are the package's fixtures and the decoder's flows.
func commonFlows(t testing.TB) []*flowpb.Flow {
	return append([]*flowpb.Flow{l4Flow(0), l4Flow(7), policyDrop(), kernelDrop(t), dnsFlow(), httpFlow()}, realFlows(t)...)
}

// testFlows are commonFlows and shapes at the edges of the mapping.
func testFlows(t testing.TB) []*flowpb.Flow {
	flows := commonFlows(t)
	odd := []*flowpb.Flow{
		{}, // nothing at all
		{Verdict: flowpb.Verdict(99), TrafficDirection: flowpb.TrafficDirection(7), DropReasonDesc: flowpb.DropReason(-3)},
		{Verdict: flowpb.Verdict_DROPPED, DropReasonDesc: flowpb.DropReason(5000), L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{Flags: &flowpb.TCPFlags{}}}}},
		{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: 128}}}, IP: &flowpb.IP{IpVersion: flowpb.IPVersion_IPv6}},
		{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{SourcePort: 1, DestinationPort: 65535}}}},
		{L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Url: "::bad url"}}}},
		{L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Url: "/a%20b/c?x#y", Code: 200}}}},
		{L7: &flowpb.Layer7{Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Query: "."}}}},
		{Source: &flowpb.Endpoint{Workloads: []*flowpb.Workload{{}}}, Destination: &flowpb.Endpoint{Workloads: []*flowpb.Workload{{Name: "w"}}, Identity: 1 << 31}},
		{EgressDeniedBy: []*flowpb.Policy{{}, {Name: "n"}}, EgressAllowedBy: []*flowpb.Policy{{Namespace: "only-ns"}}},
		{Summary: strings.Repeat("long summary ", 2000), Uuid: "u"}, // a record past 16 KiB
	}
	// Extensions of every kind a Struct holds, nested, and ones the wire
	// path leaves to the decoding path.
	ext := anyStruct(t, map[string]any{
		"b": map[string]any{"z": 1.5, "a": true, "n": nil, "list": []any{"x", "y"}, "deep": map[string]any{"k": -3.0, "e": map[string]any{}}},
		"a": "top", "c": []any{}, "kernel_drop": map[string]any{"reason": "SKB_DROP_REASON_NOT_SPECIFIED"},
		"big": 1e300, "neg": -0.0, "whole": map[string]any{"i": 9007199254740993.0},
	})
	odd = append(odd, &flowpb.Flow{Verdict: flowpb.Verdict_DROPPED, Extensions: ext})
	mixed := anyStruct(t, map[string]any{"mixed": []any{"s", 2.0, true, nil, map[string]any{"k": "v"}}, "a": 1.0})
	odd = append(odd, &flowpb.Flow{Extensions: mixed})
	dup := proto.Clone(ext).(*anypb.Any) // a key twice: the last wins
	dup.Value = append(dup.Value, structEntry("a", "second")...)
	odd = append(odd, &flowpb.Flow{Extensions: dup})
	odd = append(odd, &flowpb.Flow{Extensions: &anypb.Any{TypeUrl: "example.com/google.protobuf.Struct", Value: ext.Value}})
	odd = append(odd, &flowpb.Flow{Extensions: &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Value", Value: ext.Value}})
	odd = append(odd, &flowpb.Flow{Extensions: &anypb.Any{TypeUrl: ext.TypeUrl, Value: []byte{0x0a, 0x05, 0x0a}}})
	return append(flows, odd...)
}

func anyStruct(t testing.TB, m map[string]any) *anypb.Any {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// structEntry is a Struct of one entry k: string_value v, as bytes.
func structEntry(k, v string) []byte {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{k: structpb.NewStringValue(v)}}
	b, err := proto.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

// The wire encoder's request, decoded with the OTLP protobuf types, is
// the request of the documented mapping built as objects, for the
// package's fixtures, flows from the observer's real decoder, and edge
// cases; one flow a request and all of them in one.
func TestEncoderMatchesProto(t *testing.T) {
	h, res, scope := testResource(t)
	flows := testFlows(t)
	var enc recordEncoder
	var all []*logspb.LogRecord
	for i, f := range flows {
		rec := refFlowRecord(f, tNow)
		all = append(all, rec)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			checkSame(t, wireRequest(h, &enc, []*flowpb.Flow{f}, tNow), protoRequest(res, scope, []*logspb.LogRecord{rec}))
		})
	}
	checkSame(t, wireRequest(h, &enc, flows, tNow), protoRequest(res, scope, all))
	// Requests of many records, whose lengths take more varint bytes.
	var many []*flowpb.Flow
	all = all[:0]
	for i := range 3000 {
		f := l4Flow(i)
		many = append(many, f)
		all = append(all, refFlowRecord(f, tNow))
	}
	checkSame(t, wireRequest(h, &enc, many, tNow), protoRequest(res, scope, all))
	// The wire path handled the extensions of the fixtures and the
	// decoder's flows (not the decoding path).
	for _, f := range commonFlows(t) {
		if f.GetExtensions() != nil {
			enc.ext.reset()
			if !enc.ext.wire(f.GetExtensions().GetValue(), 0, false) {
				t.Errorf("flow %s: extensions not read in place", f.GetUuid())
			}
		}
	}
}

// A flow's aggregated record (event loupe.flow.aggregate) from the wire
// encoder equals the one of objects.
func TestEdgeEncoderMatchesProto(t *testing.T) {
	h, res, scope := testResource(t)
	b := h.start(nil)
	var want []*logspb.LogRecord
	for i, f := range testFlows(t) {
		k := edgeOf(f)
		c := &edgeCount{count: uint64(i + 1), first: uint64(i) * 1e9}
		b = appendEdge(b, k, c, tNow, 10*time.Second)
		want = append(want, refEdgeRecord(k, c, tNow, 10*time.Second))
	}
	http := edgeKey{method: "POST", code: 503, verdict: flowpb.Verdict_FORWARDED}
	b = appendEdge(b, http, &edgeCount{count: 1}, tNow, time.Second)
	want = append(want, refEdgeRecord(http, &edgeCount{count: 1}, tNow, time.Second))
	checkSame(t, b[h.finish(b):], protoRequest(res, scope, want))
}

// Strings that are not UTF-8 (bytes a flow carried from a packet) made
// proto.Marshal fail the whole request; the wire encoder replaces each
// bad run with U+FFFD and the request decodes.
func TestEncoderReplacesInvalidUTF8(t *testing.T) {
	h, res, scope := testResource(t)
	f := dnsFlow()
	f.Summary = "bad \xff summary"
	f.Source.PodName = "a\xc3"
	f.L7.GetDns().Query = "ex\xe2\x82ample.com."
	f.EgressDeniedBy = []*flowpb.Policy{{Namespace: "n\xff", Name: "p\xfe\xfd"}}
	rec := refFlowRecord(f, tNow)
	if _, err := proto.Marshal(protoRequest(res, scope, []*logspb.LogRecord{rec})); err == nil {
		t.Fatal("proto.Marshal took invalid UTF-8")
	}
	validRecord(rec)
	var enc recordEncoder
	checkSame(t, wireRequest(h, &enc, []*flowpb.Flow{f}, tNow), protoRequest(res, scope, []*logspb.LogRecord{rec}))
	if got := rec.GetBody().GetStringValue(); got != "bad \uFFFD summary" {
		t.Errorf("body %q", got)
	}
}

// validRecord replaces invalid UTF-8 in r's strings as the wire encoder
// does.
func validRecord(r *logspb.LogRecord) {
	fix := func(v *commonpb.AnyValue) {
		if s, ok := v.GetValue().(*commonpb.AnyValue_StringValue); ok {
			s.StringValue = strings.ToValidUTF8(s.StringValue, "\uFFFD")
		}
	}
	fix(r.GetBody())
	for _, kv := range r.GetAttributes() {
		fix(kv.GetValue())
		for _, v := range kv.GetValue().GetArrayValue().GetValues() {
			fix(v)
		}
	}
}

// FuzzEncoder: for any flow (any protobuf bytes that decode as one), with
// any extensions bytes and any string (UTF-8 or not) in its text fields,
// the wire encoder's request decodes and equals the objects' request.
func FuzzEncoder(f *testing.F) {
	for _, fl := range testFlows(f) {
		b, err := proto.Marshal(fl)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, fl.GetExtensions().GetValue(), fl.GetSummary())
	}
	f.Add([]byte{}, []byte{0x0a, 0x00}, "\xff")
	h, res, scope := testResource(f)
	var enc recordEncoder
	f.Fuzz(func(t *testing.T, flow, ext []byte, s string) {
		var fl flowpb.Flow
		if proto.Unmarshal(flow, &fl) != nil {
			return
		}
		if len(ext) > 0 {
			fl.Extensions = &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Struct", Value: ext}
		}
		if s != "" {
			fl.Summary = s
			if fl.Source != nil {
				fl.Source.PodName += s
			}
			if dns := fl.GetL7().GetDns(); dns != nil {
				dns.Query = s
			}
			if http := fl.GetL7().GetHttp(); http != nil {
				http.Url = s
			}
		}
		rec := refFlowRecord(&fl, tNow)
		validRecord(rec)
		checkSame(t, wireRequest(h, &enc, []*flowpb.Flow{&fl}, tNow), protoRequest(res, scope, []*logspb.LogRecord{rec}))
		k := edgeOf(&fl)
		c := &edgeCount{count: 3, first: 7}
		b := h.start(nil)
		b = appendEdge(b, k, c, tNow, time.Second)
		erec := refEdgeRecord(k, c, tNow, time.Second)
		validRecord(erec)
		checkSame(t, b[h.finish(b):], protoRequest(res, scope, []*logspb.LogRecord{erec}))
	})
}

// Batch buffers go back to the exporter once gRPC has sent them, and a
// reused buffer carries its own batch: every flow of many batches arrives
// once, intact, at the real receiver.
func TestBatchBuffersReused(t *testing.T) {
	r := otlptest.Start(t, "127.0.0.1:0", nil)
	cfg := testConfig(r)
	cfg.BatchSize, cfg.BatchTimeout = 40, 5*time.Millisecond
	e := run(t, cfg)
	const n = 2000
	for i := range n {
		for len(e.in) == cap(e.in) {
			time.Sleep(time.Millisecond)
		}
		e.Flow(l4Flow(i))
	}
	otlptest.WaitFor(t, 30*time.Second, "every flow acknowledged", func() bool { return e.Stats().Exported == n })
	if s := e.Stats(); s.Dropped != 0 {
		t.Fatalf("stats %+v", s)
	}
	seen := map[string]int{}
	for _, lr := range r.LogRecords() {
		a := otlptest.Attrs(lr)
		seen[a[AttrFlowUUID]]++
		if a[AttrSourceAddress] != "10.244.1.10" || a[AttrDestinationPort] != "80" || a[AttrK8sPod] != "b" {
			t.Fatalf("record %v", a)
		}
	}
	for i := range n {
		if c := seen[fmt.Sprintf("uuid-l4-%d", i)]; c != 1 {
			t.Fatalf("flow %d arrived %d times", i, c)
		}
	}
	if len(e.bufs.free) == 0 {
		t.Error("no batch buffer came back from gRPC")
	}
}

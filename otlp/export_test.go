package otlp

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"go.opentelemetry.io/collector/pdata/plog"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/otlp/otlptest"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func pod(ns, name, workload string, id uint32) *flowpb.Endpoint {
	ep := &flowpb.Endpoint{ID: id, Identity: 256 + id, Namespace: ns, PodName: name,
		Labels: []string{"k8s:app=" + workload, "k8s:io.kubernetes.pod.namespace=" + ns}}
	if workload != "" {
		ep.Workloads = []*flowpb.Workload{{Name: workload, Kind: "Deployment"}}
	}
	return ep
}

// l4Flow is a forwarded TCP SYN from x/a to y/b:80 as a loupe agent
// reports it at y/b's veth (TO_ENDPOINT), allowed by policy y/allow-x.
func l4Flow(i int) *flowpb.Flow {
	return &flowpb.Flow{
		Time: timestamppb.New(t0.Add(time.Duration(i) * time.Millisecond)), Uuid: fmt.Sprintf("uuid-l4-%d", i),
		Verdict: flowpb.Verdict_FORWARDED, NodeName: "node2",
		IP: &flowpb.IP{Source: "10.244.1.10", Destination: "10.244.2.20", IpVersion: flowpb.IPVersion_IPv4},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: 80,
			Flags: &flowpb.TCPFlags{SYN: true}}}},
		Source: pod("x", "a", "a", 11), Destination: pod("y", "b", "b", 22),
		Type:                  flowpb.FlowType_L3_L4,
		EventType:             &flowpb.CiliumEventType{Type: 4},
		TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
		TrafficDirection:      flowpb.TrafficDirection_INGRESS,
		IsReply:               wrapperspb.Bool(false),
		IngressAllowedBy:      []*flowpb.Policy{{Name: "allow-x", Namespace: "y", Kind: "NetworkPolicy"}},
		Summary:               "TCP Flags: SYN",
	}
}

// policyDrop is x/a -> y/c:81 dropped by policy y/deny-all.
func policyDrop() *flowpb.Flow {
	f := l4Flow(0)
	f.Uuid = "uuid-policy-drop"
	f.Verdict = flowpb.Verdict_DROPPED
	f.DropReason = 133
	f.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
	f.EventType = &flowpb.CiliumEventType{Type: 1, SubType: 133}
	f.Destination = pod("y", "c", "", 33)
	f.L4.GetTCP().DestinationPort = 81
	f.IngressAllowedBy = nil
	f.IngressDeniedBy = []*flowpb.Policy{{Name: "deny-all", Namespace: "y", Kind: "NetworkPolicy"}}
	return f
}

// kernelDrop is a UDP datagram to a closed port of z/c, dropped by its
// kernel (NO_SOCKET), shaped as observer/kdrop.go writes it.
func kernelDrop(t testing.TB) *flowpb.Flow {
	s, err := structpb.NewStruct(map[string]any{contract.ExtKernelDrop: map[string]any{
		contract.ExtKernelReason: "SKB_DROP_REASON_NO_SOCKET", contract.ExtKernelReasonCode: 2,
		contract.ExtKernelFunction: "__udp4_lib_rcv", contract.ExtKernelNetnsInode: 4026532890,
		contract.ExtKernelAttributedBy: "netns"}})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := anypb.New(s)
	if err != nil {
		t.Fatal(err)
	}
	return &flowpb.Flow{
		Time: timestamppb.New(t0), Uuid: "uuid-kernel-drop", Verdict: flowpb.Verdict_DROPPED, NodeName: "node3",
		EventType: &flowpb.CiliumEventType{Type: 1}, DropReasonDesc: flowpb.DropReason_DROP_REASON_UNKNOWN,
		IP:     &flowpb.IP{Source: "10.244.1.10", Destination: "10.244.3.30", IpVersion: flowpb.IPVersion_IPv4},
		L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 50000, DestinationPort: 9}}},
		Source: pod("x", "a", "a", 11), Destination: pod("z", "c", "", 44),
		TrafficDirection: flowpb.TrafficDirection_INGRESS, Extensions: ext,
		Summary: "UDP; kernel drop SKB_DROP_REASON_NO_SOCKET in __udp4_lib_rcv",
	}
}

// dnsFlow and httpFlow are shaped as Hubble's own L7 flows (flow.L7 with a
// DNS or HTTP record); loupe's datapath does not produce them yet.
func dnsFlow() *flowpb.Flow {
	return &flowpb.Flow{
		Time: timestamppb.New(t0), Uuid: "uuid-dns", Verdict: flowpb.Verdict_FORWARDED, NodeName: "node1",
		Type:   flowpb.FlowType_L7,
		IP:     &flowpb.IP{Source: "10.244.1.10", Destination: "10.96.0.10", IpVersion: flowpb.IPVersion_IPv4},
		L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 53000, DestinationPort: 53}}},
		Source: pod("x", "a", "a", 11), Destination: pod("kube-system", "coredns-1", "coredns", 55),
		TrafficDirection: flowpb.TrafficDirection_EGRESS,
		L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
			Query: "example.com.", Qtypes: []string{"A"}}}},
	}
}

func httpFlow() *flowpb.Flow {
	return &flowpb.Flow{
		Time: timestamppb.New(t0), Uuid: "uuid-http", Verdict: flowpb.Verdict_FORWARDED, NodeName: "node2",
		Type:   flowpb.FlowType_L7,
		IP:     &flowpb.IP{Source: "10.244.1.10", Destination: "10.244.2.20", IpVersion: flowpb.IPVersion_IPv4},
		L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: 8080}}},
		Source: pod("x", "a", "a", 11), Destination: pod("y", "b", "b", 22),
		TrafficDirection: flowpb.TrafficDirection_INGRESS,
		L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
			Code: 404, Method: "GET", Url: "http://b.y:8080/api/items?id=7", Protocol: "HTTP/1.1"}}},
	}
}

func testConfig(r *otlptest.Receiver) Config {
	return Config{Endpoint: r.Addr(), Insecure: true, BatchTimeout: 50 * time.Millisecond, ServiceName: "loupe-test",
		retryBase: 20 * time.Millisecond}
}

func run(t testing.TB, cfg Config) *Exporter {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func byUUID(t *testing.T, r *otlptest.Receiver, uuid string) map[string]string {
	t.Helper()
	for _, lr := range r.LogRecords() {
		if a := otlptest.Attrs(lr); a[AttrFlowUUID] == uuid {
			return a
		}
	}
	t.Fatalf("no record of flow %s", uuid)
	return nil
}

func checkAttrs(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: %s = %q (present %v), want %q", what, k, g, ok, v)
		}
	}
}

// Every attribute the issue names, for an L4 flow, a policy drop, a kernel
// drop and Hubble-shaped DNS and HTTP flows, as a real receiver decodes
// them.
func TestRawFlowAttributes(t *testing.T) {
	r := otlptest.Start(t, "127.0.0.1:0", nil)
	e := run(t, testConfig(r))
	flows := []*flowpb.Flow{l4Flow(0), policyDrop(), kernelDrop(t), dnsFlow(), httpFlow()}
	for _, f := range flows {
		e.Flow(f)
	}
	otlptest.WaitFor(t, 10*time.Second, "5 records", func() bool { return len(r.LogRecords()) == 5 })

	checkAttrs(t, "L4", byUUID(t, r, "uuid-l4-0"), map[string]string{
		"source.address": "10.244.1.10", "source.port": "40000",
		"destination.address": "10.244.2.20", "destination.port": "80",
		"network.transport": "tcp", "network.type": "ipv4",
		"k8s.namespace.name": "y", "k8s.pod.name": "b", "k8s.node.name": "node2",
		"k8s.src.namespace": "x", "k8s.src.name": "a", "k8s.src.owner.name": "a", "k8s.src.owner.type": "Deployment",
		"k8s.dst.namespace": "y", "k8s.dst.name": "b", "k8s.dst.owner.name": "b",
		"loupe.verdict": "FORWARDED", "loupe.traffic_direction": "INGRESS", "loupe.is_reply": "false",
		"loupe.tcp.flags": "SYN", "loupe.src.identity": "267", "loupe.dst.identity": "278",
		"loupe.policy.ingress_allowed_by": "y/allow-x", "loupe.flow.count": "1",
	})
	pd := byUUID(t, r, "uuid-policy-drop")
	checkAttrs(t, "policy drop", pd, map[string]string{
		"loupe.verdict": "DROPPED", "loupe.drop_reason": "POLICY_DENIED",
		"loupe.policy.ingress_denied_by": "y/deny-all", "destination.port": "81", "k8s.pod.name": "c",
	})
	if _, ok := pd[AttrDropReason]; !ok {
		t.Error("policy drop without a drop reason")
	}
	checkAttrs(t, "kernel drop", byUUID(t, r, "uuid-kernel-drop"), map[string]string{
		"loupe.verdict": "DROPPED", "loupe.drop_reason": "SKB_DROP_REASON_NO_SOCKET",
		"loupe.kernel_drop.reason": "SKB_DROP_REASON_NO_SOCKET", "loupe.kernel_drop.function": "__udp4_lib_rcv",
		"loupe.kernel_drop.reason_code": "2", "loupe.kernel_drop.attributed_by": "netns",
		"network.transport": "udp", "destination.port": "9", "k8s.namespace.name": "z", "k8s.pod.name": "c",
	})
	checkAttrs(t, "DNS", byUUID(t, r, "uuid-dns"), map[string]string{
		"dns.question.name": "example.com", "network.transport": "udp", "destination.port": "53",
		"k8s.namespace.name": "x", "k8s.pod.name": "a", "k8s.dst.owner.name": "coredns",
	})
	checkAttrs(t, "HTTP", byUUID(t, r, "uuid-http"), map[string]string{
		"http.request.method": "GET", "http.response.status_code": "404", "url.path": "/api/items",
	})
	for _, k := range []string{"loupe.drop_reason", "dns.question.name", "http.request.method"} {
		if _, ok := byUUID(t, r, "uuid-l4-0")[k]; ok {
			t.Errorf("the L4 flow carries %s", k)
		}
	}
	// Severity, event name, body, times and the resource.
	for _, lr := range r.LogRecords() {
		a := otlptest.Attrs(lr)
		wantSev := plog.SeverityNumberInfo
		if a[AttrVerdict] == "DROPPED" {
			wantSev = plog.SeverityNumberWarn
		}
		if lr.SeverityNumber() != wantSev || lr.EventName() != EventFlow || lr.Timestamp().AsTime() != t0 && a[AttrFlowUUID] != "uuid-l4-0" {
			t.Errorf("%s: severity %v event %q time %v", a[AttrFlowUUID], lr.SeverityNumber(), lr.EventName(), lr.Timestamp())
		}
	}
	if b := byBody(r, "uuid-kernel-drop"); !strings.Contains(b, "kernel drop SKB_DROP_REASON_NO_SOCKET") {
		t.Errorf("kernel drop body %q", b)
	}
	if got := r.Resources()[0].Attributes().AsRaw()["service.name"]; got != "loupe-test" {
		t.Errorf("resource service.name %v", got)
	}
	otlptest.WaitFor(t, 5*time.Second, "5 acknowledged", func() bool { return e.Stats().Exported == 5 })
	if s := e.Stats(); s.Received != 5 || s.Exported != 5 || s.Dropped != 0 {
		t.Errorf("stats %+v", s)
	}
}

func byBody(r *otlptest.Receiver, uuid string) string {
	for _, lr := range r.LogRecords() {
		if otlptest.Attrs(lr)[AttrFlowUUID] == uuid {
			return lr.Body().AsString()
		}
	}
	return ""
}

// Aggregated mode: one record per edge and interval, with the count of
// the flows it stands for and the edge's attributes.
func TestAggregatedFlows(t *testing.T) {
	r := otlptest.Start(t, "127.0.0.1:0", nil)
	cfg := testConfig(r)
	cfg.Flows, cfg.AggregationInterval = FlowsAggregated, 200*time.Millisecond
	e := run(t, cfg)
	for i := range 30 {
		f := l4Flow(i)
		f.Source.PodName = fmt.Sprintf("a-%d", i%3) // pods of one workload: one edge
		e.Flow(f)
	}
	for range 7 {
		e.Flow(policyDrop())
	}
	e.Flow(kernelDrop(t))
	e.Flow(dnsFlow())
	otlptest.WaitFor(t, 10*time.Second, "39 flows", func() bool { return r.SumInt(AttrFlowCount) == 39 })

	edges := map[string]map[string]string{}
	for _, lr := range r.LogRecords() {
		if lr.EventName() != EventFlowAggregate {
			t.Fatalf("event name %q", lr.EventName())
		}
		a := otlptest.Attrs(lr)
		edges[a[AttrVerdict]+" "+a[AttrDestinationPort]+" "+a[AttrDropReason]] = a
	}
	if len(edges) != 4 {
		t.Fatalf("%d edges, want 4: %v", len(edges), edges)
	}
	checkAttrs(t, "forwarded edge", edges["FORWARDED 80 "], map[string]string{
		"loupe.flow.count": "30", "k8s.src.namespace": "x", "k8s.src.owner.name": "a", "k8s.src.owner.type": "Deployment",
		"k8s.dst.namespace": "y", "k8s.dst.owner.name": "b", "network.transport": "tcp", "network.type": "ipv4",
		"k8s.namespace.name": "y", "k8s.node.name": "node2", "loupe.traffic_direction": "INGRESS",
		"loupe.aggregation.interval_ms": "200",
	})
	checkAttrs(t, "policy drop edge", edges["DROPPED 81 POLICY_DENIED"], map[string]string{
		"loupe.flow.count": "7", "k8s.dst.name": "c", "k8s.pod.name": "c",
	})
	checkAttrs(t, "kernel drop edge", edges["DROPPED 9 SKB_DROP_REASON_NO_SOCKET"], map[string]string{"loupe.flow.count": "1"})
	checkAttrs(t, "dns edge", edges["FORWARDED 53 "], map[string]string{"dns.question.name": "example.com", "loupe.flow.count": "1"})
	if _, ok := edges["FORWARDED 80 "][AttrSrcName]; ok {
		t.Error("a workload edge names a pod")
	}
	otlptest.WaitFor(t, 5*time.Second, "39 acknowledged", func() bool { return e.Stats().Exported == 39 })
	if s := e.Stats(); s.Exported != 39 || s.Dropped != 0 {
		t.Errorf("stats %+v", s)
	}
}

// Past --otlp-max-edges, the flows of new edges are dropped and counted.
func TestAggregatedEdgeLimit(t *testing.T) {
	r := otlptest.Start(t, "127.0.0.1:0", nil)
	cfg := testConfig(r)
	cfg.Flows, cfg.AggregationInterval, cfg.MaxEdges = FlowsAggregated, time.Hour, 2
	e := run(t, cfg)
	for i := range 5 {
		f := l4Flow(i)
		f.L4.GetTCP().DestinationPort = uint32(1000 + i)
		e.Flow(f)
	}
	otlptest.WaitFor(t, 5*time.Second, "3 drops", func() bool { return e.Stats().DroppedBy[ReasonEdgeLimit] == 3 })
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Endpoint: "http://collector:4317"}, "without a scheme"},
		{Config{Endpoint: "collector"}, "HOST:PORT"},
		{Config{Endpoint: "collector:otlp"}, "not a number"},
		{Config{Endpoint: "collector:0"}, "not a number"},
		{Config{Endpoint: ":4317"}, "no host"},
		{Config{Insecure: true}, "need --otlp-endpoint"},
		{Config{Endpoint: "c:4317", Insecure: true, CAFile: "ca.pem"}, "need TLS"},
		{Config{Endpoint: "c:4317", ClientCertFile: "c.pem"}, "go together"},
		{Config{Endpoint: "c:4317", Flows: "all"}, "raw, aggregated or off"},
		{Config{Endpoint: "c:4317", Headers: []string{"novalue"}}, "key=value"},
		{Config{Endpoint: "c:4317", QueueSize: -1}, "negative"},
		{Config{Endpoint: "c:4317", CAFile: "/nonexistent/ca.pem"}, "ca.pem"},
	} {
		err := c.cfg.Check()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", c.cfg, err, c.want)
		}
	}
	ok := Config{Endpoint: "collector.monitoring:4317"}
	if err := ok.Check(); err != nil {
		t.Errorf("TLS with the system pool: %v", err)
	}
	if ok.Flows != FlowsRaw || ok.QueueSize != DefaultQueueSize {
		t.Errorf("defaults not filled: %+v", ok)
	}
}

// With no collector at all, Flow still returns at once: the queue fills,
// the rest is dropped and counted, and every flow is accounted for.
func TestUnreachableCollectorDropsAndCounts(t *testing.T) {
	cfg := Config{Endpoint: "127.0.0.1:1", Insecure: true, QueueSize: 100, BatchSize: 10,
		BatchTimeout: 10 * time.Millisecond, RetryMaxElapsed: 200 * time.Millisecond, retryBase: 20 * time.Millisecond}
	e := run(t, cfg)
	for i := range 10000 {
		e.Flow(l4Flow(i))
	}
	s := e.Stats()
	// At most the queue and four batches (being built, handed over,
	// waiting, being sent) are still in the pipeline.
	if s.Received != 10000 || s.Dropped < 10000-100-4*10 {
		t.Fatalf("stats %+v", s)
	}
	otlptest.WaitFor(t, 10*time.Second, "every flow dropped", func() bool { return e.Stats().Dropped == 10000 })
	if s := e.Stats(); s.Exported != 0 || s.DroppedBy[ReasonRetriesExhausted] == 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestCollectorsReportStats(t *testing.T) {
	e, err := New(Config{Endpoint: "127.0.0.1:1", Insecure: true, QueueSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.Flow(l4Flow(0))
	e.Flow(l4Flow(1))
	got := gatherText(t, e)
	for _, want := range []string{`loupe_otlp_flows_received_total 2`, `loupe_otlp_flows_dropped_total{reason="queue_full"} 1`, `loupe_otlp_queue_length 1`} {
		if !slices.ContainsFunc(got, func(s string) bool { return s == want }) {
			t.Errorf("no %q in %v", want, got)
		}
	}
}

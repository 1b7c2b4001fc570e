package hubble

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	hubblemetricsapi "github.com/cilium/cilium/pkg/hubble/metrics/api"
	_ "github.com/cilium/cilium/pkg/hubble/metrics/dns"
	_ "github.com/cilium/cilium/pkg/hubble/metrics/drop"
	_ "github.com/cilium/cilium/pkg/hubble/metrics/flow"
	_ "github.com/cilium/cilium/pkg/hubble/metrics/flows-to-world"
	_ "github.com/cilium/cilium/pkg/hubble/metrics/http"
	_ "github.com/cilium/cilium/pkg/hubble/metrics/icmp"
	_ "github.com/cilium/cilium/pkg/hubble/metrics/policy"
	_ "github.com/cilium/cilium/pkg/hubble/metrics/port-distribution"
	_ "github.com/cilium/cilium/pkg/hubble/metrics/tcp"
	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/internal/promtext"
	"github.com/loupe-project/loupe/observer/hubblemetrics"
)

// metricFlows: the kinds of flow loupe's observer produces (traces both
// ways, policy drops, policy verdicts, from the host, ICMP, to the world),
// with pods that have a workload, an app label, or neither.
func metricFlows() []*flowpb.Flow {
	a := &flowpb.Endpoint{ID: 10, Identity: 1000, Namespace: "x", PodName: "a-1", Labels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=x"}, Workloads: []*flowpb.Workload{{Name: "web", Kind: "Deployment"}}}
	b := &flowpb.Endpoint{ID: 11, Identity: 1001, Namespace: "y", PodName: "b", Labels: []string{"k8s:k8s-app=dns", "k8s:io.kubernetes.pod.namespace=y"}}
	c := &flowpb.Endpoint{ID: 12, Identity: 1002, Namespace: "z", PodName: "c"}
	host := &flowpb.Endpoint{Identity: 1, Labels: []string{"reserved:host"}}
	world := &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}
	ip := func(s, d string) *flowpb.IP {
		return &flowpb.IP{Source: s, Destination: d, IpVersion: flowpb.IPVersion_IPv4}
	}
	tcp := func(sp, dp uint32, f *flowpb.TCPFlags) *flowpb.Layer4 {
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sp, DestinationPort: dp, Flags: f}}}
	}
	icmp := func(ty, code uint32) *flowpb.Layer4 {
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: ty, Code: code}}}
	}
	udp := &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 5353, DestinationPort: 53}}}
	trace := func(obs int32, s, d *flowpb.Endpoint, i *flowpb.IP, l4 *flowpb.Layer4, dir flowpb.TrafficDirection, reply bool) *flowpb.Flow {
		return &flowpb.Flow{EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: obs}, Verdict: flowpb.Verdict_FORWARDED,
			Source: s, Destination: d, IP: i, L4: l4, TrafficDirection: dir, IsReply: wrapperspb.Bool(reply)}
	}
	eg, in := flowpb.TrafficDirection_EGRESS, flowpb.TrafficDirection_INGRESS
	syn := &flowpb.TCPFlags{SYN: true}
	return []*flowpb.Flow{
		trace(contract.TraceFromLxc, a, b, ip("10.0.0.1", "10.0.0.2"), tcp(40000, 80, syn), eg, false),
		trace(contract.TraceToLxc, b, a, ip("10.0.0.2", "10.0.0.1"), tcp(80, 40000, &flowpb.TCPFlags{SYN: true, ACK: true}), eg, true),
		trace(contract.TraceToLxc, a, b, ip("10.0.0.1", "10.0.0.2"), tcp(40000, 80, &flowpb.TCPFlags{FIN: true, ACK: true}), in, false),
		trace(contract.TraceFromLxc, b, a, ip("10.0.0.2", "10.0.0.1"), tcp(80, 40000, &flowpb.TCPFlags{RST: true}), in, true),
		trace(contract.TraceFromLxc, a, b, ip("10.0.0.1", "10.0.0.2"), udp, eg, false),
		trace(contract.TraceFromLxc, a, b, ip("10.0.0.1", "10.0.0.2"), icmp(8, 0), eg, false),
		trace(contract.TraceToLxc, b, a, ip("10.0.0.2", "10.0.0.1"), icmp(0, 0), eg, true),
		trace(contract.TraceToLxc, b, a, ip("10.0.0.2", "10.0.0.1"), icmp(3, 3), in, false),
		trace(contract.TraceFromLxc, a, world, ip("10.0.0.1", "192.0.2.1"), tcp(40001, 443, syn), eg, false),
		trace(contract.TraceFromLxc, a, world, ip("10.0.0.1", "192.0.2.1"), icmp(8, 0), eg, false),
		{EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 133}, Verdict: flowpb.Verdict_DROPPED,
			DropReasonDesc: flowpb.DropReason_POLICY_DENIED, Source: a, Destination: c, IP: ip("10.0.0.1", "10.0.0.3"), L4: tcp(40002, 81, syn), TrafficDirection: in},
		{EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 133}, Verdict: flowpb.Verdict_DROPPED,
			DropReasonDesc: flowpb.DropReason_POLICY_DENIED, Source: a, Destination: world, IP: ip("10.0.0.1", "192.0.2.1"), L4: tcp(40003, 25, syn), TrafficDirection: eg},
		{EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 132}, Verdict: flowpb.Verdict_DROPPED,
			DropReasonDesc: flowpb.DropReason_INVALID_SOURCE_IP, Source: a, Destination: world, IP: ip("10.9.9.9", "192.0.2.1"), L4: udp, TrafficDirection: eg},
		{EventType: &flowpb.CiliumEventType{Type: contract.MessageTypePolicyVerdict}, Verdict: flowpb.Verdict_FORWARDED, PolicyMatchType: 2,
			Source: a, Destination: c, IP: ip("10.0.0.1", "10.0.0.3"), L4: tcp(40004, 80, syn), TrafficDirection: in, IsReply: wrapperspb.Bool(false)},
		{EventType: &flowpb.CiliumEventType{Type: contract.MessageTypePolicyVerdict}, Verdict: flowpb.Verdict_FORWARDED, PolicyMatchType: 1,
			Source: host, Destination: c, IP: ip("10.0.0.254", "10.0.0.3"), L4: tcp(40005, 80, syn), TrafficDirection: in, IsReply: wrapperspb.Bool(false)},
		dns(a, b, false, &flowpb.DNS{Query: "b.y.pod.lab.", Qtypes: []string{"A"}, ObservationSource: "loupe"}),
		dns(b, a, true, &flowpb.DNS{Query: "b.y.pod.lab.", Qtypes: []string{"A"}, Ips: []string{"10.0.0.2"}, Ttl: 30, Rrtypes: []string{"A"}, ObservationSource: "loupe"}),
		dns(a, b, false, &flowpb.DNS{Query: "b.y.pod.lab.", Qtypes: []string{"AAAA"}, ObservationSource: "loupe"}),
		dns(b, a, true, &flowpb.DNS{Query: "b.y.pod.lab.", Qtypes: []string{"AAAA"}, Ips: []string{"fd00::2"}, Ttl: 30, Rrtypes: []string{"AAAA"}, ObservationSource: "loupe"}),
		dns(b, a, true, &flowpb.DNS{Query: "nope.y.pod.lab.", Qtypes: []string{"A"}, Rcode: 3, ObservationSource: "loupe"}),
		dns(b, a, true, &flowpb.DNS{Query: "x.fail.lab.", Qtypes: []string{"A"}, Rcode: 2, ObservationSource: "loupe"}),
		httpFlow(a, b, flowpb.TrafficDirection_EGRESS, &flowpb.HTTP{Method: "GET", Url: "http://b/status/500", Protocol: "HTTP/1.1"}, 0),
		httpFlow(b, a, flowpb.TrafficDirection_EGRESS, &flowpb.HTTP{Method: "GET", Url: "http://b/status/500", Protocol: "HTTP/1.1", Code: 500}, 3e6),
		httpFlow(a, b, flowpb.TrafficDirection_INGRESS, &flowpb.HTTP{Method: "POST", Url: "http://b/", Protocol: "HTTP/1.0"}, 0),
		httpFlow(b, a, flowpb.TrafficDirection_INGRESS, &flowpb.HTTP{Method: "POST", Url: "http://b/", Protocol: "HTTP/1.0", Code: 200}, 250e6),
	}
}

// httpFlow is an L7 HTTP flow as observer/l7.go builds it: a response (it
// has a code) goes from the server, with the latency.
func httpFlow(s, d *flowpb.Endpoint, dir flowpb.TrafficDirection, h *flowpb.HTTP, latency uint64) *flowpb.Flow {
	typ := flowpb.L7FlowType_REQUEST
	if h.Code != 0 {
		typ = flowpb.L7FlowType_RESPONSE
	}
	return &flowpb.Flow{Type: flowpb.FlowType_L7, EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeAccessLog}, Verdict: flowpb.Verdict_FORWARDED,
		Source: s, Destination: d, IP: &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2", IpVersion: flowpb.IPVersion_IPv4},
		L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: 80}}},
		IsReply: wrapperspb.Bool(h.Code != 0), TrafficDirection: dir,
		L7: &flowpb.Layer7{Type: typ, LatencyNs: latency, Record: &flowpb.Layer7_Http{Http: h}}}
}

// dns is an L7 DNS flow as observer/l7.go builds it.
func dns(s, d *flowpb.Endpoint, reply bool, m *flowpb.DNS) *flowpb.Flow {
	typ := flowpb.L7FlowType_REQUEST
	if reply {
		typ = flowpb.L7FlowType_RESPONSE
	}
	return &flowpb.Flow{Type: flowpb.FlowType_L7, EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeAccessLog}, Verdict: flowpb.Verdict_FORWARDED,
		Source: s, Destination: d, IP: &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2", IpVersion: flowpb.IPVersion_IPv4},
		L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 40000, DestinationPort: 53}}},
		IsReply: wrapperspb.Bool(reply), TrafficDirection: flowpb.TrafficDirection_EGRESS,
		L7: &flowpb.Layer7{Type: typ, Record: &flowpb.Layer7_Dns{Dns: m}}}
}

// TestContractMetricsMatchHubble feeds the same flows to loupe's metric
// families and to Hubble's own handlers (pkg/hubble/metrics at the version
// go.mod pins), with the same --metrics value, and wants the same series
// and counts: names, labels, values, help.
func TestContractMetricsMatchHubble(t *testing.T) {
	ctx := context.Background()
	for _, spec := range []string{
		hubblemetrics.Default,
		hubblemetrics.Dashboards,
		"flow:sourceContext=app|identity;destinationContext=pod-name|ip;labelsContext=source_ip,source_pod,source_workload,source_workload_kind,source_app,destination_ip,destination_pod,destination_workload,destination_workload_kind,destination_app,traffic_direction",
		"drop:sourceEgressContext=namespace;sourceIngressContext=pod;destinationEgressContext=ip;destinationIngressContext=workload-name tcp:destinationContext=dns|reserved-identity",
		"flows-to-world:any-drop;port;syn-only;sourceContext=pod policy:labelsContext=traffic_direction icmp:sourceContext=ip",
		"dns",
		"dns:query;ignoreAAAA;sourceContext=namespace;destinationContext=pod",
		"http",
		"http:sourceContext=workload|pod;labelsContext=source_namespace,destination_namespace",
	} {
		lreg := prometheus.NewPedanticRegistry()
		set, err := hubblemetrics.New(lreg, hubblemetrics.MustParse(spec))
		if err != nil {
			t.Fatal(err)
		}
		hreg := prometheus.NewPedanticRegistry()
		handlers, err := hubblemetricsapi.DefaultRegistry().ConfigureHandlers(slog.New(slog.DiscardHandler), hreg,
			hubblemetricsapi.ParseStaticMetricsConfig(strings.Fields(spec)))
		if err != nil {
			t.Fatal(err)
		}
		if len(*handlers) != len(hubblemetrics.MustParse(spec)) {
			t.Fatalf("%s: Hubble enabled %d families", spec, len(*handlers))
		}
		for _, f := range metricFlows() {
			set.Observe(f)
			for _, h := range *handlers {
				if err := h.Handler.ProcessFlow(ctx, f); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got, want := exposition(t, lreg), exposition(t, hreg); got != want {
			t.Errorf("--metrics %q\nloupe:\n%s\nhubble:\n%s", spec, got, want)
		}
	}
}

func exposition(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	text, err := promtext.Gather(g)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// The icmp family's type label is gopacket's name of the type and code,
// as Hubble's handler writes it.
func TestContractICMPNamesMatchGopacket(t *testing.T) {
	for ty := range 256 {
		for code := range 256 {
			if got, want := contract.ICMPTypeCode(false, uint8(ty), uint8(code)), layers.CreateICMPv4TypeCode(uint8(ty), uint8(code)).String(); got != want {
				t.Fatalf("ICMPv4 %d/%d: loupe %q, gopacket %q", ty, code, got, want)
			}
			if got, want := contract.ICMPTypeCode(true, uint8(ty), uint8(code)), layers.CreateICMPv6TypeCode(uint8(ty), uint8(code)).String(); got != want {
				t.Fatalf("ICMPv6 %d/%d: loupe %q, gopacket %q", ty, code, got, want)
			}
		}
	}
}

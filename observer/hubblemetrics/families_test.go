package hubblemetrics

import (
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Endpoints of the sample flows: x/a belongs to the Deployment web, y/b
// and z/c are bare pods.
var (
	epA     = &flowpb.Endpoint{ID: 10, Identity: 1000, Namespace: "x", PodName: "a", Labels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=x"}, Workloads: []*flowpb.Workload{{Name: "web", Kind: "Deployment"}}}
	epB     = &flowpb.Endpoint{ID: 11, Identity: 1001, Namespace: "y", PodName: "b", Labels: []string{"k8s:io.kubernetes.pod.namespace=y"}}
	epC     = &flowpb.Endpoint{ID: 12, Identity: 1002, Namespace: "z", PodName: "c"}
	epHost  = &flowpb.Endpoint{Identity: 1, Labels: []string{"reserved:host"}}
	epWorld = &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}
)

func tcpL4(sport, dport uint32, f *flowpb.TCPFlags) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport, Flags: f}}}
}

func icmp4(ty uint32) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: ty}}}
}

func ip4(src, dst string) *flowpb.IP {
	return &flowpb.IP{Source: src, Destination: dst, IpVersion: flowpb.IPVersion_IPv4}
}

// trace is a forwarded trace flow at an observation point (5 from the
// pod, 0 to the pod).
func trace(obs int32, src, dst *flowpb.Endpoint, ip *flowpb.IP, l4 *flowpb.Layer4, dir flowpb.TrafficDirection, reply bool) *flowpb.Flow {
	return &flowpb.Flow{EventType: &flowpb.CiliumEventType{Type: typeTrace, SubType: obs}, Verdict: flowpb.Verdict_FORWARDED,
		Source: src, Destination: dst, IP: ip, L4: l4, TrafficDirection: dir, IsReply: wrapperspb.Bool(reply)}
}

// sampleFlows covers every family's rules; the lab test produces each of
// them from the real datapath.
func sampleFlows() []*flowpb.Flow {
	egress, ingress := flowpb.TrafficDirection_EGRESS, flowpb.TrafficDirection_INGRESS
	syn, synAck := &flowpb.TCPFlags{SYN: true}, &flowpb.TCPFlags{SYN: true, ACK: true}
	drop := &flowpb.Flow{EventType: &flowpb.CiliumEventType{Type: typeDrop, SubType: 133}, Verdict: flowpb.Verdict_DROPPED,
		DropReasonDesc: flowpb.DropReason_POLICY_DENIED, Source: epA, Destination: epC, IP: ip4("10.0.0.1", "10.0.0.3"),
		L4: tcpL4(40000, 81, syn), TrafficDirection: ingress}
	verdict := &flowpb.Flow{EventType: &flowpb.CiliumEventType{Type: typePolicyVerdict}, Verdict: flowpb.Verdict_FORWARDED,
		Source: epA, Destination: epC, IP: ip4("10.0.0.1", "10.0.0.3"), PolicyMatchType: 1,
		L4: tcpL4(40004, 81, syn), TrafficDirection: ingress, IsReply: wrapperspb.Bool(false)}
	fromHost := &flowpb.Flow{EventType: &flowpb.CiliumEventType{Type: typePolicyVerdict}, Verdict: flowpb.Verdict_FORWARDED,
		Source: epHost, Destination: epA, IP: ip4("10.0.0.254", "10.0.0.1"), L4: tcpL4(40001, 80, syn),
		TrafficDirection: ingress, PolicyMatchType: 1}
	v6 := trace(5, epA, epB, &flowpb.IP{Source: "fd00::1", Destination: "fd00::2", IpVersion: flowpb.IPVersion_IPv6},
		&flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: 128}}}, egress, false)
	udp := trace(5, epA, epB, ip4("10.0.0.1", "10.0.0.2"),
		&flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 40002, DestinationPort: 53}}}, egress, false)
	return []*flowpb.Flow{
		trace(5, epA, epB, ip4("10.0.0.1", "10.0.0.2"), tcpL4(40000, 80, syn), egress, false),
		trace(0, epB, epA, ip4("10.0.0.2", "10.0.0.1"), tcpL4(80, 40000, synAck), egress, true),
		drop, verdict, fromHost,
		trace(5, epA, epB, ip4("10.0.0.1", "10.0.0.2"), icmp4(8), egress, false),
		trace(0, epB, epA, ip4("10.0.0.2", "10.0.0.1"), icmp4(0), egress, true),
		v6,
		trace(5, epA, epWorld, ip4("10.0.0.1", "192.0.2.1"), tcpL4(40003, 443, syn), egress, false),
		udp,
		trace(5, epA, epB, ip4("10.0.0.1", "10.0.0.2"), tcpL4(40000, 80, &flowpb.TCPFlags{FIN: true, RST: true, ACK: true}), egress, false),
	}
}

const familiesSpec = "flow:sourceContext=workload|pod|reserved-identity;destinationContext=namespace;labelsContext=traffic_direction,source_namespace" +
	" drop:sourceContext=pod tcp icmp:destinationContext=pod port-distribution policy:sourceContext=namespace flows-to-world:port;syn-only"

// TestFamilies feeds hand-built flows to every family and compares every
// series with what Hubble's rules give for them.
func TestFamilies(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	set, err := New(reg, MustParse(familiesSpec))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range sampleFlows() {
		set.Observe(f)
	}
	set.Lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 3)
	want := `
# HELP hubble_flows_processed_total Total number of flows processed
# TYPE hubble_flows_processed_total counter
hubble_flows_processed_total{destination="y",protocol="TCP",source="x/web",source_namespace="x",subtype="from-endpoint",traffic_direction="egress",type="Trace",verdict="FORWARDED"} 2
hubble_flows_processed_total{destination="x",protocol="TCP",source="y/b",source_namespace="y",subtype="to-endpoint",traffic_direction="egress",type="Trace",verdict="FORWARDED"} 1
hubble_flows_processed_total{destination="z",protocol="TCP",source="x/web",source_namespace="x",subtype="",traffic_direction="ingress",type="Drop",verdict="DROPPED"} 1
hubble_flows_processed_total{destination="z",protocol="TCP",source="x/web",source_namespace="x",subtype="",traffic_direction="ingress",type="PolicyVerdict",verdict="FORWARDED"} 1
hubble_flows_processed_total{destination="x",protocol="TCP",source="reserved:host",source_namespace="",subtype="",traffic_direction="ingress",type="PolicyVerdict",verdict="FORWARDED"} 1
hubble_flows_processed_total{destination="y",protocol="ICMPv4",source="x/web",source_namespace="x",subtype="from-endpoint",traffic_direction="egress",type="Trace",verdict="FORWARDED"} 1
hubble_flows_processed_total{destination="x",protocol="ICMPv4",source="y/b",source_namespace="y",subtype="to-endpoint",traffic_direction="egress",type="Trace",verdict="FORWARDED"} 1
hubble_flows_processed_total{destination="y",protocol="ICMPv6",source="x/web",source_namespace="x",subtype="from-endpoint",traffic_direction="egress",type="Trace",verdict="FORWARDED"} 1
hubble_flows_processed_total{destination="",protocol="TCP",source="x/web",source_namespace="x",subtype="from-endpoint",traffic_direction="egress",type="Trace",verdict="FORWARDED"} 1
hubble_flows_processed_total{destination="y",protocol="UDP",source="x/web",source_namespace="x",subtype="from-endpoint",traffic_direction="egress",type="Trace",verdict="FORWARDED"} 1
# HELP hubble_drop_total Number of drops
# TYPE hubble_drop_total counter
hubble_drop_total{protocol="TCP",reason="POLICY_DENIED",source="x/a"} 1
# HELP hubble_tcp_flags_total TCP flag occurrences
# TYPE hubble_tcp_flags_total counter
hubble_tcp_flags_total{family="IPv4",flag="SYN"} 4
hubble_tcp_flags_total{family="IPv4",flag="SYN-ACK"} 1
hubble_tcp_flags_total{family="IPv4",flag="FIN"} 1
hubble_tcp_flags_total{family="IPv4",flag="RST"} 1
# HELP hubble_icmp_total Number of ICMP messages
# TYPE hubble_icmp_total counter
hubble_icmp_total{destination="y/b",family="IPv4",type="EchoRequest"} 1
hubble_icmp_total{destination="x/a",family="IPv4",type="EchoReply"} 1
hubble_icmp_total{destination="y/b",family="IPv6",type="EchoRequest"} 1
# HELP hubble_port_distribution_total Numbers of packets distributed by destination port
# TYPE hubble_port_distribution_total counter
hubble_port_distribution_total{port="80",protocol="TCP"} 2
hubble_port_distribution_total{port="443",protocol="TCP"} 1
hubble_port_distribution_total{port="81",protocol="TCP"} 1
hubble_port_distribution_total{port="53",protocol="UDP"} 1
hubble_port_distribution_total{port="0",protocol="ICMPv4"} 1
hubble_port_distribution_total{port="0",protocol="ICMPv6"} 1
# HELP hubble_policy_verdicts_total Total number of Cilium network policy verdicts
# TYPE hubble_policy_verdicts_total counter
hubble_policy_verdicts_total{action="forwarded",direction="ingress",match="l3-only",source="x"} 1
# HELP hubble_flows_to_world_total Total number of flows to reserved:world
# TYPE hubble_flows_to_world_total counter
hubble_flows_to_world_total{port="443",protocol="TCP",verdict="FORWARDED"} 1
# HELP hubble_lost_events_total Number of lost events
# TYPE hubble_lost_events_total counter
hubble_lost_events_total{source="perf_event_ring_buffer"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if n := set.labelErrors(); n != 0 {
		t.Fatalf("%d label errors", n)
	}
}

// Contexts split by direction take precedence over the plain ones, and an
// identifier list falls back to the first that has a value.
func TestContextDirectionAndFallback(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	set, err := New(reg, MustParse("flow:sourceContext=app|ip;sourceIngressContext=namespace;destinationEgressContext=pod-name;destinationContext=identity"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range sampleFlows()[:3] {
		set.Observe(f)
	}
	want := `
# HELP hubble_flows_processed_total Total number of flows processed
# TYPE hubble_flows_processed_total counter
hubble_flows_processed_total{destination="b",protocol="TCP",source="web",subtype="from-endpoint",type="Trace",verdict="FORWARDED"} 1
hubble_flows_processed_total{destination="a",protocol="TCP",source="10.0.0.2",subtype="to-endpoint",type="Trace",verdict="FORWARDED"} 1
hubble_flows_processed_total{destination="",protocol="TCP",source="x",subtype="",type="Drop",verdict="DROPPED"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "hubble_flows_processed_total"); err != nil {
		t.Fatal(err)
	}
}

// No family: no hubble_* series at all, as Hubble without --hubble-metrics.
func TestNoFamilies(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	set, err := New(reg, MustParse(""))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range sampleFlows() {
		set.Observe(f)
	}
	set.Lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 1)
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Fatalf("%d series, %v", n, err)
	}
}

// DeletePod removes exactly the series that name the pod, through a pod
// context or the labelsContext pair, and counting again brings them back.
func TestDeletePod(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	set, err := New(reg, MustParse("flow:sourceContext=pod;destinationContext=namespace drop:labelsContext=source_namespace,source_pod tcp:destinationContext=pod-name"))
	if err != nil {
		t.Fatal(err)
	}
	flows := sampleFlows()
	for _, f := range flows {
		set.Observe(f)
	}
	count := func(name, label, value string) int {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == label && l.GetValue() == value {
						n++
					}
				}
			}
		}
		return n
	}
	if count("hubble_flows_processed_total", "source", "x/a") == 0 || count("hubble_drop_total", "source_pod", "a") != 1 ||
		count("hubble_flows_processed_total", "source", "y/b") == 0 {
		t.Fatal("sample series missing")
	}
	before, _ := testutil.GatherAndCount(reg, "hubble_tcp_flags_total")
	set.DeletePod("x", "a")
	if n := count("hubble_flows_processed_total", "source", "x/a"); n != 0 {
		t.Errorf("%d flow series of x/a left", n)
	}
	if n := count("hubble_drop_total", "source_pod", "a"); n != 0 {
		t.Errorf("%d drop series of x/a left", n)
	}
	if count("hubble_flows_processed_total", "source", "y/b") == 0 {
		t.Error("y/b's series went too")
	}
	// pod-name is not namespace/pod: Hubble leaves it alone.
	if after, _ := testutil.GatherAndCount(reg, "hubble_tcp_flags_total"); after != before {
		t.Errorf("tcp series %d -> %d", before, after)
	}
	set.Observe(flows[0])
	if count("hubble_flows_processed_total", "source", "x/a") != 1 {
		t.Error("a new flow of x/a is not counted after the delete")
	}
}

// TestContextValuesCachedByEndpoints: contexts that read only the
// endpoints and the direction give, from the cache, what they compute;
// contexts that read IPs are not cached, so two flows between the same
// endpoints from different addresses get their own values.
func TestContextValuesCachedByEndpoints(t *testing.T) {
	f1 := trace(5, epA, epB, ip4("10.0.0.1", "10.0.0.2"), tcpL4(1, 80, nil), flowpb.TrafficDirection_EGRESS, false)
	f2 := trace(5, epA, epB, ip4("10.0.0.9", "10.0.0.2"), tcpL4(1, 80, nil), flowpb.TrafficDirection_INGRESS, false)
	for _, tc := range []struct {
		opts   []Option
		cached bool
	}{
		{[]Option{{Key: "sourceContext", Values: []string{"workload", "pod"}}, {Key: "destinationContext", Values: []string{"pod"}},
			{Key: "labelsContext", Values: []string{"source_namespace", "traffic_direction"}}}, true},
		{[]Option{{Key: "sourceContext", Values: []string{"ip"}}}, false},
		{[]Option{{Key: "labelsContext", Values: []string{"source_ip"}}}, false},
		{[]Option{{Key: "sourceContext", Values: []string{"dns", "pod"}}}, false},
	} {
		c := newContexts(tc.opts)
		if (c.byEndpoints != nil) != tc.cached {
			t.Fatalf("%v: cached %v, want %v", tc.opts, c.byEndpoints != nil, tc.cached)
		}
		for range 2 { // the second round from the cache
			for _, f := range []*flowpb.Flow{f1, f2} {
				got, want := c.values(nil, f), c.compute(nil, f)
				if strings.Join(got, "|") != strings.Join(want, "|") {
					t.Fatalf("%v: values %q, computed %q", tc.opts, got, want)
				}
			}
		}
	}
}

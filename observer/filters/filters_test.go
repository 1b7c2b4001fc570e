package filters

import (
	"errors"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/loupe-project/loupe/contract"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Two flows that differ in every field a filter looks at.
var (
	flowA = &flowpb.Flow{
		Uuid:    "aaaa",
		Verdict: flowpb.Verdict_FORWARDED,
		IP:      &flowpb.IP{Source: "10.0.1.11", Destination: "10.0.1.10", IpVersion: flowpb.IPVersion_IPv4},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: 80,
			Flags: &flowpb.TCPFlags{SYN: true, ACK: true}}}},
		Source: &flowpb.Endpoint{Identity: 1001, Namespace: "x", PodName: "client-1",
			Labels:    []string{"k8s:app=client", "k8s:io.kubernetes.pod.namespace=x"},
			Workloads: []*flowpb.Workload{{Name: "client", Kind: "Deployment"}}},
		Destination: &flowpb.Endpoint{Identity: 1000, Namespace: "x", PodName: "web-abc",
			Labels:    []string{"k8s:app=web", "k8s:tier=front", "k8s:io.kubernetes.pod.namespace=x"},
			Workloads: []*flowpb.Workload{{Name: "web", Kind: "Deployment"}}},
		DestinationService: &flowpb.Service{Name: "web", Namespace: "x"},
		NodeName:           "node-1",
		EventType:          &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: 5},
		TrafficDirection:   flowpb.TrafficDirection_EGRESS,
		IsReply:            wrapperspb.Bool(true),
		Interface:          &flowpb.NetworkInterface{Index: 7, Name: "lxc1"},
	}
	flowB = &flowpb.Flow{
		Uuid:           "bbbb",
		Verdict:        flowpb.Verdict_DROPPED,
		DropReasonDesc: flowpb.DropReason_POLICY_DENIED,
		IP:             &flowpb.IP{Source: "fd00::20", Destination: "fd00::30", IpVersion: flowpb.IPVersion_IPv6},
		L4:             &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 5353, DestinationPort: 53}}},
		Source: &flowpb.Endpoint{Identity: 2002, Namespace: "y", PodName: "db-0",
			Labels:    []string{"k8s:app=db", "k8s:io.kubernetes.pod.namespace=y"},
			Workloads: []*flowpb.Workload{{Name: "db", Kind: "StatefulSet"}}},
		Destination:      &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}},
		NodeName:         "node-2",
		EventType:        &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 133},
		TrafficDirection: flowpb.TrafficDirection_INGRESS,
	}
	flowICMP = &flowpb.Flow{
		IP:        &flowpb.IP{Source: "10.1.2.1", Destination: "10.1.2.2", IpVersion: flowpb.IPVersion_IPv4},
		L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 8}}},
		EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: 0},
		IsReply:   wrapperspb.Bool(false),
	}
)

// Every case says which of flowA, flowB, flowICMP the filter selects.
func TestFieldFilters(t *testing.T) {
	tests := []struct {
		name string
		ff   *flowpb.FlowFilter
		a, b bool
		icmp bool
	}{
		{"uuid", &flowpb.FlowFilter{Uuid: []string{"bbbb"}}, false, true, false},
		{"source_ip exact", &flowpb.FlowFilter{SourceIp: []string{"10.0.1.11"}}, true, false, false},
		{"source_ip cidr", &flowpb.FlowFilter{SourceIp: []string{"10.0.0.0/16", "fd00::/64"}}, true, true, false},
		{"destination_ip", &flowpb.FlowFilter{DestinationIp: []string{"fd00::30", "10.1.2.0/24"}}, false, true, true},
		{"ip_version", &flowpb.FlowFilter{IpVersion: []flowpb.IPVersion{flowpb.IPVersion_IPv6}}, false, true, false},
		{"source_pod ns/name prefix", &flowpb.FlowFilter{SourcePod: []string{"x/client-"}}, true, false, false},
		{"source_pod namespace", &flowpb.FlowFilter{SourcePod: []string{"y/"}}, false, true, false},
		{"source_pod any namespace", &flowpb.FlowFilter{SourcePod: []string{"db"}}, false, true, false},
		{"source_pod wrong namespace", &flowpb.FlowFilter{SourcePod: []string{"y/client"}}, false, false, false},
		{"destination_pod", &flowpb.FlowFilter{DestinationPod: []string{"x/web"}}, true, false, false},
		{"source_label", &flowpb.FlowFilter{SourceLabel: []string{"app=db"}}, false, true, false},
		{"source_label with source", &flowpb.FlowFilter{SourceLabel: []string{"k8s:app in (client, db)"}}, true, true, false},
		{"source_label wrong source", &flowpb.FlowFilter{SourceLabel: []string{"reserved:app=db"}}, false, false, false},
		{"destination_label set", &flowpb.FlowFilter{DestinationLabel: []string{"app=web,tier!=back"}}, true, false, false},
		{"destination_label reserved", &flowpb.FlowFilter{DestinationLabel: []string{"reserved:world"}}, false, true, false},
		{"destination_label notin", &flowpb.FlowFilter{DestinationLabel: []string{"k8s:io.kubernetes.pod.namespace notin (y)"}}, true, true, true},
		{"source_service none", &flowpb.FlowFilter{SourceService: []string{"x/web"}}, false, false, false},
		{"destination_service", &flowpb.FlowFilter{DestinationService: []string{"x/"}}, true, false, false},
		{"source_workload kind", &flowpb.FlowFilter{SourceWorkload: []*flowpb.Workload{{Kind: "StatefulSet"}}}, false, true, false},
		{"destination_workload name", &flowpb.FlowFilter{DestinationWorkload: []*flowpb.Workload{{Name: "web", Kind: "Deployment"}}}, true, false, false},
		{"source_identity", &flowpb.FlowFilter{SourceIdentity: []uint32{1001, 7}}, true, false, false},
		{"destination_identity", &flowpb.FlowFilter{DestinationIdentity: []uint32{2}}, false, true, false},
		{"verdict", &flowpb.FlowFilter{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}, false, true, false},
		{"drop_reason_desc", &flowpb.FlowFilter{DropReasonDesc: []flowpb.DropReason{flowpb.DropReason_POLICY_DENIED}}, false, true, false},
		{"event_type type", &flowpb.FlowFilter{EventType: []*flowpb.EventTypeFilter{{Type: 4}}}, true, false, true},
		{"event_type sub type 0", &flowpb.FlowFilter{EventType: []*flowpb.EventTypeFilter{{Type: 4, MatchSubType: true, SubType: 0}}}, false, false, true},
		{"traffic_direction", &flowpb.FlowFilter{TrafficDirection: []flowpb.TrafficDirection{flowpb.TrafficDirection_INGRESS}}, false, true, false},
		{"reply true", &flowpb.FlowFilter{Reply: []bool{true}}, true, false, false},
		{"reply false (drops count as not replies)", &flowpb.FlowFilter{Reply: []bool{false}}, false, true, true},
		{"tcp_flags", &flowpb.FlowFilter{TcpFlags: []*flowpb.TCPFlags{{SYN: true, ACK: true}}}, true, false, false},
		{"tcp_flags not all set", &flowpb.FlowFilter{TcpFlags: []*flowpb.TCPFlags{{SYN: true, FIN: true}}}, false, false, false},
		{"protocol", &flowpb.FlowFilter{Protocol: []string{"UDP", "icmp"}}, false, true, true},
		{"protocol tcp", &flowpb.FlowFilter{Protocol: []string{"tcp"}}, true, false, false},
		{"source_port", &flowpb.FlowFilter{SourcePort: []string{"5353"}}, false, true, false},
		{"destination_port", &flowpb.FlowFilter{DestinationPort: []string{"80", "53"}}, true, true, false},
		{"node_name exact", &flowpb.FlowFilter{NodeName: []string{"node-2"}}, false, true, false},
		{"node_name glob", &flowpb.FlowFilter{NodeName: []string{"default/node-*"}}, true, true, false},
		{"node_name cluster", &flowpb.FlowFilter{NodeName: []string{"other/"}}, false, false, false},
		{"interface", &flowpb.FlowFilter{Interface: []*flowpb.NetworkInterface{{Name: "lxc1"}}}, true, false, false},
		{"http_status_code matches no L3/L4 flow", &flowpb.FlowFilter{HttpStatusCode: []string{"2+"}}, false, false, false},
		{"http_method", &flowpb.FlowFilter{HttpMethod: []string{"GET"}}, false, false, false},
		{"http_path", &flowpb.FlowFilter{HttpPath: []string{"/api"}}, false, false, false},
		{"http_url", &flowpb.FlowFilter{HttpUrl: []string{"example"}}, false, false, false},
		{"http_header", &flowpb.FlowFilter{HttpHeader: []*flowpb.HTTPHeader{{Key: "a", Value: "b"}}}, false, false, false},
		{"dns_query", &flowpb.FlowFilter{DnsQuery: []string{".*"}}, false, false, false},
		{"source_fqdn", &flowpb.FlowFilter{SourceFqdn: []string{"*.example.com"}}, false, false, false},
		{"AND of fields", &flowpb.FlowFilter{SourcePod: []string{"x/"}, Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}, false, false, false},
		{"AND of fields, both hold", &flowpb.FlowFilter{SourcePod: []string{"x/"}, DestinationPort: []string{"80"}}, true, false, false},
		{"empty filter", &flowpb.FlowFilter{}, true, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fn, err := Build(tc.ff)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name string
				f    *flowpb.Flow
				want bool
			}{{"flowA", flowA, tc.a}, {"flowB", flowB, tc.b}, {"flowICMP", flowICMP, tc.icmp}} {
				if got := fn(c.f); got != c.want {
					t.Errorf("%s: include = %v, want %v", c.name, got, c.want)
				}
				// The same filter as a blacklist excludes exactly these.
				bl, _ := BuildList([]*flowpb.FlowFilter{tc.ff})
				if got := Apply(nil, bl, c.f); got == c.want {
					t.Errorf("%s: as blacklist keeps = %v, want %v", c.name, got, !c.want)
				}
			}
		})
	}
}

func TestWhitelistORBlacklistNOR(t *testing.T) {
	wl, err := BuildList([]*flowpb.FlowFilter{{SourcePod: []string{"x/"}}, {Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}})
	if err != nil {
		t.Fatal(err)
	}
	if !Apply(wl, nil, flowA) || !Apply(wl, nil, flowB) || Apply(wl, nil, flowICMP) {
		t.Error("whitelist is not an OR")
	}
	bl, _ := BuildList([]*flowpb.FlowFilter{{Protocol: []string{"tcp"}}, {Protocol: []string{"udp"}}})
	if Apply(nil, bl, flowA) || Apply(nil, bl, flowB) || !Apply(nil, bl, flowICMP) {
		t.Error("blacklist is not a NOR")
	}
	if Apply(wl, bl, flowA) {
		t.Error("blacklist must win over whitelist")
	}
}

func TestInvalidFiltersNameTheField(t *testing.T) {
	for field, ff := range map[string]*flowpb.FlowFilter{
		"source_pod":                  {SourcePod: []string{""}},
		"destination_service":         {DestinationService: []string{""}},
		"source_ip":                   {SourceIp: []string{"1.2.3.4/40"}},
		"destination_ip":              {DestinationIp: []string{"nope"}},
		"source_label":                {SourceLabel: []string{"a=(b"}},
		"source_port":                 {SourcePort: []string{"70000"}},
		"protocol":                    {Protocol: []string{"ftp"}},
		"verdict":                     {Verdict: []flowpb.Verdict{99}},
		"drop_reason_desc":            {DropReasonDesc: []flowpb.DropReason{1}},
		"traffic_direction":           {TrafficDirection: []flowpb.TrafficDirection{9}},
		"event_type":                  {EventType: []*flowpb.EventTypeFilter{{Type: 300}}},
		"node_name":                   {NodeName: []string{"Node_Ü"}},
		"http_path":                   {HttpPath: []string{"("}},
		"http_status_code":            {HttpStatusCode: []string{"600"}},
		"experimental.cel_expression": {Experimental: &flowpb.FlowFilter_Experimental{CelExpression: []string{"true"}}},
	} {
		_, err := Build(ff)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: got %v", field, err)
		}
	}
}

func TestTranslateSelector(t *testing.T) {
	for in, want := range map[string]string{
		"app=web":                         "any.app=web",
		"k8s:app=web, !foo":               "k8s.app=web, !any.foo",
		"k8s:app in (a,b),tier notin (x)": "k8s.app in (a,b),any.tier notin (x)",
		"reserved:world":                  "reserved.world",
	} {
		if got := translateSelector(in); got != want {
			t.Errorf("translateSelector(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkFilter(b *testing.B) {
	wl, _ := BuildList([]*flowpb.FlowFilter{{SourcePod: []string{"x/"}, DestinationLabel: []string{"app=web"}, DestinationPort: []string{"80"}}})
	bl, _ := BuildList([]*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}})
	b.ReportAllocs()
	for b.Loop() {
		Apply(wl, bl, flowA)
	}
}

package relaytest

import (
	"fmt"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/loupe-project/loupe/contract"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Flow builds a fully populated TCP flow, the size of a real enriched one,
// observed on node at t. i varies the pods, ports and uuid.
func Flow(node string, t time.Time, i int) *flowpb.Flow {
	src := fmt.Sprintf("client-%d", i%7)
	dst := fmt.Sprintf("server-%d", i%3)
	return &flowpb.Flow{
		Time:     timestamppb.New(t),
		Uuid:     fmt.Sprintf("%s-%08d-%d", node, i, t.UnixNano()),
		Verdict:  flowpb.Verdict_FORWARDED,
		NodeName: node,
		IP: &flowpb.IP{
			Source:      fmt.Sprintf("10.244.%d.%d", i%4, 10+i%200),
			Destination: fmt.Sprintf("10.244.%d.%d", (i+1)%4, 20+i%100),
			IpVersion:   flowpb.IPVersion_IPv4,
		},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: uint32(30000 + i%20000), DestinationPort: 8080,
			Flags: &flowpb.TCPFlags{ACK: true, PSH: i%2 == 0},
		}}},
		Source: &flowpb.Endpoint{
			ID: uint32(100 + i%7), Identity: uint32(20000 + i%7), Namespace: "demo", PodName: src,
			Labels:    []string{"k8s:app=client", "k8s:io.kubernetes.pod.namespace=demo"},
			Workloads: []*flowpb.Workload{{Name: "client", Kind: "Deployment"}},
		},
		Destination: &flowpb.Endpoint{
			ID: uint32(200 + i%3), Identity: uint32(30000 + i%3), Namespace: "demo", PodName: dst,
			Labels:    []string{"k8s:app=server", "k8s:io.kubernetes.pod.namespace=demo"},
			Workloads: []*flowpb.Workload{{Name: "server", Kind: "Deployment"}},
		},
		Type:                  flowpb.FlowType_L3_L4,
		EventType:             &flowpb.CiliumEventType{Type: contract.MessageTypeTrace},
		TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
		TrafficDirection:      flowpb.TrafficDirection_INGRESS,
		IsReply:               wrapperspb.Bool(false),
		Interface:             &flowpb.NetworkInterface{Index: uint32(10 + i%7), Name: fmt.Sprintf("lxc%04x", i%7)},
		Summary:               "TCP Flags: ACK, PSH",
	}
}

package ui

import (
	"fmt"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// codecEndpoint is an endpoint as the agent's decoder fills it for a pod.
func codecEndpoint(ns, pod, app string) *flowpb.Endpoint {
	return &flowpb.Endpoint{
		ID: 1234, Identity: 56789, Namespace: ns, PodName: pod,
		Labels: []string{"k8s:app=" + app, "k8s:io.cilium.k8s.policy.cluster=default",
			"k8s:io.cilium.k8s.policy.serviceaccount=default", "k8s:io.kubernetes.pod.namespace=" + ns},
		Workloads: []*flowpb.Workload{{Name: app, Kind: "Deployment"}},
	}
}

func codecResponse(i int, src, dst *flowpb.Endpoint) *observerpb.GetFlowsResponse {
	f := &flowpb.Flow{
		Time:    timestamppb.New(timestamppb.Now().AsTime()),
		Verdict: flowpb.Verdict_FORWARDED,
		IP:      &flowpb.IP{Source: "10.0.1.5", Destination: "10.0.2.9", IpVersion: flowpb.IPVersion_IPv4},
		L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: uint32(40000 + i), DestinationPort: 80, Flags: &flowpb.TCPFlags{SYN: true}}}},
		Source:  src, Destination: dst,
		Type: flowpb.FlowType_L3_L4, NodeName: "node-1",
		EventType: &flowpb.CiliumEventType{Type: 4}, TrafficDirection: flowpb.TrafficDirection_EGRESS,
		IsReply: wrapperspb.Bool(false), Uuid: fmt.Sprintf("uuid-%d", i),
	}
	return &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: "node-1", Time: f.Time}
}

func decodeWith(t testing.TB, c *endpointCodec, b []byte) (*observerpb.GetFlowsResponse, error) {
	t.Helper()
	var got observerpb.GetFlowsResponse
	err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got)
	return &got, err
}

// Two flows of one pod decode to the proto codec's result, with one shared
// source endpoint: without the codec, each flow would have its own.
func TestEndpointCodecSharesEndpoints(t *testing.T) {
	c := newEndpointCodec()
	src, dst := codecEndpoint("shop", "web-1", "web"), codecEndpoint("shop", "db-0", "db")
	var flows []*flowpb.Flow
	for i := range 2 {
		want := codecResponse(i, src, dst)
		b, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeWith(t, c, b)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("decoded %v\nwant %v", got, want)
		}
		flows = append(flows, got.GetFlow())
	}
	if flows[0].Source != flows[1].Source || flows[0].Destination != flows[1].Destination {
		t.Error("two flows of the same pods do not share their endpoints")
	}
	if flows[0].Source == flows[0].Destination {
		t.Error("source and destination share one endpoint")
	}
}

// FuzzEndpointCodec holds the codec to proto.Unmarshal on any bytes.
func FuzzEndpointCodec(f *testing.F) {
	src, dst := codecEndpoint("shop", "web-1", "web"), codecEndpoint("shop", "db-0", "db")
	for _, m := range []proto.Message{
		codecResponse(1, src, dst),
		codecResponse(2, nil, dst),
		codecResponse(3, &flowpb.Endpoint{}, nil),
		&observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{NumEventsLost: 3}}},
		&observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &flowpb.Flow{}}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, b...)) // every field twice: occurrences merge
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want observerpb.GetFlowsResponse
		werr := proto.Unmarshal(b, &want)
		c := newEndpointCodec()
		for range 2 { // the second pass takes endpoints from the cache
			got, err := decodeWith(t, c, b)
			if (err == nil) != (werr == nil) {
				t.Fatalf("error %v, proto.Unmarshal's %v", err, werr)
			}
			if err == nil && !proto.Equal(got, &want) {
				t.Fatalf("decoded %v\nproto.Unmarshal %v", got, &want)
			}
		}
	})
}

// BenchmarkEndpointCodec decodes the map's flows with the codec and with
// the proto codec it replaces.
func BenchmarkEndpointCodec(b *testing.B) {
	src, dst := codecEndpoint("shop", "web-1", "web"), codecEndpoint("shop", "db-0", "db")
	raw, err := proto.Marshal(codecResponse(1, src, dst))
	if err != nil {
		b.Fatal(err)
	}
	data := mem.BufferSlice{mem.SliceBuffer(raw)}
	b.Run("shared", func(b *testing.B) {
		c := newEndpointCodec()
		b.ReportAllocs()
		for b.Loop() {
			var r observerpb.GetFlowsResponse
			if err := c.Unmarshal(data, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r observerpb.GetFlowsResponse
			if err := protoCodec.Unmarshal(data, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

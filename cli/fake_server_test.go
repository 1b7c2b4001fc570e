package cli

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/loupe-project/loupe/contract"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
)

// fakeObserver is a real gRPC Observer server that serves a fixed list of
// responses to every GetFlows call and records the requests it receives.
type fakeObserver struct {
	observerpb.UnimplementedObserverServer

	responses  []*observerpb.GetFlowsResponse
	status     *observerpb.ServerStatusResponse
	nodes      []*observerpb.Node
	namespaces []*observerpb.Namespace

	mu     sync.Mutex
	reqs   []*observerpb.GetFlowsRequest
	notify chan struct{} // gets a token per GetFlows request, if set
}

func (f *fakeObserver) GetFlows(req *observerpb.GetFlowsRequest, stream observerpb.Observer_GetFlowsServer) error {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	notify := f.notify
	f.mu.Unlock()
	if notify != nil {
		notify <- struct{}{}
	}
	for _, r := range f.responses {
		if err := stream.Send(r); err != nil {
			return err
		}
	}
	if req.GetFollow() {
		<-stream.Context().Done()
	}
	return nil
}

func (f *fakeObserver) ServerStatus(context.Context, *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	return f.status, nil
}

func (f *fakeObserver) GetNodes(context.Context, *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	return &observerpb.GetNodesResponse{Nodes: f.nodes}, nil
}

func (f *fakeObserver) GetNamespaces(context.Context, *observerpb.GetNamespacesRequest) (*observerpb.GetNamespacesResponse, error) {
	return &observerpb.GetNamespacesResponse{Namespaces: f.namespaces}, nil
}

// takeRequest returns the one GetFlowsRequest received since the last call.
func (f *fakeObserver) takeRequest(t *testing.T) *observerpb.GetFlowsRequest {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) != 1 {
		t.Fatalf("server got %d GetFlows requests, want 1", len(f.reqs))
	}
	r := f.reqs[0]
	f.reqs = nil
	return r
}

// serve runs f (with a gRPC health service in state hs) on lis until the test ends.
func (f *fakeObserver) serve(t *testing.T, lis net.Listener, hs healthpb.HealthCheckResponse_ServingStatus, opts ...grpc.ServerOption) {
	t.Helper()
	srv := grpc.NewServer(opts...)
	observerpb.RegisterObserverServer(srv, f)
	h := health.NewServer()
	h.SetServingStatus(observerHealthService, hs)
	healthpb.RegisterHealthServer(srv, h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
}

// startFake serves f on a loopback TCP port and returns its address.
func startFake(t *testing.T, f *fakeObserver) string {
	t.Helper()
	return startFakeHealth(t, f, healthpb.HealthCheckResponse_SERVING)
}

func startFakeHealth(t *testing.T, f *fakeObserver, hs healthpb.HealthCheckResponse_ServingStatus) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.serve(t, lis, hs)
	return lis.Addr().String()
}

func startFakeTLS(t *testing.T, f *fakeObserver, creds credentials.TransportCredentials) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.serve(t, lis, healthpb.HealthCheckResponse_SERVING, grpc.Creds(creds))
	return lis.Addr().String()
}

// startFakeUnix serves f on a unix socket and returns "unix:///path".
func startFakeUnix(t *testing.T, f *fakeObserver) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "observer.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f.serve(t, lis, healthpb.HealthCheckResponse_SERVING)
	return "unix://" + path
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// run executes a loupe command in-process and returns what it printed.
func run(t testing.TB, cmd *cobra.Command, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runFollow runs a --follow command until the server has its request and
// (if until is set) until(stdout) holds, then cancels it as Ctrl-C would.
func runFollow(t *testing.T, cmd *cobra.Command, f *fakeObserver, until func(stdout string) bool, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	f.mu.Lock()
	f.notify = make(chan struct{}, 1)
	notify := f.notify
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.notify = nil
		f.mu.Unlock()
	}()
	var out, errOut syncBuffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	deadline := time.After(30 * time.Second)
	select {
	case <-notify:
	case err := <-done:
		return out.String(), errOut.String(), err
	case <-deadline:
		t.Fatal("the server got no request")
	}
	// Poll for the condition: the command writes from its own goroutine.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for until != nil && !until(out.String()) {
		select {
		case err := <-done:
			return out.String(), errOut.String(), err
		case <-deadline:
			t.Fatalf("condition not reached; stdout %q", out.String())
		case <-tick.C:
		}
	}
	cancel()
	err = <-done
	return out.String(), errOut.String(), err
}

func ts(sec int64, nsec int32) *timestamppb.Timestamp {
	return &timestamppb.Timestamp{Seconds: sec, Nanos: nsec}
}

// base is 2024-05-06T07:08:09Z.
const base = 1714979289

func ep(id, identity uint32, ns, pod string, labels ...string) *flowpb.Endpoint {
	return &flowpb.Endpoint{ID: id, Identity: identity, Namespace: ns, PodName: pod, Labels: labels}
}

// fixtureFlows covers every kind of line the printers produce: traces both
// ways, replies, unknown direction, drops (known and unknown reasons),
// policy verdicts with policy names, services, L7, IPv6, non-IP, reserved
// identities, auth and trace IDs, and a name with a terminal escape.
func fixtureFlows() []*flowpb.Flow {
	tcp := func(sp, dp uint32, fl *flowpb.TCPFlags) *flowpb.Layer4 {
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sp, DestinationPort: dp, Flags: fl}}}
	}
	web := ep(101, 40001, "shop", "web-7d4f9", "k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop")
	db := ep(102, 40002, "shop", "db-0", "k8s:app=db", "k8s:io.kubernetes.pod.namespace=shop")
	return []*flowpb.Flow{
		{
			Time: ts(base, 123456789), Uuid: "7f6e1c1e-0001-4000-8000-000000000001",
			Verdict: flowpb.Verdict_FORWARDED,
			IP:      &flowpb.IP{Source: "10.1.0.11", Destination: "10.1.1.12", IpVersion: flowpb.IPVersion_IPv4},
			L4:      tcp(43210, 5432, &flowpb.TCPFlags{SYN: true}),
			Source:  web, Destination: db,
			Type: flowpb.FlowType_L3_L4, NodeName: "node-a",
			EventType:             &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: 0},
			TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
			TrafficDirection:      flowpb.TrafficDirection_INGRESS,
			IsReply:               wrapperspb.Bool(false),
			Summary:               "TCP Flags: SYN",
			Interface:             &flowpb.NetworkInterface{Index: 7, Name: "lxc1234"},
		},
		{
			Time: ts(base, 223456789), Verdict: flowpb.Verdict_FORWARDED,
			IP:     &flowpb.IP{Source: "10.1.1.12", Destination: "10.1.0.11", IpVersion: flowpb.IPVersion_IPv4},
			L4:     tcp(5432, 43210, &flowpb.TCPFlags{SYN: true, ACK: true}),
			Source: db, Destination: web,
			Type: flowpb.FlowType_L3_L4, NodeName: "node-b",
			EventType:             &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: 5},
			TraceObservationPoint: flowpb.TraceObservationPoint_FROM_ENDPOINT,
			TrafficDirection:      flowpb.TrafficDirection_INGRESS,
			IsReply:               wrapperspb.Bool(true),
			Summary:               "TCP Flags: SYN, ACK",
		},
		{
			Time: ts(base+1, 0), Verdict: flowpb.Verdict_DROPPED,
			DropReason: 133, DropReasonDesc: flowpb.DropReason_POLICY_DENIED,
			IP:     &flowpb.IP{Source: "10.1.0.11", Destination: "10.1.1.13", IpVersion: flowpb.IPVersion_IPv4},
			L4:     tcp(43211, 80, &flowpb.TCPFlags{SYN: true}),
			Source: web, Destination: ep(103, 40003, "admin", "panel-1", "k8s:app=panel"),
			Type: flowpb.FlowType_L3_L4, NodeName: "node-a",
			EventType:        &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 133},
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			IsReply:          wrapperspb.Bool(false),
			Summary:          "TCP Flags: SYN",
			EgressDeniedBy:   []*flowpb.Policy{{Name: "deny-admin", Namespace: "shop", Kind: "NetworkPolicy"}},
		},
		{
			Time: ts(base+2, 500000000), Verdict: flowpb.Verdict_FORWARDED,
			IP:     &flowpb.IP{Source: "10.1.0.11", Destination: "10.96.0.10", IpVersion: flowpb.IPVersion_IPv4},
			L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 5353, DestinationPort: 53}}},
			Source: web, Destination: ep(0, 2, "", ""),
			DestinationService: &flowpb.Service{Name: "kube-dns", Namespace: "kube-system"},
			Type:               flowpb.FlowType_L3_L4, NodeName: "node-a",
			EventType:        &flowpb.CiliumEventType{Type: contract.MessageTypePolicyVerdict},
			PolicyMatchType:  2,
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			IsReply:          wrapperspb.Bool(false),
			Summary:          "UDP",
			EgressAllowedBy: []*flowpb.Policy{
				{Name: "allow-dns", Namespace: "shop", Kind: "NetworkPolicy"},
				{Name: "", Kind: "NetworkPolicy"},
				{Name: "allow-all-egress", Namespace: "shop", Kind: "NetworkPolicy"},
			},
		},
		{
			Time: ts(base+3, 0), Verdict: flowpb.Verdict_FORWARDED,
			IP:     &flowpb.IP{Source: "192.0.2.7", Destination: "10.1.0.11", IpVersion: flowpb.IPVersion_IPv4},
			L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 8}}},
			Source: ep(0, 2, "", "", "reserved:world"), Destination: web,
			Type: flowpb.FlowType_L3_L4, NodeName: "node-a",
			EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: 0},
			Summary:   "ICMPv4 EchoRequest",
			AuthType:  flowpb.AuthType_SPIRE,
			IpTraceId: &flowpb.IPTraceID{TraceId: 42},
		},
		{
			Time: ts(base+4, 0), Verdict: flowpb.Verdict_DROPPED,
			DropReason: 132, DropReasonDesc: flowpb.DropReason_INVALID_SOURCE_IP,
			IP:     &flowpb.IP{Source: "fd00::66", Destination: "fd00:1::12", IpVersion: flowpb.IPVersion_IPv6},
			L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: 128}}},
			Source: ep(104, 40004, "shop", "\x1b[31mspoofer"), Destination: ep(0, 1, "", ""),
			Type: flowpb.FlowType_L3_L4, NodeName: "node-b",
			EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 132},
			IsReply:   wrapperspb.Bool(false),
			Summary:   "ICMPv6 EchoRequest",
		},
		{
			Time: ts(base+5, 0), Verdict: flowpb.Verdict_DROPPED,
			IP:     &flowpb.IP{Source: "10.1.0.11", Destination: "10.1.0.12", IpVersion: flowpb.IPVersion_IPv4},
			Source: web, Destination: db,
			NodeName:  "node-a",
			EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 250},
			Summary:   "unknown",
		},
		{
			Time: ts(base+6, 0), Verdict: flowpb.Verdict_FORWARDED,
			IP:     &flowpb.IP{Source: "10.1.0.11", Destination: "10.1.1.12", IpVersion: flowpb.IPVersion_IPv4},
			L4:     tcp(43212, 8080, nil),
			Source: web, Destination: db,
			Type: flowpb.FlowType_L7, NodeName: "node-a",
			EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeAccessLog},
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Method: "GET", Url: "http://db/health", Protocol: "HTTP/1.1"}}},
			IsReply: wrapperspb.Bool(false),
			Summary: "HTTP/1.1 GET http://db/health",
		},
		{
			Time: ts(base+7, 0), Verdict: flowpb.Verdict_FORWARDED,
			Ethernet:  &flowpb.Ethernet{Source: "02:00:00:00:00:01", Destination: "ff:ff:ff:ff:ff:ff"},
			NodeName:  "node-b",
			EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: 11},
			Summary:   "ARP",
		},
	}
}

func fixtureResponses() []*observerpb.GetFlowsResponse {
	var out []*observerpb.GetFlowsResponse
	for _, f := range fixtureFlows() {
		out = append(out, &observerpb.GetFlowsResponse{
			Time: f.GetTime(), NodeName: f.GetNodeName(),
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f},
		})
	}
	return out
}

func nodeStatusResponse(state relaypb.NodeState, msg string, nodes ...string) *observerpb.GetFlowsResponse {
	return &observerpb.GetFlowsResponse{
		Time: ts(base+10, 0), NodeName: "relay",
		ResponseTypes: &observerpb.GetFlowsResponse_NodeStatus{NodeStatus: &relaypb.NodeStatusEvent{
			StateChange: state, NodeNames: nodes, Message: msg,
		}},
	}
}

func lostEventsResponse(n uint64) *observerpb.GetFlowsResponse {
	return &observerpb.GetFlowsResponse{
		Time: ts(base+11, 0), NodeName: "node-a",
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
			Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: n, Cpu: wrapperspb.Int32(1),
		}},
	}
}

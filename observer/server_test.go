package observer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	peerpb "github.com/cilium/cilium/api/v1/peer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer/observertest"
)

// serve starts o on a loopback listener and returns a client connection.
func serve(t testing.TB, o *Observer) *grpc.ClientConn {
	t.Helper()
	return observertest.Dial(t, observertest.Serve(t, o))
}

// fill writes n TCP flows from x/b to x/web on port 80+i%3, one second apart
// starting at boot time 1000s.
func fill(o *Observer, n int) {
	for i := range n {
		o.HandleEvent(rawEvent(evSpec{
			ts: uint64(1000+i) * 1e9, typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded, proto: 6, tcpFlags: 0x02, flags: 2,
			epID: 11, srcID: 1001, dstID: 1000, src: "10.0.1.11", dst: "10.0.1.10",
			sport: uint16(30000 + i), dport: uint16(80 + i%3), dir: contract.DirectionEgress,
		}))
	}
}

func collect(t *testing.T, c observerpb.ObserverClient, req *observerpb.GetFlowsRequest) (flows []*flowpb.Flow, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.GetFlows(ctx, req)
	if err != nil {
		return nil, err
	}
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return flows, nil
		}
		if err != nil {
			return flows, err
		}
		if f := r.GetFlow(); f != nil {
			if r.NodeName != "node-1" {
				t.Errorf("response node_name %q", r.NodeName)
			}
			flows = append(flows, f)
		}
	}
}

func sports(fs []*flowpb.Flow) []uint32 {
	var out []uint32
	for _, f := range fs {
		out = append(out, f.GetL4().GetTCP().GetSourcePort()-30000)
	}
	return out
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGetFlows(t *testing.T) {
	o := newTestObserver(t, 15, nil)
	fill(o, 20) // flows 0..19; the ring keeps 5..19
	c := observerpb.NewObserverClient(serve(t, o))
	at := func(i int) *timestamppb.Timestamp {
		return timestamppb.New(time.Unix(0, o.dec.bootOffset+int64(1000+i)*1e9))
	}
	port81 := []*flowpb.FlowFilter{{DestinationPort: []string{"81"}}}
	for _, tc := range []struct {
		name string
		req  *observerpb.GetFlowsRequest
		want []uint32
	}{
		{"all", &observerpb.GetFlowsRequest{}, []uint32{5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}},
		{"last 3", &observerpb.GetFlowsRequest{Number: 3}, []uint32{17, 18, 19}},
		{"first 2", &observerpb.GetFlowsRequest{Number: 2, First: true}, []uint32{5, 6}},
		{"last 2 on port 81", &observerpb.GetFlowsRequest{Number: 2, Whitelist: port81}, []uint32{16, 19}},
		{"first 2 on port 81", &observerpb.GetFlowsRequest{Number: 2, First: true, Whitelist: port81}, []uint32{7, 10}},
		{"blacklist port 81 and 82", &observerpb.GetFlowsRequest{Number: 3, Blacklist: []*flowpb.FlowFilter{
			{DestinationPort: []string{"81"}}, {DestinationPort: []string{"82"}}}}, []uint32{12, 15, 18}},
		{"since", &observerpb.GetFlowsRequest{Since: at(17)}, []uint32{17, 18, 19}},
		{"until", &observerpb.GetFlowsRequest{Until: at(7)}, []uint32{5, 6, 7}},
		{"since and until", &observerpb.GetFlowsRequest{Since: at(10), Until: at(12)}, []uint32{10, 11, 12}},
		{"pod filter", &observerpb.GetFlowsRequest{Number: 1, Whitelist: []*flowpb.FlowFilter{{SourcePod: []string{"x/b"}, DestinationPod: []string{"x/web-"}}}}, []uint32{19}},
		{"pod filter excludes", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{SourcePod: []string{"y/"}}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := collect(t, c, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := sports(fs); !equalU32(got, tc.want) {
				t.Errorf("got flows %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGetFlowsFieldMask(t *testing.T) {
	o := newTestObserver(t, 15, nil)
	fill(o, 1)
	c := observerpb.NewObserverClient(serve(t, o))
	fs, err := collect(t, c, &observerpb.GetFlowsRequest{FieldMask: &fieldmaskpb.FieldMask{
		Paths: []string{"source.pod_name", "l4", "verdict"}}})
	if err != nil || len(fs) != 1 {
		t.Fatalf("flows %d, err %v", len(fs), err)
	}
	f := fs[0]
	if f.GetSource().GetPodName() != "b" || f.GetSource().GetNamespace() != "" || f.GetL4().GetTCP().GetDestinationPort() != 80 ||
		f.GetVerdict() != flowpb.Verdict_FORWARDED || f.GetIP() != nil || f.GetDestination() != nil || f.GetUuid() != "" {
		t.Errorf("masked flow: %v", f)
	}
	_, err = collect(t, c, &observerpb.GetFlowsRequest{FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"source.nope"}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad field mask: %v", err)
	}
}

func TestGetFlowsInvalidFilter(t *testing.T) {
	o := newTestObserver(t, 15, nil)
	c := observerpb.NewObserverClient(serve(t, o))
	for field, ff := range map[string]*flowpb.FlowFilter{
		"destination_port": {DestinationPort: []string{"http"}},
		"source_ip":        {SourceIp: []string{"10.0.0.300"}},
		"source_label":     {SourceLabel: []string{"app in (a"}},
		"protocol":         {Protocol: []string{"quic"}},
		"node_name":        {NodeName: []string{"a/b/c"}},
		"http_status_code": {HttpStatusCode: []string{"99"}},
		"dns_query":        {DnsQuery: []string{"("}},
	} {
		_, err := collect(t, c, &observerpb.GetFlowsRequest{Blacklist: []*flowpb.FlowFilter{ff}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v, want InvalidArgument naming the field", field, err)
		}
	}
}

func TestGetFlowsFollow(t *testing.T) {
	o := newTestObserver(t, 15, nil)
	fill(o, 3)
	c := observerpb.NewObserverClient(serve(t, o))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Number: 1, Follow: true,
		Whitelist: []*flowpb.FlowFilter{{DestinationPort: []string{"80"}}}})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() uint32 {
		for {
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if r.GetResponseTypes() != nil { // not a watermark
				return r.GetFlow().GetL4().GetTCP().GetSourcePort() - 30000
			}
		}
	}
	if got := recv(); got != 0 {
		t.Fatalf("first followed flow %d, want the last existing match 0", got)
	}
	// New flows after the stream started: source ports 0..6, and those
	// with index 0, 3 and 6 go to port 80.
	fill(o, 7)
	if got := recv(); got != 0 {
		t.Fatalf("got %d, want 0", got)
	}
	if got := recv(); got != 3 {
		t.Fatalf("got %d, want 3", got)
	}
}

func TestServerStatusNodesNamespacesHealth(t *testing.T) {
	o := newTestObserver(t, 15, nil)
	fill(o, 20)
	conn := serve(t, o)
	c := observerpb.NewObserverClient(conn)
	ctx := context.Background()
	st, err := c.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.NumFlows != 15 || st.MaxFlows != 15 || st.SeenFlows != 20 || st.UptimeNs == 0 || st.Version == "" {
		t.Errorf("status %v", st)
	}
	nodes, err := c.GetNodes(ctx, &observerpb.GetNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Nodes) != 1 || nodes.Nodes[0].Name != "node-1" || nodes.Nodes[0].Address != "192.168.200.11:4244" || nodes.Nodes[0].SeenFlows != 20 {
		t.Errorf("nodes %v", nodes.Nodes)
	}
	ns, err := c.GetNamespaces(ctx, &observerpb.GetNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.Namespaces) != 2 || ns.Namespaces[0].Namespace != "x" || ns.Namespaces[1].Namespace != "y" {
		t.Errorf("namespaces %v", ns.Namespaces)
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: HealthService})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health %v, %v", h, err)
	}
	if _, err := c.GetAgentEvents(ctx, &observerpb.GetAgentEventsRequest{}); err != nil {
		// Streaming errors surface on Recv; the call itself must not fail.
		t.Errorf("GetAgentEvents: %v", err)
	}
}

func TestPeerNotify(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	node := func(name, addr string) string {
		return "apiVersion: v1\nkind: Node\nmetadata: {name: " + name + ", annotations: {loupe.dev/observer-address: \"" + addr + "\"}}\n"
	}
	write("node._.n1.yaml", node("n1", "10.1.0.1:4244"))
	write("node._.n2.yaml", node("n2", "10.1.0.2:4244"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := metadata.NewFolder(ctx, dir, nil, metadata.WithRescanInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	o := newTestObserver(t, 15, src)
	pc := peerpb.NewPeerClient(serve(t, o))
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	s, err := pc.Notify(sctx, &peerpb.NotifyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	next := func() string {
		cn, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return cn.Type.String() + " " + cn.Name + " " + cn.Address
	}
	for _, want := range []string{"PEER_ADDED n1 10.1.0.1:4244", "PEER_ADDED n2 10.1.0.2:4244"} {
		if got := next(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	write("node._.n2.yaml", node("n2", "10.1.0.22:4244"))
	write("node._.n3.yaml", node("n3", "10.1.0.3:4244"))
	if err := os.Remove(filepath.Join(dir, "node._.n1.yaml")); err != nil {
		t.Fatal(err)
	}
	// The folder may publish these as one or several snapshots; collect
	// until the final state is reached.
	want := map[string]bool{"PEER_UPDATED n2 10.1.0.22:4244": true, "PEER_ADDED n3 10.1.0.3:4244": true, "PEER_DELETED n1 10.1.0.1:4244": true}
	for len(want) > 0 {
		got := next()
		if !want[got] {
			t.Fatalf("unexpected %q (waiting for %v)", got, want)
		}
		delete(want, got)
	}
}

// responses returns every GetFlows response of a non-follow request.
func responses(t *testing.T, c observerpb.ObserverClient, req *observerpb.GetFlowsRequest) []*observerpb.GetFlowsResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.GetFlows(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var out []*observerpb.GetFlowsResponse
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
}

// Events the BPF ring buffer lost reach clients as Hubble's LostEvent, in
// stream order, whatever the filters, without counting towards number.
func TestGetFlowsDatapathLostEvents(t *testing.T) {
	o := newTestObserver(t, 15, nil)
	fill(o, 3)
	o.AddLostEvents(7)
	o.AddLostEvents(0) // nothing lost: no event
	c := observerpb.NewObserverClient(serve(t, o))

	kinds := func(rs []*observerpb.GetFlowsResponse) string {
		var b strings.Builder
		for _, r := range rs {
			switch {
			case r.GetFlow() != nil:
				b.WriteString("F")
			case r.GetLostEvents() != nil:
				le := r.GetLostEvents()
				if le.GetSource() != flowpb.LostEventSource_PERF_EVENT_RING_BUFFER || le.GetNumEventsLost() != 7 ||
					r.GetNodeName() != "node-1" || r.GetTime() == nil {
					t.Errorf("lost event response %v", r)
				}
				b.WriteString("L")
			}
		}
		return b.String()
	}
	noFlows := []*flowpb.FlowFilter{{SourcePod: []string{"y/"}}}
	for _, tc := range []struct {
		name string
		req  *observerpb.GetFlowsRequest
		want string
	}{
		{"all", &observerpb.GetFlowsRequest{}, "FFFL"},
		{"last 2 flows, then the loss after them", &observerpb.GetFlowsRequest{Number: 2}, "FFL"},
		{"a filter no flow matches", &observerpb.GetFlowsRequest{Whitelist: noFlows}, "L"},
		{"since in the future", &observerpb.GetFlowsRequest{Since: timestamppb.New(time.Now().Add(time.Hour))}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := kinds(responses(t, c, tc.req)); got != tc.want {
				t.Errorf("responses %q, want %q", got, tc.want)
			}
		})
	}
	if got := counterValue(o.metrics.lost); got != 7 {
		t.Errorf("loupe_events_lost_total = %v, want 7", got)
	}
	st, err := c.ServerStatus(context.Background(), &observerpb.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetSeenFlows() != 3 {
		t.Errorf("seen flows %d, want 3 (a loss is not a flow)", st.GetSeenFlows())
	}
}

// Drop events held back by the datapath's rate limit reach clients as a
// LostEvent of their own source, after the ring's losses, and are not
// counted as ring losses.
func TestGetFlowsRateLimitedDropEvents(t *testing.T) {
	o := newTestObserver(t, 15, nil)
	fill(o, 2)
	o.AddLostEvents(7)
	o.AddRateLimitedDropEvents(4998)
	o.AddRateLimitedDropEvents(0) // nothing held back: no event
	c := observerpb.NewObserverClient(serve(t, o))
	var got []string
	for _, r := range responses(t, c, &observerpb.GetFlowsRequest{}) {
		switch {
		case r.GetFlow() != nil:
			got = append(got, "flow")
		case r.GetLostEvents() != nil:
			le := r.GetLostEvents()
			if r.GetNodeName() != "node-1" || r.GetTime() == nil || le.GetCpu() != nil || le.GetFirst() != nil {
				t.Errorf("lost event response %v", r)
			}
			got = append(got, fmt.Sprintf("%s %d", le.GetSource(), le.GetNumEventsLost()))
		}
	}
	want := []string{"flow", "flow", "PERF_EVENT_RING_BUFFER 7", "UNKNOWN_LOST_EVENT_SOURCE 4998"}
	if !slices.Equal(got, want) {
		t.Errorf("responses %q, want %q", got, want)
	}
	if got := counterValue(o.metrics.lost); got != 7 {
		t.Errorf("loupe_events_lost_total = %v, want 7 (the ring's losses only)", got)
	}
}

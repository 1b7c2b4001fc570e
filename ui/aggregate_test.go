package ui

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/loupe-project/loupe/contract"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func pod(ns, name, workload string, labels ...string) *flowpb.Endpoint {
	ep := &flowpb.Endpoint{Namespace: ns, PodName: name, Labels: labels, Identity: 1000}
	if workload != "" {
		ep.Workloads = []*flowpb.Workload{{Name: workload, Kind: "Deployment"}}
	}
	return ep
}

func tcpFlow(src, dst *flowpb.Endpoint, sport, dport uint32, v flowpb.Verdict, i int) *flowpb.Flow {
	return &flowpb.Flow{
		Time: timestamppb.New(t0.Add(time.Duration(i) * time.Millisecond)), Verdict: v, NodeName: "node-1",
		Source: src, Destination: dst,
		IP:        &flowpb.IP{Source: fmt.Sprintf("10.0.0.%d", 1+i%200), Destination: "10.0.1.1"},
		L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport}}},
		EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeTrace}, IsReply: wrapperspb.Bool(false),
	}
}

func reply(f *flowpb.Flow) *flowpb.Flow {
	tcp := f.GetL4().GetTCP()
	return &flowpb.Flow{Time: f.Time, Verdict: f.Verdict, Source: f.Destination, Destination: f.Source,
		IP:      &flowpb.IP{Source: f.IP.Destination, Destination: f.IP.Source},
		L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: tcp.DestinationPort, DestinationPort: tcp.SourcePort}}},
		IsReply: wrapperspb.Bool(true)}
}

func edgeByID(t *testing.T, d Delta, id string) EdgeView {
	t.Helper()
	i := slices.IndexFunc(d.Edges, func(e EdgeView) bool { return e.ID == id })
	if i < 0 {
		ids := []string{}
		for _, e := range d.Edges {
			ids = append(ids, e.ID)
		}
		t.Fatalf("no edge %q in %v", id, ids)
	}
	return d.Edges[i]
}

func nodeIDs(d Delta) []string {
	var ids []string
	for _, n := range d.Nodes {
		ids = append(ids, n.ID)
	}
	slices.Sort(ids)
	return ids
}

func TestAggregatorRequestAndReplyMakeOneEdge(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	fe := pod("demo", "frontend-7d9f", "frontend", "k8s:app=frontend")
	api := pod("demo", "api-5c4b", "api", "k8s:app=api")
	req := tcpFlow(fe, api, 40000, 8080, flowpb.Verdict_FORWARDED, 0)
	a.Add(req)
	a.Add(reply(req))
	d := a.Flush()
	if got, want := nodeIDs(d), []string{"demo/api", "demo/frontend"}; !slices.Equal(got, want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
	if len(d.Edges) != 1 {
		t.Fatalf("%d edges, want 1: %+v", len(d.Edges), d.Edges)
	}
	e := edgeByID(t, d, "demo/frontend|demo/api|8080/TCP")
	if e.Flows != 2 || e.Verdicts["FORWARDED"] != 2 || e.Source != "demo/frontend" || e.Destination != "demo/api" {
		t.Fatalf("edge %+v", e)
	}
	i := slices.IndexFunc(d.Nodes, func(n NodeView) bool { return n.ID == "demo/api" })
	if n := d.Nodes[i]; !slices.Equal(n.Ports, []string{"8080/TCP"}) || !slices.Equal(n.Pods, []string{"api-5c4b"}) ||
		!slices.Equal(n.Labels, []string{"k8s:app=api"}) || n.Kind != "Deployment" || n.Name != "api" || n.Namespace != "demo" {
		t.Fatalf("api node %+v", n)
	}
}

func TestAggregatorDeltasCarryOnlyChanges(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	fe, api, db := pod("demo", "fe", "frontend"), pod("demo", "api", "api"), pod("demo", "db", "")
	a.Add(tcpFlow(fe, api, 1, 80, flowpb.Verdict_FORWARDED, 0))
	a.Add(tcpFlow(api, db, 1, 5432, flowpb.Verdict_FORWARDED, 1))
	if d := a.Flush(); len(d.Nodes) != 3 || len(d.Edges) != 2 {
		t.Fatalf("first delta: %d nodes, %d edges", len(d.Nodes), len(d.Edges))
	}
	if d := a.Flush(); !d.Empty() {
		t.Fatalf("second delta not empty: %+v", d)
	}
	a.Add(tcpFlow(api, db, 2, 5432, flowpb.Verdict_FORWARDED, 2))
	d := a.Flush()
	if got, want := nodeIDs(d), []string{"demo/api", "demo/db"}; !slices.Equal(got, want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
	if e := edgeByID(t, d, "demo/api|demo/db|5432/TCP"); e.Flows != 2 || len(d.Edges) != 1 {
		t.Fatalf("delta edges %+v", d.Edges)
	}
	// A snapshot holds everything and leaves nothing pending.
	a.Add(tcpFlow(fe, api, 3, 80, flowpb.Verdict_FORWARDED, 3))
	if s := a.Snapshot(); len(s.Nodes) != 3 || len(s.Edges) != 2 {
		t.Fatalf("snapshot: %d nodes, %d edges", len(s.Nodes), len(s.Edges))
	}
	if d := a.Flush(); len(d.Edges) != 1 {
		t.Fatalf("snapshot consumed pending changes: %+v", d)
	}
}

func TestAggregatorDropsReasonsAndPolicies(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	fe, db := pod("demo", "fe", "frontend"), pod("demo", "db", "db")
	for i := range 8 {
		f := tcpFlow(fe, db, uint32(40000+i), 5432, flowpb.Verdict_DROPPED, i)
		f.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
		f.DropReason = 133
		f.EventType = &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 133}
		f.IngressDeniedBy = []*flowpb.Policy{{Name: "db-allow-api", Namespace: "demo", Kind: "NetworkPolicy"}}
		f.Summary = fmt.Sprintf("drop %d", i)
		a.Add(f)
	}
	ok := tcpFlow(fe, db, 1, 5432, flowpb.Verdict_FORWARDED, 9)
	ok.EgressAllowedBy = []*flowpb.Policy{{Name: "fe-egress", Namespace: "demo"}}
	a.Add(ok)
	e := edgeByID(t, a.Flush(), "demo/frontend|demo/db|5432/TCP")
	if e.Verdicts["DROPPED"] != 8 || e.Verdicts["FORWARDED"] != 1 || e.DropReasons["POLICY_DENIED"] != 8 {
		t.Fatalf("verdicts %v, reasons %v", e.Verdicts, e.DropReasons)
	}
	want := []PolicyRef{
		{Name: "fe-egress", Namespace: "demo", Direction: "egress", Effect: "allow", Flows: 1},
		{Name: "db-allow-api", Namespace: "demo", Kind: "NetworkPolicy", Direction: "ingress", Effect: "deny", Flows: 8},
	}
	if !slices.Equal(e.Policies, want) {
		t.Fatalf("policies %+v, want %+v", e.Policies, want)
	}
	if len(e.RecentDrops) != maxRecentDrops || e.RecentDrops[maxRecentDrops-1].Summary != "drop 7" ||
		e.RecentDrops[0].Summary != "drop 3" || !slices.Equal(e.RecentDrops[0].Policies, []string{"demo/db-allow-api"}) {
		t.Fatalf("recent drops %+v", e.RecentDrops)
	}
	// The datapath's own drops (no policy) keep their reason.
	spoof := tcpFlow(&flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}, db, 1, 5432, flowpb.Verdict_DROPPED, 10)
	spoof.DropReasonDesc = flowpb.DropReason_INVALID_SOURCE_IP
	a.Add(spoof)
	e = edgeByID(t, a.Flush(), "world|demo/db|5432/TCP")
	if e.DropReasons["INVALID_SOURCE_IP"] != 1 || len(e.Policies) != 0 {
		t.Fatalf("spoofed drop edge %+v", e)
	}
}

func TestEndpointKey(t *testing.T) {
	for _, tc := range []struct {
		ep       *flowpb.Endpoint
		id, kind string
	}{
		{nil, "world", KindWorld},
		{&flowpb.Endpoint{Identity: 2}, "world", KindWorld},
		{&flowpb.Endpoint{Labels: []string{"reserved:world-ipv4"}}, "world", KindWorld},
		{&flowpb.Endpoint{Identity: 1, Labels: []string{"reserved:host"}}, "host", KindHost},
		{&flowpb.Endpoint{Identity: 6}, "remote-node", KindRemoteNode},
		{&flowpb.Endpoint{Namespace: "a", PodName: "p-1"}, "a/p-1", "Pod"},
		{&flowpb.Endpoint{Namespace: "a", PodName: "p-1", Workloads: []*flowpb.Workload{{Name: "p", Kind: "StatefulSet"}}}, "a/p", "StatefulSet"},
		{&flowpb.Endpoint{Namespace: "a", Identity: 4000}, "a/unknown", KindUnknown},
	} {
		k, kind := endpointKey(tc.ep)
		if k.id() != tc.id || kind != tc.kind {
			t.Errorf("endpointKey(%v) = %q %q, want %q %q", tc.ep, k.id(), kind, tc.id, tc.kind)
		}
	}
}

func TestAggregatorMemoryIsBounded(t *testing.T) {
	a := NewAggregator(AggregatorConfig{MaxNodes: 50, MaxEdges: 100})
	removedEdges, removedNodes := map[string]bool{}, map[string]bool{}
	live := map[string]bool{}
	for i := range 20000 {
		src := pod("ns", fmt.Sprintf("src-%d", i%97), "", fmt.Sprintf("k8s:l%d=x", i))
		src.PodName = fmt.Sprintf("src-%d", i%97)
		dst := pod("ns", fmt.Sprintf("dst-%d", i), "dst") // one workload, ever more pods
		a.Add(tcpFlow(src, dst, 1, uint32(i%1000), flowpb.Verdict_FORWARDED, i))
		if i%1000 == 999 {
			d := a.Flush()
			for _, id := range d.RemovedEdges {
				removedEdges[id] = true
				delete(live, id)
			}
			for _, id := range d.RemovedNodes {
				removedNodes[id] = true
			}
			for _, e := range d.Edges {
				live[e.ID] = true
			}
		}
		if n, e := a.Len(); n > 50 || e > 100 {
			t.Fatalf("after %d flows: %d nodes, %d edges", i+1, n, e)
		}
	}
	if len(removedEdges) == 0 || len(removedNodes) == 0 {
		t.Fatalf("no evictions reported: %d edges, %d nodes", len(removedEdges), len(removedNodes))
	}
	// What the browser keeps (added minus removed) is what the map holds.
	s := a.Snapshot()
	if len(live) != len(s.Edges) {
		t.Fatalf("browser would hold %d edges, map has %d", len(live), len(s.Edges))
	}
	for _, e := range s.Edges {
		if !live[e.ID] {
			t.Fatalf("edge %s in the map but never sent", e.ID)
		}
	}
	i := slices.IndexFunc(s.Nodes, func(n NodeView) bool { return n.ID == "ns/dst" })
	if i < 0 || len(s.Nodes[i].Pods) != maxPods || len(s.Nodes[i].Ports) != maxPorts {
		t.Fatalf("dst node not bounded: %+v", s.Nodes[i])
	}
}

// A connection through a Service: the datapath translated the ClusterIP,
// so the flows carry the backend pod and the Service (destination_service
// on the request, source_service on the reply, as observer's decoder sets
// them and e2e's TestPrivilegedServiceFlowsStockHubble sees them). The edge
// goes to the backend's workload and names the Service.
func TestAggregatorEdgeNamesItsService(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	fe := pod("demo", "frontend-7d9f", "frontend")
	api := pod("demo", "api-5c4b", "api")
	req := tcpFlow(fe, api, 40000, 8080, flowpb.Verdict_FORWARDED, 0)
	req.DestinationService = &flowpb.Service{Name: "api", Namespace: "demo"}
	rep := reply(req)
	rep.DestinationService, rep.SourceService = nil, &flowpb.Service{Name: "api", Namespace: "demo"}
	direct := tcpFlow(fe, api, 40001, 8080, flowpb.Verdict_FORWARDED, 1)
	a.Add(req)
	a.Add(rep)
	a.Add(direct)
	d := a.Flush()
	e := edgeByID(t, d, "demo/frontend|demo/api|8080/TCP")
	if e.Flows != 3 || !slices.Equal(e.Services, []string{"demo/api"}) {
		t.Fatalf("edge %+v, want 3 flows through Service demo/api", e)
	}
	for i := range 20 {
		f := tcpFlow(fe, api, 41000+uint32(i), 8080, flowpb.Verdict_FORWARDED, 2+i)
		f.DestinationService = &flowpb.Service{Name: fmt.Sprintf("s%02d", i), Namespace: "demo"}
		a.Add(f)
	}
	if e := edgeByID(t, a.Flush(), "demo/frontend|demo/api|8080/TCP"); len(e.Services) != maxServices {
		t.Fatalf("%d services kept, want the bound %d", len(e.Services), maxServices)
	}
}

// TestSnapshotJSONFollowsChanges: the snapshot built from the encoded views
// kept between snapshots is the JSON of Snapshot, however the map changed
// since: new flows on some edges, flushed or still pending, new nodes and
// edges, evictions.
func TestSnapshotJSONFollowsChanges(t *testing.T) {
	a := NewAggregator(AggregatorConfig{MaxNodes: 150, MaxEdges: 600})
	flows := scaleFlows(200, 1200, t0)
	check := func(step string) {
		t.Helper()
		want, err := json.Marshal(a.Snapshot())
		if err != nil {
			t.Fatal(err)
		}
		if got := a.SnapshotJSON(); !bytes.Equal(got, want) {
			t.Fatalf("%s: SnapshotJSON differs from Snapshot's JSON (%d and %d bytes)", step, len(got), len(want))
		}
	}
	for _, f := range flows[:300] {
		a.Add(f)
	}
	check("first flows, pending")
	a.Flush()
	check("flushed")
	for i, f := range flows[:300] {
		if i%7 == 0 {
			f.Verdict = flowpb.Verdict_DROPPED // a change to an edge seen before
			a.Add(f)
		}
	}
	check("changed edges, pending")
	a.Flush()
	check("changed edges, flushed")
	for _, f := range flows[300:] {
		a.Add(f) // past both limits: evictions
	}
	check("evictions, pending")
	a.Flush()
	check("evictions, flushed")
	if n, e := a.Len(); n > 150 || e > 600 {
		t.Fatalf("%d nodes, %d edges: the limits did not hold", n, e)
	}
}

package relay_test

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc"

	pb "github.com/loupe-project/loupe/api/resources/v1"
	"github.com/loupe-project/loupe/relay/relaytest"
	"github.com/loupe-project/loupe/resources"
)

// resourceAgent is a fake agent serving the agent's real Resources service
// over rows like the agent's podRow builds (TestPrivilegedLabTop checks
// the real rows end to end).
func resourceAgent(t *testing.T, name string, pods ...string) *relaytest.Agent {
	t.Helper()
	var rows []*pb.PodResources
	for _, p := range pods {
		rows = append(rows, &pb.PodResources{Namespace: "x", Pod: p, Node: name, CpuNs: 1e9,
			Runqueue: &pb.Histogram{Buckets: make([]uint64, 40)}, BlockIo: &pb.Histogram{Buckets: make([]uint64, 40)}})
	}
	rows = append(rows, &pb.PodResources{Node: name}) // the node's own row
	svc := resources.NewService(func(context.Context) ([]*pb.PodResources, error) { return rows, nil })
	a, err := relaytest.Start(relaytest.Options{Name: name, Register: func(r grpc.ServiceRegistrar) { svc.Register(r) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	return a
}

// The relay returns every agent's pods once, applies the request's
// filters, and names the nodes it could not ask.
func TestResourcesMergedAcrossAgents(t *testing.T) {
	a1 := resourceAgent(t, "node-1", "a", "b")
	a2 := resourceAgent(t, "node-2", "c")
	old, err := relaytest.Start(relaytest.Options{Name: "node-3"}) // an agent without the service
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(old.Stop)
	r := startRelay(t, testConfig(), nil, addrs([]*relaytest.Agent{a1, a2, old}))
	waitConnected(t, r.srv, 3)
	client := pb.NewResourcesClient(r.conn)

	got, err := client.GetResources(context.Background(), &pb.GetResourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got.GetPods() {
		names = append(names, p.GetNode()+"/"+p.GetPod())
	}
	slices.Sort(names)
	if want := []string{"node-1/", "node-1/a", "node-1/b", "node-2/", "node-2/c"}; !slices.Equal(names, want) {
		t.Errorf("pods %v, want %v", names, want)
	}
	if un := got.GetUnavailableNodes(); !slices.Equal(un, []string{"node-3"}) {
		t.Errorf("unavailable nodes %v, want [node-3]", un)
	}

	got, err = client.GetResources(context.Background(), &pb.GetResourcesRequest{Pod: []string{"x/c", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	names = names[:0]
	for _, p := range got.GetPods() {
		names = append(names, p.GetNode()+"/"+p.GetPod())
	}
	slices.Sort(names)
	if want := []string{"node-1/b", "node-2/c"}; !slices.Equal(names, want) {
		t.Errorf("filtered pods %v, want %v", names, want)
	}
}

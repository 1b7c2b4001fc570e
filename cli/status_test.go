package cli

import (
	"encoding/json"
	"strings"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
)

func clusterFake() *fakeObserver {
	return &fakeObserver{
		status: &observerpb.ServerStatusResponse{
			NumFlows: 12345, MaxFlows: 65535, SeenFlows: 1234567, UptimeNs: 3723e9, FlowsRate: 12.5,
			Version:             "loupe-relay 0.1.0",
			NumConnectedNodes:   wrapperspb.UInt32(2),
			NumUnavailableNodes: wrapperspb.UInt32(1),
			UnavailableNodes:    []string{"node-c"},
		},
		nodes: []*observerpb.Node{
			{Name: "node-b", State: relaypb.NodeState_NODE_CONNECTED, UptimeNs: 60e9, SeenFlows: 600, NumFlows: 100, MaxFlows: 4095,
				Address: "10.0.0.2:4244", Version: "0.1.0", Tls: &observerpb.TLS{Enabled: true}},
			{Name: "node-a", State: relaypb.NodeState_NODE_CONNECTED, UptimeNs: 120e9, SeenFlows: 240, NumFlows: 4095, MaxFlows: 4095,
				Address: "10.0.0.1:4244", Version: "0.1.0"},
			{Name: "node-c", State: relaypb.NodeState_NODE_UNAVAILABLE, Address: "10.0.0.3:4244"},
		},
		namespaces: []*observerpb.Namespace{{Namespace: "admin"}, {Namespace: "shop", Cluster: "kind"}},
	}
}

func TestStatus(t *testing.T) {
	addr := startFake(t, clusterFake())
	out, _, err := run(t, NewStatusCommand(), "--server", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Server:   " + addr + "  healthy (SERVING)",
		"Version:  loupe-relay 0.1.0",
		"Uptime:   1h2m3s",
		"Flows:    12,345 of 65,535 buffered (18.8%), 1,234,567 seen, 12.50/s",
		"Nodes:    2 of 3 connected; UNAVAILABLE: node-c",
		"NAME     STATUS        AGE    FLOWS/S   CURRENT/MAX-FLOWS     VERSION   ADDRESS         TLS",
		"node-a   Connected     2m0s   2.00      4095/4095 (100.00%)   0.1.0     10.0.0.1:4244   N/A",
		"node-b   Connected     1m0s   10.00     100/4095 (  2.44%)    0.1.0     10.0.0.2:4244   Enabled",
		"node-c   Unavailable   N/A    N/A       N/A                   N/A       10.0.0.3:4244   N/A",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("status lacks line %q:\n%s", want, out)
		}
	}

	out, _, err = run(t, NewStatusCommand(), "--server", addr, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Server  string `json:"server"`
		Healthy bool   `json:"healthy"`
		Health  string `json:"health"`
		Status  struct {
			NumFlows  string `json:"num_flows"`
			MaxFlows  string `json:"max_flows"`
			Connected int    `json:"num_connected_nodes"`
		} `json:"status"`
		Nodes []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if !rep.Healthy || rep.Health != "SERVING" || rep.Server != addr || rep.Status.NumFlows != "12345" ||
		rep.Status.MaxFlows != "65535" || rep.Status.Connected != 2 || len(rep.Nodes) != 3 ||
		rep.Nodes[0].Name != "node-a" || rep.Nodes[2].State != "NODE_UNAVAILABLE" {
		t.Errorf("json status: %+v\n%s", rep, out)
	}
}

func TestStatusNotServing(t *testing.T) {
	addr := startFakeHealth(t, clusterFake(), healthpb.HealthCheckResponse_NOT_SERVING)
	out, _, err := run(t, NewStatusCommand(), "--server", addr)
	if err == nil || !strings.Contains(err.Error(), "is not serving") {
		t.Errorf("not serving: err %v", err)
	}
	if !strings.Contains(out, "NOT HEALTHY (NOT_SERVING)") {
		t.Errorf("output does not say so:\n%s", out)
	}
}

func TestListNodes(t *testing.T) {
	addr := startFake(t, clusterFake())
	out, _, err := run(t, NewListCommand(), "nodes", "--server", addr)
	if err != nil {
		t.Fatal(err)
	}
	want := `NAME     STATUS        AGE    FLOWS/S   CURRENT/MAX-FLOWS
node-a   Connected     2m0s   2.00      4095/4095 (100.00%)
node-b   Connected     1m0s   10.00     100/4095 (  2.44%)
node-c   Unavailable   N/A    N/A       N/A
`
	if out != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	out, _, err = run(t, NewListCommand(), "nodes", "--server", addr, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(out), &nodes); err != nil || len(nodes) != 3 || nodes[0]["name"] != "node-a" ||
		nodes[1]["uptime_ns"] != "60000000000" || nodes[2]["state"] != "NODE_UNAVAILABLE" {
		t.Errorf("json nodes (%v):\n%s", err, out)
	}
	if _, _, err := run(t, NewListCommand(), "nodes", "--server", addr, "-o", "yaml"); err == nil {
		t.Error("-o yaml accepted")
	}
}

func TestListNamespaces(t *testing.T) {
	addr := startFake(t, clusterFake())
	out, _, err := run(t, NewListCommand(), "namespaces", "--server", addr)
	if err != nil {
		t.Fatal(err)
	}
	if want := "NAMESPACE\nadmin\nshop\n"; out != want {
		t.Errorf("got %q, want %q", out, want)
	}
	out, _, err = run(t, NewListCommand(), "ns", "--server", addr, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var nss []map[string]string
	if err := json.Unmarshal([]byte(out), &nss); err != nil || len(nss) != 2 || nss[1]["namespace"] != "shop" || nss[1]["cluster"] != "kind" {
		t.Errorf("json namespaces (%v):\n%s", err, out)
	}
}

func TestVersion(t *testing.T) {
	out, _, err := run(t, NewVersionCommand())
	if err != nil || !strings.HasPrefix(out, "loupe ") {
		t.Errorf("version: %q %v", out, err)
	}
}

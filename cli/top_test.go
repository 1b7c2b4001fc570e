package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	pb "github.com/loupe-project/loupe/api/resources/v1"
	"github.com/loupe-project/loupe/resources"
)

// startResources serves the real Resources service over a source whose
// counters grow by one step per call (the agent's rows come from the
// kernel; TestPrivilegedLabTop drives that path end to end).
func startResources(t *testing.T) string {
	t.Helper()
	var calls atomic.Uint64
	src := func(context.Context) ([]*pb.PodResources, error) {
		n := calls.Add(1)
		runq := make([]uint64, 40)
		runq[20] = 100 * n // ~1 ms waits, 100 more per call
		io := make([]uint64, 40)
		io[22] = 10 * n
		return []*pb.PodResources{
			{Namespace: "x", Pod: "a", Node: "n1", NetnsInode: 1, CpuNs: n * 5e8,
				Runqueue: &pb.Histogram{Buckets: runq, Count: 100 * n}, BlockIo: &pb.Histogram{Buckets: io, Count: 10 * n},
				IoBytes: n << 20, PageFaults: 3 * n},
			{Namespace: "y", Pod: "b", Node: "n2", NetnsInode: 2, Runqueue: &pb.Histogram{}, BlockIo: &pb.Histogram{}, OomKills: 1},
			{Node: "n1", NetnsInode: 3, CpuNs: n * 1e9, Runqueue: &pb.Histogram{}, BlockIo: &pb.Histogram{}},
		}, nil
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	resources.NewService(src).Register(gs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func runTop(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewTopCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestTopOnceJSON(t *testing.T) {
	addr := startResources(t)
	out, err := runTop(t, "--server", addr, "--once", "--interval", "20ms", "-o", "json", "--sort", "cpu")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3 (two pods and a node):\n%s", len(lines), out)
	}
	var first resources.Sample
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	// Sorted by CPU: the node's 1 s first, then x/a's 0.5 s.
	if first.Pod != "" || first.CPUSeconds != 1 {
		t.Errorf("first line %s", lines[0])
	}
	var a resources.Sample
	_ = json.Unmarshal([]byte(lines[1]), &a)
	if a.Pod != "a" || a.CPUSeconds != 0.5 || a.RunqP99Us < 1000 || a.RunqP99Us > 2100 || a.IOOps != 20 || a.PageFaults != 6 || a.IOP99Us == 0 {
		t.Errorf("x/a: %s", lines[1])
	}
}

func TestTopFiltersAndTable(t *testing.T) {
	addr := startResources(t)
	out, err := runTop(t, "--server", addr, "--once", "--interval", "20ms", "-n", "y")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.HasPrefix(out, "NAMESPACE") || !strings.Contains(out, "y          b") || strings.Contains(out, "(node)") || strings.Contains(out, " a ") {
		t.Errorf("table for -n y:\n%s", out)
	}
	out, err = runTop(t, "--server", addr, "--once", "--interval", "20ms")
	if err != nil || !strings.Contains(out, "(node)") || !strings.Contains(out, "MiB") || !strings.Contains(out, "ms") {
		t.Errorf("table: %v\n%s", err, out)
	}
}

func TestTopRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--sort", "memory"}, {"-o", "yaml"}, {"--interval", "0s"},
	} {
		if _, err := runTop(t, append([]string{"--server", "127.0.0.1:1", "--once"}, args...)...); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// relayWithDownNode answers like loupe-relay with one agent down
// (relay's TestResourcesMergedAcrossAgents produces the same field).
type relayWithDownNode struct {
	pb.UnimplementedResourcesServer
}

func (relayWithDownNode) GetResources(context.Context, *pb.GetResourcesRequest) (*pb.GetResourcesResponse, error) {
	return &pb.GetResourcesResponse{
		Pods:             []*pb.PodResources{{Namespace: "x", Pod: "a", Node: "n1", Runqueue: &pb.Histogram{}, BlockIo: &pb.Histogram{}}},
		UnavailableNodes: []string{"n2"},
	}, nil
}

func TestTopNamesUnavailableNodes(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterResourcesServer(gs, relayWithDownNode{})
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	out, err := runTop(t, "--server", lis.Addr().String(), "--once", "--interval", "20ms", "-o", "json")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.Count(out, "loupe top: no answer from node(s) n2: their pods are missing\n") != 1 || !strings.Contains(out, `"pod":"a"`) {
		t.Errorf("output:\n%s", out)
	}
}

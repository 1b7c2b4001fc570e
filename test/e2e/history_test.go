package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/lab"
)

const historyPods = `apiVersion: v1
kind: Namespace
metadata: {name: hist}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: hist, labels: {app: a}}
spec: {containers: [{name: c, ports: [{containerPort: 80, protocol: TCP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: hist, labels: {app: b}}
spec: {containers: [{name: c, ports: [{containerPort: 80, protocol: TCP}]}]}
`

// smallLab brings up a lab of its own (2 nodes, pods hist/a and hist/b on
// different nodes) with the given `lab up` flags, removed at cleanup.
func smallLab(t *testing.T, flags ...string) *cluster {
	t.Helper()
	base := needLab(t) // root, and the binaries
	dir, err := os.MkdirTemp("", stateRoot)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	c := &cluster{bin: base.bin, dir: dir, name: "h" + hex.EncodeToString(b), extraLog: map[string]string{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab logs:\n%s", c.logs())
		}
		if _, errs, code := c.lab("down", "--name", c.name); code != 0 {
			t.Errorf("lab down: %s", errs)
			return
		}
		os.RemoveAll(dir)
	})
	manifest := filepath.Join(dir, "pods.yaml")
	if err := os.WriteFile(manifest, []byte(historyPods), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustLab(t, append([]string{"up", "--name", c.name, "--nodes", "2", "-f", manifest}, flags...)...)
	if err := c.refresh(); err != nil {
		t.Fatal(err)
	}
	if c.pods["hist/a"].Node == c.pods["hist/b"].Node {
		t.Fatalf("pods on one node: %+v", c.status.Pods)
	}
	return c
}

// seenFlows sums the agents' seen_flows.
func (c *cluster) seenFlows(t *testing.T) uint64 {
	t.Helper()
	var n uint64
	for _, node := range c.status.Nodes {
		conn, err := grpc.NewClient(node.ObserverAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := observerpb.NewObserverClient(conn).ServerStatus(ctx, &observerpb.ServerStatusRequest{})
		cancel()
		conn.Close()
		if err != nil {
			t.Fatalf("%s: %v", node.Name, err)
		}
		n += st.GetSeenFlows()
	}
	return n
}

// settledSeen waits until no agent sees new flows for a second.
func (c *cluster) settledSeen(t *testing.T) uint64 {
	t.Helper()
	last := c.seenFlows(t)
	for range 30 {
		time.Sleep(time.Second)
		n := c.seenFlows(t)
		if n == last {
			return n
		}
		last = n
	}
	t.Fatal("the lab never went quiet")
	return 0
}

const datapathDisorder = time.Millisecond

// checkHistory checks `observe -o json` output: no lost events, every
// flow once, in time order.
func checkHistory(t *testing.T, res []*observerpb.GetFlowsResponse) []*flowpb.Flow {
	t.Helper()
	seen := map[string]bool{}
	var prev time.Time
	var flows []*flowpb.Flow
	for _, r := range res {
		if le := r.GetLostEvents(); le != nil {
			t.Fatalf("lost events: %v", le)
		}
		f := r.GetFlow()
		if f == nil {
			continue
		}
		if seen[f.GetUuid()] {
			t.Fatalf("flow %s twice: %s", f.GetUuid(), describe(f))
		}
		seen[f.GetUuid()] = true
		// In time order, up to the datapath's own: events of different
		// CPUs share one ring buffer in the order they were reserved, which
		// can differ from their timestamps by microseconds.
		if ft := f.GetTime().AsTime(); ft.Before(prev.Add(-datapathDisorder)) {
			t.Fatalf("flow at %v after one at %v", ft, prev)
		} else if ft.After(prev) {
			prev = ft
		}
		flows = append(flows, f)
	}
	return flows
}

// Done when of #20: with rings of 4095, after more traffic than both rings
// hold, `loupe observe --since <start>` through the relay returns every
// flow since then, each once, in time order, from the start of the traffic.
func TestPrivilegedHistorySinceStart(t *testing.T) {
	c := smallLab(t, "--flow-buffer-size", "4095")
	for _, n := range c.status.Nodes {
		if n.FlowBufferSize != 4095 {
			t.Fatalf("%s: flowBufferSize %d, want 4095", n.Name, n.FlowBufferSize)
		}
	}
	a, b := c.pods["hist/a"], c.pods["hist/b"]
	before := c.settledSeen(t)
	start := time.Now()
	first := c.dial(t, "TCP", a, b, 80)
	// Each connection is a dozen flows or so on the two nodes: go on until
	// both rings have been overwritten three times.
	for c.seenFlows(t)-before < 3*2*4095 {
		for range 100 {
			c.dial(t, "TCP", a, b, 80)
		}
	}
	want := c.settledSeen(t) - before
	out := c.mustLoupe(t, "observe", "--server", c.status.RelayAddress, "-o", "json", "--since", start.Format(time.RFC3339Nano))
	flows := checkHistory(t, parseFlows(t, out))
	if uint64(len(flows)) != want {
		t.Fatalf("%d flows since the start, the agents saw %d", len(flows), want)
	}
	earliest := flows[0]
	if !first.of(earliest) || earliest.GetTime().AsTime().Sub(start) > time.Second {
		t.Fatalf("earliest flow %s at %v, traffic started at %v with %v", describe(earliest), earliest.GetTime().AsTime(), start, first)
	}
	// And a window inside the traffic: exactly its flows.
	mid := flows[len(flows)/3].GetTime().AsTime()
	end := flows[2*len(flows)/3].GetTime().AsTime()
	var inWindow int
	for _, f := range flows {
		if ft := f.GetTime().AsTime(); !ft.Before(mid) && !ft.After(end) {
			inWindow++
		}
	}
	out = c.mustLoupe(t, "observe", "--server", c.status.RelayAddress, "-o", "json",
		"--since", mid.Format(time.RFC3339Nano), "--until", end.Format(time.RFC3339Nano))
	if got := checkHistory(t, parseFlows(t, out)); len(got) != inWindow {
		t.Fatalf("window: %d flows, want %d", len(got), inWindow)
	}
}

// kill -9 of an agent under traffic: its history reopens and has every
// flow the agent served before it died except at most the last batch.
func TestPrivilegedHistoryKill9(t *testing.T) {
	c := smallLab(t, "--flow-buffer-size", "4095")
	a, b := c.pods["hist/a"], c.pods["hist/b"]
	node := a.Node
	n := c.nodes[node]
	c.settledSeen(t)
	start := time.Now()

	// A follower on the agent records what it served.
	conn, err := grpc.NewClient(n.ObserverAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true, Since: nil})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	served := map[string]time.Time{}
	var lastServed time.Time
	followDone := make(chan struct{})
	go func() {
		defer close(followDone)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			if f := r.GetFlow(); f != nil {
				mu.Lock()
				served[f.GetUuid()] = f.GetTime().AsTime()
				if ft := f.GetTime().AsTime(); ft.After(lastServed) {
					lastServed = ft
				}
				mu.Unlock()
			}
		}
	}()
	// Heavy traffic from several goroutines; the agent dies in its midst.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = probeOnce(c, a, b)
			}
		}()
	}
	time.Sleep(3 * time.Second)
	pid := c.agentPID(t, node)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-followDone
	close(stop)
	wg.Wait()
	awaitGone(t, pid)
	mu.Lock()
	if len(served) < 1000 {
		t.Fatalf("only %d flows served before the kill", len(served))
	}
	mu.Unlock()

	// `lab up` starts the agents that do not run.
	c.mustLab(t, "up", "--name", c.name)
	out := c.mustLoupe(t, "observe", "--server", n.ObserverAddress, "-o", "json",
		"--since", start.Format(time.RFC3339Nano), "--until", lastServed.Add(time.Second).Format(time.RFC3339Nano))
	stored := map[string]bool{}
	var lost uint64 // flows the history says it lost (the ring lapped the writer)
	for _, r := range parseFlows(t, out) {
		lost += r.GetLostEvents().GetNumEventsLost()
		if f := r.GetFlow(); f != nil {
			if stored[f.GetUuid()] {
				t.Fatalf("flow twice after restart: %s", describe(f))
			}
			stored[f.GetUuid()] = true
		}
	}
	var missing []time.Time
	for id, at := range served {
		if !stored[id] {
			missing = append(missing, at)
		}
	}
	t.Logf("served %d flows before kill -9, history has %d of them back, %d missing, %d recorded as lost",
		len(served), len(served)-len(missing), len(missing), lost)
	// The last batch: at most 4096 records, at most 200 ms of flows (plus
	// the writer's poll and the follower's lag) before the last one served.
	// Older ones may be missing only where the history says it lost them:
	// a writer the ring lapped records the gap as a LostEvent.
	old := 0
	for _, at := range missing {
		if lastServed.Sub(at) > time.Second {
			old++
		}
	}
	if uint64(old) > lost {
		t.Fatalf("%d flows from more than 1 s before the kill are missing, older than the last batch; the history recorded %d lost", old, lost)
	}
	if uint64(len(missing)) > 4096+lost {
		t.Fatalf("%d flows missing: more than a batch and the %d recorded lost", len(missing), lost)
	}
	log, _ := os.ReadFile(filepath.Join(c.dir, "nodes", node, "agent.log"))
	if strings.Contains(string(log), "history segment unreadable") {
		t.Fatalf("history was not reopened:\n%s", log)
	}
}

// probeOnce makes one TCP connection from a to b:80 and sends a line.
func probeOnce(c *cluster, a, b lab.PodStatus) error {
	return ns.WithNetNSPath(c.netnsPath(a), func(ns.NetNS) error {
		nc, err := net.DialTimeout("tcp4", net.JoinHostPort(b.IP, "80"), time.Second)
		if err != nil {
			return err
		}
		defer nc.Close()
		_, err = nc.Write([]byte("loupe-e2e\n"))
		return err
	})
}

package ui

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/relay/relaytest"
)

// scaleFlows builds one flow per edge of a synthetic cluster: workloads
// spread over namespaces of 100, each calling five others (some in other
// namespaces), every tenth connection denied by a policy.
func scaleFlows(workloads, edges int, now time.Time) []*flowpb.Flow {
	eps := make([]*flowpb.Endpoint, workloads)
	for i := range eps {
		ns := fmt.Sprintf("ns-%02d", i/100)
		name := fmt.Sprintf("svc-%04d", i)
		eps[i] = &flowpb.Endpoint{Namespace: ns, PodName: name + "-6d8f9c-x2k4q", Identity: uint32(10000 + i),
			Labels:    []string{"k8s:app=" + name, "k8s:io.kubernetes.pod.namespace=" + ns},
			Workloads: []*flowpb.Workload{{Name: name, Kind: "Deployment"}}}
	}
	flows := make([]*flowpb.Flow, 0, edges)
	for i := range edges {
		src := i % workloads
		dst := (src + 1 + (i/workloads)*13) % workloads
		f := tcpFlow(eps[src], eps[dst], uint32(30000+i%30000), 8080, flowpb.Verdict_FORWARDED, i)
		f.Time = timestampOf(now.Add(time.Duration(i) * time.Microsecond))
		f.NodeName = fmt.Sprintf("node-%d", i%3)
		f.Summary = "TCP Flags: SYN"
		if i%10 == 0 {
			f.Verdict = flowpb.Verdict_DROPPED
			f.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
			f.EventType = &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 133}
			f.IngressDeniedBy = []*flowpb.Policy{{Name: "deny-" + eps[dst].Workloads[0].Name, Namespace: eps[dst].Namespace}}
		}
		flows = append(flows, f)
	}
	return flows
}

// BenchmarkAggregate measures flows folded into the service map per second
// on one core, with a delta flushed every 10,000 flows as the server does
// every 250 ms at 40,000 flows/s.
func BenchmarkAggregate(b *testing.B) {
	flows := scaleFlows(2000, 10000, time.Now())
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	a := NewAggregator(AggregatorConfig{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.Add(flows[i%len(flows)])
		if i%10000 == 9999 {
			a.Flush()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkServerIngest is BenchmarkAggregate through the server, with one
// browser following a filter, as the relay's stream feeds it.
func BenchmarkServerIngest(b *testing.B) {
	flows := scaleFlows(2000, 10000, time.Now())
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	s, err := New(Config{Flows: RelayFlows(nil)})
	if err != nil {
		b.Fatal(err)
	}
	s.clients[&client{out: make(chan []byte, sendQueue), filter: Filter{Namespaces: []string{"ns-03"}}, feed: newBucket(DefaultFeedRate, 100)}] = struct{}{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Ingest(flows[i%len(flows)])
		if i%10000 == 9999 {
			s.flush(time.Now())
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// benchResult is what web/test/bench.mjs reports.
type benchResult struct {
	FirstRenderMs float64 `json:"firstRenderMs"`
	Nodes         int     `json:"nodes"`
	Edges         int     `json:"edges"`
	Pairs         int     `json:"pairs"`
	SceneMs       float64 `json:"sceneMs"`
	SettledMs     float64 `json:"layoutSettledMs"`
	Timing        map[string]float64
	Whole, Close  struct {
		Frame, Draw struct {
			N                   int
			Mean, P50, P95, Max float64
		}
		PairsDrawn int `json:"pairsDrawn"`
	}
}

// BenchmarkBrowserRender loads 2,000 workloads and 10,000 edges of synthetic
// flows into the UI (fake agents, the real relay and UI server) and
// measures, in headless chromium, the time from navigation to the first
// frame of the map and the frame time while panning (targets: 2 s, 33 ms).
func BenchmarkBrowserRender(b *testing.B) {
	web := needBrowser(b)
	const workloads, edges = 2000, 10000
	a, err := relaytest.Start(relaytest.Options{Name: "node-1", Capacity: 16383})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Stop)
	a.Add(scaleFlows(workloads, edges, time.Now().Add(-time.Minute))...)
	s, addr := startUI(b, startRelay(b, a))
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		n, e := s.agg.Len()
		s.mu.Unlock()
		if n == workloads && e == edges {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the UI server holds %d nodes and %d edges, want %d and %d", n, e, workloads, edges)
		}
		time.Sleep(50 * time.Millisecond) // polling the server's map for the condition
	}
	var res benchResult
	for i := 0; i < b.N; i++ {
		runNode(b, web, "bench.mjs", map[string]string{"LOUPE_UI_URL": "http://" + addr + "/", "LOUPE_UI_NODES": fmt.Sprint(workloads)}, &res)
	}
	if res.Nodes != workloads || res.Edges != edges {
		b.Fatalf("the page holds %d nodes and %d edges", res.Nodes, res.Edges)
	}
	b.Logf("page timings (ms since navigation): %v; scene draw %.0f ms; force layout settled at %.0f ms (measured by polling, upper bound)", res.Timing, res.SceneMs, res.SettledMs)
	b.ReportMetric(res.FirstRenderMs, "ms-first-render")
	b.ReportMetric(res.SettledMs, "ms-layout-settled")
	b.ReportMetric(res.Whole.Frame.P50, "ms/frame-p50-whole")
	b.ReportMetric(res.Whole.Frame.P95, "ms/frame-p95-whole")
	b.ReportMetric(res.Whole.Draw.P95, "ms/draw-p95-whole")
	b.ReportMetric(res.Close.Frame.P50, "ms/frame-p50-close")
	b.ReportMetric(res.Close.Frame.P95, "ms/frame-p95-close")
	b.ReportMetric(res.Close.Draw.P95, "ms/draw-p95-close")
	b.Logf("%d workloads, %d edges (%d drawn lines when whole): first render %.0f ms; panning whole map: frame p50 %.1f p95 %.1f max %.1f ms (draw p95 %.1f); close up: frame p50 %.1f p95 %.1f ms (draw p95 %.1f)",
		res.Nodes, res.Edges, res.Whole.PairsDrawn, res.FirstRenderMs, res.Whole.Frame.P50, res.Whole.Frame.P95, res.Whole.Frame.Max, res.Whole.Draw.P95,
		res.Close.Frame.P50, res.Close.Frame.P95, res.Close.Draw.P95)
}

// BenchmarkSnapshot measures what a browser's first message costs the
// server at 2,000 workloads and 10,000 edges: the map's views and their
// JSON (reported as MB).
func BenchmarkSnapshot(b *testing.B) {
	a := NewAggregator(AggregatorConfig{})
	for _, f := range scaleFlows(2000, 10000, time.Now()) {
		a.Add(f)
	}
	a.Flush()
	var size int
	for i := 0; i < b.N; i++ {
		snap := a.Snapshot()
		size = len(mustJSON(message{Type: "snapshot", Map: &snap}))
	}
	b.ReportMetric(float64(size)/1e6, "MB")
}

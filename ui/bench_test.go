package ui

import (
	"cmp"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"

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
	MapShownMs    float64 `json:"mapShownMs"` // the first frame after one that drew the map's lines
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
		L7Labels   int `json:"l7Labels"`
	}
}

// BenchmarkBrowserRender loads 2,000 workloads and 10,000 edges of synthetic
// flows into the UI (fake agents, the real relay and UI server) and
// measures, in headless chromium, the time from navigation to the first
// frame of the map and the frame time while panning (targets: 1 s, one
// 60 Hz frame at p95).
//
// With LOUPE_UI_BASELINE_DIST set to a directory holding another build of
// ui/dist (say main's: git archive main ui/dist | tar -x -C /tmp/base), a
// second UI server serves that build from the same relay, and each round
// measures both, alternating which goes first, so the two are compared in
// the same run on the same machine.
func BenchmarkBrowserRender(b *testing.B) {
	benchBrowserRender(b, scaleFlows(2000, 10000, time.Now().Add(-time.Minute)))
}

// BenchmarkBrowserRenderL7 is BenchmarkBrowserRender with HTTP on every
// twentieth edge (500 edges with L7, so with labels close up).
func BenchmarkBrowserRenderL7(b *testing.B) {
	now := time.Now().Add(-time.Minute)
	flows := scaleFlows(2000, 10000, now)
	for i, f := range slices.Clone(flows) {
		if i%20 != 2 {
			continue
		}
		for j, typ := range []flowpb.L7FlowType{flowpb.L7FlowType_REQUEST, flowpb.L7FlowType_RESPONSE} {
			l := proto.Clone(f).(*flowpb.Flow)
			l.Type, l.EventType = flowpb.FlowType_L7, &flowpb.CiliumEventType{Type: contract.MessageTypeAccessLog}
			l.Time = timestampOf(now.Add(time.Duration(i)*time.Microsecond + time.Duration(j)*time.Millisecond))
			h := &flowpb.HTTP{Method: "GET", Url: "http://svc:8080/items/" + itoa(uint64(i%7)), Protocol: "HTTP/1.1"}
			l.L7 = &flowpb.Layer7{Type: typ, Record: &flowpb.Layer7_Http{Http: h}}
			if typ == flowpb.L7FlowType_RESPONSE {
				h.Code = 200 + 300*uint32(b2u(i%60 == 2))
				l.L7.LatencyNs = uint64(time.Duration(1+i%40) * time.Millisecond)
			}
			flows = append(flows, l)
		}
	}
	benchBrowserRender(b, flows)
}

func benchBrowserRender(b *testing.B, flows []*flowpb.Flow) {
	web := needBrowser(b)
	const workloads, edges = 2000, 10000
	a, err := relaytest.Start(relaytest.Options{Name: "node-1", Capacity: 16383})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Stop)
	a.Add(flows...)
	relay := startRelay(b, a)
	type variant struct {
		name, addr string
		runs       []benchResult
	}
	s, addr := startUI(b, relay)
	variants := []*variant{{name: "this", addr: addr}}
	servers := []*Server{s}
	if dir := os.Getenv("LOUPE_UI_BASELINE_DIST"); dir != "" {
		base, err := New(Config{Flows: RelayFlows(relay), FlushInterval: 20 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		base.assets = os.DirFS(dir)
		if _, err := fs.Stat(base.assets, "index.html"); err != nil {
			b.Fatalf("LOUPE_UI_BASELINE_DIST: %v", err)
		}
		variants = append(variants, &variant{name: "baseline", addr: serveUI(b, base)})
		servers = append(servers, base)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range servers {
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
	}
	for i := 0; i < b.N; i++ {
		for j := range variants {
			v := variants[(i+j)%len(variants)] // alternate which goes first
			var res benchResult
			runNode(b, web, "bench.mjs", map[string]string{"LOUPE_UI_URL": "http://" + v.addr + "/", "LOUPE_UI_NODES": fmt.Sprint(workloads)}, &res)
			if res.Nodes != workloads || res.Edges != edges {
				b.Fatalf("%s: the page holds %d nodes and %d edges", v.name, res.Nodes, res.Edges)
			}
			v.runs = append(v.runs, res)
		}
	}
	for _, v := range variants {
		for i, res := range v.runs {
			fmt.Printf("%s round %d: %d workloads, %d edges (%d drawn lines when whole): first render %.0f ms, map shown %.0f ms (%s); panning whole map: frame p50 %.1f p95 %.1f max %.1f ms (draw p95 %.1f); close up: frame p50 %.1f p95 %.1f ms (draw p95 %.1f, %d lines, %d L7 labels); scene draw %.0f ms; layout settled %.0f ms",
				v.name, i, res.Nodes, res.Edges, res.Whole.PairsDrawn, res.FirstRenderMs, res.MapShownMs, timeline(res.Timing), res.Whole.Frame.P50, res.Whole.Frame.P95, res.Whole.Frame.Max, res.Whole.Draw.P95,
				res.Close.Frame.P50, res.Close.Frame.P95, res.Close.Draw.P95, res.Close.PairsDrawn, res.Close.L7Labels, res.SceneMs, res.SettledMs)
			fmt.Println()
		}
	}
	// med is the median of the rounds, with their range.
	med := func(v *variant, f func(benchResult) float64) (mid, lo, hi float64) {
		xs := make([]float64, len(v.runs))
		for i, r := range v.runs {
			xs[i] = f(r)
		}
		slices.Sort(xs)
		return xs[len(xs)/2], xs[0], xs[len(xs)-1]
	}
	metrics := []struct {
		unit string
		f    func(benchResult) float64
	}{
		{"ms-first-render", func(r benchResult) float64 { return r.FirstRenderMs }},
		{"ms-map-shown", func(r benchResult) float64 { return r.MapShownMs }},
		{"ms-layout-settled", func(r benchResult) float64 { return r.SettledMs }},
		{"ms/frame-p50-whole", func(r benchResult) float64 { return r.Whole.Frame.P50 }},
		{"ms/frame-p95-whole", func(r benchResult) float64 { return r.Whole.Frame.P95 }},
		{"ms/draw-p95-whole", func(r benchResult) float64 { return r.Whole.Draw.P95 }},
		{"ms/frame-p50-close", func(r benchResult) float64 { return r.Close.Frame.P50 }},
		{"ms/frame-p95-close", func(r benchResult) float64 { return r.Close.Frame.P95 }},
		{"ms/draw-p95-close", func(r benchResult) float64 { return r.Close.Draw.P95 }},
	}
	for _, m := range metrics {
		this, tlo, thi := med(variants[0], m.f)
		b.ReportMetric(this, m.unit)
		if len(variants) > 1 {
			base, blo, bhi := med(variants[1], m.f)
			fmt.Printf("median of %d rounds, %s: this %.1f (%.1f-%.1f), baseline %.1f (%.1f-%.1f), ratio %.2f\n",
				len(variants[0].runs), m.unit, this, tlo, thi, base, blo, bhi, this/base)
		}
	}
}

// timeline is the page's timing marks (ms since navigation), in order.
func timeline(marks map[string]float64) string {
	keys := slices.SortedFunc(maps.Keys(marks), func(a, b string) int { return cmp.Compare(marks[a], marks[b]) })
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s %.0f", k, marks[k])
	}
	return b.String()
}

// BenchmarkSnapshot measures what a browser's first message costs the
// server at 2,000 workloads and 10,000 edges: the map's JSON (reported as
// MB), from the encoded views kept between snapshots when the map is idle
// (SnapshotJSON), and from fresh views, as when every node and edge changed.
func BenchmarkSnapshot(b *testing.B) {
	a := NewAggregator(AggregatorConfig{})
	for _, f := range scaleFlows(2000, 10000, time.Now()) {
		a.Add(f)
	}
	a.Flush()
	b.Run("idle", func(b *testing.B) {
		var size int
		for i := 0; i < b.N; i++ {
			size = len(a.SnapshotJSON())
		}
		b.ReportMetric(float64(size)/1e6, "MB")
	})
	b.Run("fresh", func(b *testing.B) {
		var size int
		for i := 0; i < b.N; i++ {
			snap := a.Snapshot()
			size = len(mustJSON(snap))
		}
		b.ReportMetric(float64(size)/1e6, "MB")
	})
}

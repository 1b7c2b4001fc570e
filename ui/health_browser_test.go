package ui

import (
	"context"
	"sync"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"

	respb "github.com/loupe-project/loupe/api/resources/v1"
	secpb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/relay/relaytest"
	"github.com/loupe-project/loupe/resources"
	secserver "github.com/loupe-project/loupe/secevents/server"
)

// healthResult is what web/test/health.mjs reports.
type healthResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	Badge *struct {
		Count int    `json:"count"`
		Color string `json:"color"`
	} `json:"badge"`
	BadgePixel struct {
		K     float64 `json:"k"`
		Color string  `json:"color"`
	} `json:"badgePixel"`
	Panel        string `json:"panel"`
	StarvedPanel string `json:"starvedPanel"`
	PairPanel    string `json:"pairPanel"`
	URL          string `json:"url"`
	RangeLabel   string `json:"rangeLabel"`
	Screenshot   string `json:"screenshot"`
}

// growingPods is an agent's resource source whose pods wait in the run
// queue at a set rate: every read adds one interval's waits to the
// cumulative histograms, as the kernel's counters grow.
type growingPods struct {
	mu    sync.Mutex
	reads uint64
}

func (g *growingPods) read(context.Context) ([]*respb.PodResources, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reads++
	n := g.reads
	now := time.Now().UnixNano()
	row := func(pod string, ino uint64, runq map[int]uint64, io map[int]uint64, ooms uint64) *respb.PodResources {
		for i := range runq {
			runq[i] *= n
		}
		for i := range io {
			io[i] *= n
		}
		r := podRes("demo", pod, "", ino, runq, io, n*1e8, ooms)
		r.TimeUnixNano = now
		return r
	}
	return []*respb.PodResources{
		// db waits 8–17 ms for a CPU (bucket 23) on a tenth of its
		// wake-ups: starved; it was OOM-killed once.
		row("db", 3, map[int]uint64{10: 90, 23: 10}, map[int]uint64{17: 3}, 1),
		row("api", 2, map[int]uint64{10: 100}, nil, 0),
		row("frontend", 1, map[int]uint64{12: 100}, nil, 0),
	}, nil
}

// TestBrowserWorkloadHealth: in chromium, the workload with security
// events carries a badge and lists them (rule, priority, process, the
// network rule's peer) with links to its flows then; the edge to the
// starved database is marked and its panel shows its run-queue p99, I/O
// p99 and OOM kills. Events and resources come through the agents'
// services and the relay's merge, as in a cluster; the lab version is
// TestPrivilegedBrowserLabAttack.
func TestBrowserWorkloadHealth(t *testing.T) {
	web := needBrowser(t)
	store := secserver.NewStore(0)
	pods := &growingPods{}
	a, err := relaytest.Start(relaytest.Options{Name: "node-1", Register: func(r grpc.ServiceRegistrar) {
		secserver.NewService(store, "node-1").Register(r)
		resources.NewService(pods.read).Register(r)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	now := time.Now()
	a.Add(demoFlows(now.Add(-time.Second))...)
	// The events as the agent writes them (agent/daemon/secevents.go and
	// secnet.go): a read of /etc/shadow, its kill, and a network rule.
	add := func(se *secpb.SecurityEvent) {
		store.Add(&secpb.GetEventsResponse{NodeName: "node-1", TimeUnixNano: se.TimeUnixNano, ResponseTypes: &secpb.GetEventsResponse_Event{Event: se}})
	}
	add(&secpb.SecurityEvent{TimeUnixNano: now.Add(-3 * time.Second).UnixNano(), NodeName: "node-1", Rule: "Read sensitive file",
		Priority: "Warning", Namespace: "demo", Pod: "frontend", EventType: "openat", File: "/etc/gshadow",
		Process: &secpb.Process{Name: "cat", Pid: 4242, Argv: []string{"cat", "/etc/gshadow"}}, AttributedBy: "netns"})
	add(&secpb.SecurityEvent{TimeUnixNano: now.Add(-2 * time.Second).UnixNano(), NodeName: "node-1", Rule: "Kill shadow readers in frontend",
		Priority: "Critical", Namespace: "demo", Pod: "frontend", EventType: "openat", File: "/etc/shadow", Action: "kill",
		Process: &secpb.Process{Name: "cat", Pid: 4243}, AttributedBy: "netns"})
	add(&secpb.SecurityEvent{TimeUnixNano: now.Add(-time.Second).UnixNano(), NodeName: "node-1", Rule: "Unexpected connection to the API server",
		Priority: "Warning", Namespace: "demo", Pod: "frontend", EventType: "connect", AttributedBy: "flow",
		SourceIp: "10.0.0.1", DestinationIp: "10.96.0.1", DestinationPort: 443, L4Protocol: "tcp"})

	conn := startRelayConn(t, a)
	_, addr := startUIConfig(t, Config{Flows: RelayFlows(observerpb.NewObserverClient(conn)), FlushInterval: 20 * time.Millisecond,
		SecurityEvents: secpb.NewSecurityEventsClient(conn), Resources: respb.NewResourcesClient(conn), ResourcesInterval: 300 * time.Millisecond})
	shot := screenshotPath(t, "ui-health.png")
	var res healthResult
	runNode(t, web, "health.mjs", map[string]string{
		"LOUPE_UI_URL": "http://" + addr + "/",
		"LOUPE_UI_HEALTH": mustMarshal(t, map[string]any{
			"attacked": "demo/frontend", "events": 3, "quiet": "demo/api",
			"texts": []string{"Read sensitive file", "Kill shadow readers in frontend", "Critical (KILL)", "cat(4242)", "/etc/gshadow",
				"Unexpected connection to the API server", "10.96.0.1:443/tcp", "flows then", "Security events (3)"},
			"starved": []string{"demo/api", "demo/db"}, "fed": []string{"demo/frontend", "demo/api"},
			"resourceTexts": []string{"run queue p99", "starved: waits for a CPU", "block I/O p99", "OOM kills1"},
			"screenshot":    shot,
		}),
	}, &res)
	if !res.OK {
		t.Fatalf("health check: %+v", res)
	}
	if res.Badge == nil || res.Badge.Count != 3 || res.Badge.Color != "#a50e0e" {
		t.Errorf("badge %+v: want 3 events, the Critical colour", res.Badge)
	}
	t.Logf("badge %+v (pixel %+v); link %s (%s)", res.Badge, res.BadgePixel, res.URL, res.RangeLabel)
	t.Logf("starved panel: %s", res.StarvedPanel)
	t.Logf("screenshot: %s", res.Screenshot)
}

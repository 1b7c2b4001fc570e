package ui

import (
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/relay/relaytest"
)

// statsResult is what web/test/stats.mjs reports.
type statsResult struct {
	Writes int    `json:"writes"` // mutations of #stats while watched
	Texts  int    `json:"texts"`  // distinct texts seen, the first included
	Ticks  int    `json:"ticks"`  // tick messages received meanwhile
	Last   string `json:"last"`
}

// TestBrowserHeaderCountersThrottled: while flows keep coming, the
// server's status changes on every tick, but the page rewrites its header
// counters at most once a second (each rewrite costs a layout of the page:
// 20-30 ms beside a big flow table, every frame of a pan at 50 ticks a
// second, BenchmarkBrowserRender). The counters still move.
func TestBrowserHeaderCountersThrottled(t *testing.T) {
	web := needBrowser(t)
	a, err := relaytest.Start(relaytest.Options{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	client, web0 := pod("x", "client-1", "client"), pod("x", "web-0", "web")
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			f := tcpFlow(client, web0, uint32(30000+i%20000), 80, flowpb.Verdict_FORWARDED, i)
			f.Time = timestampOf(time.Now())
			a.Add(f)
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	_, addr := startUI(t, startRelay(t, a))
	const watch = 3 * time.Second
	var res statsResult
	runNode(t, web, "stats.mjs", map[string]string{"LOUPE_UI_URL": "http://" + addr + "/", "LOUPE_UI_WATCH_MS": fmtMs(watch)}, &res)
	t.Logf("%d ticks, %d header writes, %d texts; last %q", res.Ticks, res.Writes, res.Texts, res.Last)
	if res.Ticks < 30 {
		t.Fatalf("only %d ticks in %s: the server's status did not keep changing", res.Ticks, watch)
	}
	// At most one write a second, plus one at each end of the window.
	if res.Writes > int(watch/time.Second)+2 || res.Texts < 2 {
		t.Errorf("%d header writes and %d texts over %s of %d ticks: want at most %d writes, and the counters moving",
			res.Writes, res.Texts, watch, res.Ticks, int(watch/time.Second)+2)
	}
}

func fmtMs(d time.Duration) string { return itoa(uint64(d / time.Millisecond)) }

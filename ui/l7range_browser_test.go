package ui

import (
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/relay/relaytest"
)

type l7RangeResult struct {
	OK       bool   `json:"ok"`
	Error    string `json:"error"`
	L7Line   string `json:"l7Line"`
	H1       string `json:"h1"`
	H1HasOld bool   `json:"h1HasOld"`
	H1Panel  string `json:"h1Panel"`
	H6       string `json:"h6"`
	H6HasOld bool   `json:"h6HasOld"`
	URL      string `json:"url"`
}

// TestBrowserL7AndTimeRange: in chromium, the side panel of an edge shows
// its L7 (protocol, request rate, errors, p50/p99) and its top paths; the
// time slider replaces the live map with the relay's aggregates of the
// last hour (an edge only 2 hours old is gone) and of 6 hours (it is back),
// keeps the range in the URL, and returns to live.
func TestBrowserL7AndTimeRange(t *testing.T) {
	web := needBrowser(t)
	a, err := relaytest.Start(relaytest.Options{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	now := time.Now()
	old := tcpFlow(pod("x", "old-1", "old"), pod("y", "db-0", "db"), 50000, 5432, flowpb.Verdict_FORWARDED, 0)
	old.Time = timestampOf(now.Add(-2 * time.Hour))
	a.Add(old)
	a.Add(l7Flows(now)...)
	_, addr := startUI(t, startRelay(t, a))
	var res l7RangeResult
	runNode(t, web, "l7range.mjs", map[string]string{
		"LOUPE_UI_URL": "http://" + addr + "/",
		"LOUPE_UI_L7":  mustMarshal(t, map[string]any{"l7": []string{"x/client", "x/web"}, "old": []string{"x/old", "y/db"}}),
	}, &res)
	if !res.OK {
		t.Fatalf("l7/range check: %+v", res)
	}
	t.Logf("L7: %s; 1h: %s; 6h: %s; url %s", res.L7Line, res.H1, res.H6, res.URL)
}

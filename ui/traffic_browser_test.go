package ui

import (
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/relay/relaytest"
)

// trafficResult is what web/test/traffic.mjs reports.
type trafficResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	Bulk  struct {
		Drawn struct {
			Width float64 `json:"width"`
			Color string  `json:"color"`
		} `json:"drawn"`
		Traffic struct {
			BytesPerSec float64 `json:"bytesPerSec"`
			P99         float64 `json:"p99"`
		} `json:"traffic"`
	} `json:"bulk"`
	Idle struct {
		Drawn struct {
			Width float64 `json:"width"`
			Color string  `json:"color"`
		} `json:"drawn"`
	} `json:"idle"`
	Panel string `json:"panel"`
	URL   string `json:"url"`
}

// TestBrowserEdgeTraffic: in chromium, the bulk edge is drawn wider than
// the idle one, the colour mode comes from the URL, the side panel shows
// the traffic and the toolbar's choice goes back to the URL. The lab
// version is TestPrivilegedBrowserLabTraffic.
func TestBrowserEdgeTraffic(t *testing.T) {
	web := needBrowser(t)
	a, err := relaytest.Start(relaytest.Options{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	a.Add(trafficFlows(t, time.Now())...)
	// The bulk connection keeps reporting, as its periodic records would,
	// so that its rate holds however long the browser takes to start.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		client, db := pod("x", "client-1", "client"), pod("y", "db-0", "db")
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			f := tcpFlow(client, db, 50000, 5432, flowpb.Verdict_FORWARDED, 0)
			a.Add(withConn(t, f, time.Now(), float64(70000+700*i), 100e6+float64(i)*10e6, float64(900+10*i), 60e3+float64(i)*660, 150e3))
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	_, addr := startUI(t, startRelay(t, a))
	var res trafficResult
	runNode(t, web, "traffic.mjs", map[string]string{
		"LOUPE_UI_URL":     "http://" + addr + "/",
		"LOUPE_UI_TRAFFIC": mustMarshal(t, map[string]any{"bulk": []string{"x/client", "y/db"}, "idle": []string{"x/client", "x/web"}}),
	}, &res)
	if !res.OK {
		t.Fatalf("traffic check: %+v", res)
	}
	if res.Bulk.Drawn.Color == res.Idle.Drawn.Color {
		t.Errorf("handshake colours alike: bulk p99 150 µs %s, idle p99 20 ms %s", res.Bulk.Drawn.Color, res.Idle.Drawn.Color)
	}
	t.Logf("bulk %.0f B/s width %.1f %s; idle width %.1f %s; url %s", res.Bulk.Traffic.BytesPerSec, res.Bulk.Drawn.Width, res.Bulk.Drawn.Color,
		res.Idle.Drawn.Width, res.Idle.Drawn.Color, res.URL)
}

package otlp

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/loupe-project/loupe/otlp/otlptest"
)

// The collector goes away for outage and comes back. Flows keep coming
// at a steady rate throughout. What the queue cannot hold is dropped and
// counted; the rest arrives once the collector is back, so the flows
// received plus the flows counted as dropped equal the flows sent, and
// the dropped ones are exactly those that never arrived.
func testCollectorOutage(t *testing.T, outage time.Duration) {
	r := otlptest.Start(t, "127.0.0.1:0", nil)
	cfg := testConfig(r)
	cfg.QueueSize, cfg.BatchSize, cfg.RetryMaxElapsed = 2000, 200, 2*outage+10*time.Second
	e := run(t, cfg)

	const perMs = 2
	sent := 0
	feed := func(d time.Duration) {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(d); time.Now().Before(end); {
			<-tick.C
			for range perMs {
				f := l4Flow(sent)
				f.Uuid = "u" + strconv.Itoa(sent)
				e.Flow(f)
				sent++
			}
		}
	}
	feed(time.Second)
	otlptest.WaitFor(t, 10*time.Second, "flows before the outage", func() bool { return r.SumInt(AttrFlowCount) > 0 })
	r.Stop()
	before := len(r.LogRecords())
	feed(outage)
	r.Restart(t)
	restartedAt := sent
	// Longer than the reconnection backoff's cap (maxRetryDelay), so the
	// exporter is back while flows still come.
	feed(maxRetryDelay + 3*time.Second)

	otlptest.WaitFor(t, 2*outage+30*time.Second, "every flow exported or dropped", func() bool {
		s := e.Stats()
		return s.Exported+s.Dropped == uint64(sent)
	})
	s := e.Stats()
	got := map[string]int{}
	afterRestart := 0
	for _, lr := range r.LogRecords() {
		u := otlptest.Attrs(lr)[AttrFlowUUID]
		got[u]++
		if n, _ := strconv.Atoi(u[1:]); n >= restartedAt {
			afterRestart++
		}
	}
	missing := 0
	for i := range sent {
		switch got["u"+strconv.Itoa(i)] {
		case 0:
			missing++
		case 1:
		default:
			t.Errorf("flow %d received %d times", i, got["u"+strconv.Itoa(i)])
		}
	}
	t.Logf("outage %s: sent %d, received %d (%d before the outage, %d sent after it), dropped %v",
		outage, sent, len(got), before, afterRestart, s.DroppedBy)
	if uint64(len(got))+s.Dropped != uint64(sent) || uint64(missing) != s.Dropped || s.Exported != uint64(len(got)) {
		t.Fatalf("sent %d = received %d + dropped %d does not hold (missing %d, exported %d)", sent, len(got), s.Dropped, missing, s.Exported)
	}
	if s.Dropped == 0 || s.DroppedBy[ReasonQueueFull] != s.Dropped {
		t.Fatalf("an outage longer than the queue dropped %v", s.DroppedBy)
	}
	if afterRestart == 0 {
		t.Fatal("nothing sent after the collector came back arrived")
	}
	want := fmt.Sprintf(`loupe_otlp_flows_dropped_total{reason="queue_full"} %d`, s.Dropped)
	found := false
	for _, l := range gatherText(t, e) {
		found = found || l == want
	}
	if !found {
		t.Errorf("metrics lack %q: %v", want, gatherText(t, e))
	}
}

func TestCollectorOutageShort(t *testing.T) { testCollectorOutage(t, 3*time.Second) }

// The figure: the collector away for 30 s.
func TestCollectorOutage30s(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage; -short skips it")
	}
	testCollectorOutage(t, 30*time.Second)
}

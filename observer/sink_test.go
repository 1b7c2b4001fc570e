package observer

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/loupe-project/loupe/metadata"
)

type sinkFunc func(*flowpb.Flow)

func (f sinkFunc) Flow(fl *flowpb.Flow) { f(fl) }

// A sink gets every flow the observer stores, the same one the ring holds,
// and nothing it does not store (a kernel drop of another agent's netns).
func TestSinkGetsStoredFlows(t *testing.T) {
	o := newKernelTestObserver(t)
	var got []*flowpb.Flow
	o.AddSink(sinkFunc(func(f *flowpb.Flow) { got = append(got, f) }))
	o.HandleEvent(kernelRecord(testNetnsPod, "10.0.2.20", "10.0.1.10", 17, 5000, 9))
	if len(got) != 1 || got[0] != lastFlow(t, o) {
		t.Fatalf("sink got %d flows, want the ring's one", len(got))
	}
	o.HandleEvent(kernelRecord(999, "10.0.2.20", "10.0.1.10", 17, 5000, 9))
	if len(got) != 1 {
		t.Fatalf("sink got a flow the observer did not store")
	}
}

// lastFlowKeeper keeps the last flow it was handed, as a queue would.
type lastFlowKeeper struct{ last *flowpb.Flow }

func (k *lastFlowKeeper) Flow(f *flowpb.Flow) { k.last = f }
func (k *lastFlowKeeper) KeepsFlows() bool    { return true }

// Flows come from slabs, one allocation per 64 of them, until a sink that
// keeps flows is added: from then on each flow is an allocation of its
// own, so a kept flow keeps nothing else alive.
func TestFlowKeeperTurnsSlabsOff(t *testing.T) {
	o, err := New(Config{NodeName: "node-1", Metadata: metadata.Static{Snap: testSnapshot(t)}, LinkName: func(uint32) string { return "lxc" }})
	if err != nil {
		t.Fatal(err)
	}
	ev := benchEvents()[0] // a TCP SYN: a flow block, a TCP block and a connection extension
	for range 256 {
		o.HandleEvent(ev)
	}
	if n := testing.AllocsPerRun(640, func() { o.HandleEvent(ev) }); n >= 1 {
		t.Fatalf("from slabs: %v allocations a flow, want under 1", n)
	}
	k := &lastFlowKeeper{}
	o.AddSink(k)
	if n := testing.AllocsPerRun(640, func() { o.HandleEvent(ev) }); n < 3 {
		t.Fatalf("with a sink that keeps flows: %v allocations a flow, want the block, the TCP block and the extension each", n)
	}
	if k.last == nil {
		t.Fatal("the keeper got no flow")
	}
}

// A followed sink gets every flow stored after it started, in order, the
// ring's own; the flows the ring overwrote while it was busy are counted
// as lost for it, never skipped silently; and it stops with its context.
func TestFollowSinkSeesEveryFlowOrCountsIt(t *testing.T) {
	o := newTestObserver(t, 15, nil) // a ring of 16
	var all []*flowpb.Flow           // every flow stored, in ring order
	o.AddSink(sinkFunc(func(f *flowpb.Flow) { all = append(all, f) }))
	evs := benchEvents()
	fill := func(n int) {
		for i := range n {
			o.HandleEvent(evs[i%len(evs)])
		}
	}
	fill(5) // before the sink: not its flows
	ctx, cancel := context.WithCancel(context.Background())
	entered, gate := make(chan struct{}), make(chan struct{})
	var (
		mu  sync.Mutex
		got []*flowpb.Flow
	)
	done := make(chan error, 1)
	go func() {
		done <- o.FollowSink(ctx, "test", sinkFunc(func(f *flowpb.Flow) {
			mu.Lock()
			first := len(got) == 0
			got = append(got, f)
			mu.Unlock()
			if first { // the first flow holds the sink up
				close(entered)
				<-gate
			}
		}))
	}()
	for waiting := true; waiting; { // the sink starts at the head
		fill(1)
		select {
		case <-entered:
			waiting = false
		case <-time.After(time.Millisecond):
		}
	}
	fill(100) // laps the ring while the sink holds its first flow
	close(gate)
	mu.Lock()
	start := slices.Index(all, got[0])
	mu.Unlock()
	var lost float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		lost = testutil.ToFloat64(o.sinkLost.WithLabelValues("test"))
		if n+int(lost) == len(all)-start {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink got %d flows and lost %v of the %d stored since it started", n, lost, len(all)-start)
		}
	}
	if lost == 0 {
		t.Fatal("100 flows through a ring of 16 behind a held sink: none counted lost")
	}
	// After its first, what it got is the newest flows, in order.
	mu.Lock()
	tail := got[1:]
	mu.Unlock()
	if !slices.Equal(tail, all[len(all)-len(tail):]) {
		t.Fatal("the flows after the first are not the ring's newest, in order")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("FollowSink did not return after its context ended")
	}
}

package observer

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer/flowwire"
	"github.com/loupe-project/loupe/observer/history"
)

// The test flows are stamped boot time + 1000 s and on, which may be days
// ago: a retention that keeps them.
const testRetention = 100000 * time.Hour

func newHistoryObserver(t *testing.T, bufSize int, opts history.Options) *Observer {
	t.Helper()
	if opts.Retention == 0 {
		opts.Retention = testRetention
	}
	st, err := history.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	o, err := New(Config{
		NodeName: "node-1", Metadata: metadata.Static{Snap: testSnapshot(t)}, BufferSize: bufSize,
		LinkName: func(i uint32) string { return "lxc" }, History: st,
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// fillFrom writes n flows like fill, numbered from first (source port
// 30000+i, boot time 1000+i s).
func fillFrom(o *Observer, first, n int) {
	for i := first; i < first+n; i++ {
		o.HandleEvent(rawEvent(evSpec{
			ts: uint64(1000+i) * 1e9, typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded, proto: 6, tcpFlags: 0x02, flags: 2,
			epID: 11, srcID: 1001, dstID: 1000, src: "10.0.1.11", dst: "10.0.1.10",
			sport: uint16(30000 + i%30000), dport: uint16(80 + i%3), dir: contract.DirectionEgress,
		}))
	}
}

// fillPersisted is fillFrom in steps the writer keeps up with (it polls
// the ring), each written to disk before the next.
func fillPersisted(t *testing.T, o *Observer, first, n int) {
	t.Helper()
	step := int(o.ring.capacity()) * 2 / 3
	for i := first; i < first+n; i += step {
		fillFrom(o, i, min(step, first+n-i))
		waitPersisted(t, o)
	}
}

// flowTime is the time of flow i of fillFrom.
func flowTime(o *Observer, i int) *timestamppb.Timestamp {
	return timestamppb.New(time.Unix(0, o.dec.bootOffset+int64(1000+i)*1e9))
}

// waitPersisted waits until the history writer has written the whole ring.
func waitPersisted(t *testing.T, o *Observer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for o.hist.next.Load() < o.ring.head.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("history writer at %d, ring at %d", o.hist.next.Load(), o.ring.head.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkOnce checks that flows are numbers first..first+n-1, each once, in
// order.
func checkOnce(t *testing.T, flows []*flowpb.Flow, first, n int) {
	t.Helper()
	if len(flows) != n {
		t.Fatalf("%d flows, want %d (%v...)", len(flows), n, sports(flows[:min(len(flows), 20)]))
	}
	for i, f := range flows {
		if got := int(f.GetL4().GetTCP().GetSourcePort()) - 30000; got != first+i {
			t.Fatalf("flow %d is number %d, want %d", i, got, first+i)
		}
	}
}

// Flows the ring overwrote come from disk, then the ring takes over: each
// flow once, in order, whatever the writer had persisted when the query
// came.
func TestHistorySinceAcrossTheSeam(t *testing.T) {
	o := newHistoryObserver(t, 15, history.Options{Dir: t.TempDir()})
	c := observerpb.NewObserverClient(serve(t, o))
	fillPersisted(t, o, 0, 50)
	total := 50
	for round := range 20 {
		// Some of these are on disk when the query runs, some only in the
		// ring: the seam moves from round to round.
		fillFrom(o, total, 7)
		total += 7
		if round%3 == 0 {
			waitPersisted(t, o)
		}
		flows, err := collect(t, c, &observerpb.GetFlowsRequest{Since: flowTime(o, 0)})
		if err != nil {
			t.Fatal(err)
		}
		checkOnce(t, flows, 0, total)
		// From the middle of the history.
		flows, err = collect(t, c, &observerpb.GetFlowsRequest{Since: flowTime(o, 10)})
		if err != nil {
			t.Fatal(err)
		}
		checkOnce(t, flows, 10, total-10)
		waitPersisted(t, o) // so the next round's flows fit in the ring
	}
}

// since/until read exactly the window from disk.
func TestHistoryWindow(t *testing.T) {
	o := newHistoryObserver(t, 1023, history.Options{Dir: t.TempDir()})
	c := observerpb.NewObserverClient(serve(t, o))
	fillPersisted(t, o, 0, 7200) // two hours, a flow a second
	flows, err := collect(t, c, &observerpb.GetFlowsRequest{Since: flowTime(o, 1800), Until: flowTime(o, 3600)})
	if err != nil {
		t.Fatal(err)
	}
	checkOnce(t, flows, 1800, 1801) // both ends are inclusive, as in the ring
	// With first and number, across the disk.
	flows, err = collect(t, c, &observerpb.GetFlowsRequest{Since: flowTime(o, 100), First: true, Number: 5})
	if err != nil {
		t.Fatal(err)
	}
	checkOnce(t, flows, 100, 5)
	// A filter applies to stored flows as to the ring's.
	flows, err = collect(t, c, &observerpb.GetFlowsRequest{Since: flowTime(o, 0), Until: flowTime(o, 29),
		Whitelist: []*flowpb.FlowFilter{{DestinationPort: []string{"81"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != 10 {
		t.Fatalf("port 81 in 30 flows: %d", len(flows))
	}
}

// With follow, the stream goes from disk through the ring to live flows.
func TestHistoryFollow(t *testing.T) {
	o := newHistoryObserver(t, 15, history.Options{Dir: t.TempDir()})
	c := observerpb.NewObserverClient(serve(t, o))
	fillPersisted(t, o, 0, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Since: flowTime(o, 0), Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	var flows []*flowpb.Flow
	filled := false
	for len(flows) < 110 {
		if len(flows) == 100 && !filled {
			fillFrom(o, 100, 10)
			filled = true
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("after %d flows: %v", len(flows), err)
		}
		if f := r.GetFlow(); f != nil {
			flows = append(flows, f)
		} else if r.GetLostEvents() != nil {
			t.Fatalf("lost %v", r.GetLostEvents())
		}
	}
	checkOnce(t, flows, 0, 110)
}

// A writer the ring laps records the gap as a LostEvent in the history, so
// flows plus lost add up to what happened.
func TestHistoryWriterLappedRecordsLost(t *testing.T) {
	o := newHistoryObserver(t, 15, history.Options{Dir: t.TempDir()})
	fillFrom(o, 0, 1000) // before the writer starts: it finds 985 gone
	c := observerpb.NewObserverClient(serve(t, o))
	waitPersisted(t, o)
	flows, lost := countResponses(t, c, &observerpb.GetFlowsRequest{Since: flowTime(o, 0)})
	if lost[flowpb.LostEventSource_HUBBLE_RING_BUFFER] != 985 || flows != 15 {
		t.Fatalf("flows %d, lost %v", flows, lost)
	}
	if got := counterValue(o.hist.lost); got != 985 {
		t.Fatalf("loupe_history_lost_total %v", got)
	}
}

// Past the retention, the stream starts with a LostEvent of what was
// removed: it is never silently short.
func TestHistoryExpiredReported(t *testing.T) {
	o := newHistoryObserver(t, 4095, history.Options{Dir: t.TempDir(), MaxBytes: 256 << 10})
	c := observerpb.NewObserverClient(serve(t, o))
	const n = 30000
	fillPersisted(t, o, 0, n)
	flows, lost := countResponses(t, c, &observerpb.GetFlowsRequest{Since: flowTime(o, 0)})
	if lost[flowpb.LostEventSource_HUBBLE_RING_BUFFER] == 0 || flows+int(lost[flowpb.LostEventSource_HUBBLE_RING_BUFFER]) != n {
		t.Fatalf("flows %d + lost %v != %d", flows, lost, n)
	}
	if o.hist.store.Size() > 256<<10 {
		t.Fatalf("history is %d bytes", o.hist.store.Size())
	}
}

// A new agent run reads the runs before it from disk, then its own ring.
func TestHistoryAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	o1 := newHistoryObserver(t, 63, history.Options{Dir: dir})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o1.ServeListeners(ctx, nil, nil) }()
	fillFrom(o1, 0, 40)
	// Stopping writes what the ring holds.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	o2 := newHistoryObserver(t, 15, history.Options{Dir: dir})
	c := observerpb.NewObserverClient(serve(t, o2))
	fillPersisted(t, o2, 40, 30)
	// Each run measures its boot offset anew: allow it to differ a little.
	since := timestamppb.New(flowTime(o2, 0).AsTime().Add(-100 * time.Millisecond))
	flows, err := collect(t, c, &observerpb.GetFlowsRequest{Since: since})
	if err != nil {
		t.Fatal(err)
	}
	checkOnce(t, flows, 0, 70)
}

func countResponses(t *testing.T, c observerpb.ObserverClient, req *observerpb.GetFlowsRequest) (flows int, lost map[flowpb.LostEventSource]uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := c.GetFlows(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	lost = map[flowpb.LostEventSource]uint64{}
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return flows, lost
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.GetFlow() != nil {
			flows++
		}
		if le := r.GetLostEvents(); le != nil {
			lost[le.Source] += le.NumEventsLost
		}
	}
}

// A flow a follower wrote is written once: a second follower gets the same
// bytes, and the history writer takes them for the disk and leaves no
// bytes behind in the ring. What the disk then serves is the ring's flows.
func TestHistorySharesFollowersWire(t *testing.T) {
	o := newHistoryObserver(t, 63, history.Options{Dir: t.TempDir()})
	fillFrom(o, 0, 50) // before the writer starts: the followers are first
	var want []*flowpb.Flow
	a, b := flowwire.NewEncoder(), flowwire.NewEncoder()
	var scratch []byte
	for seq := range uint64(50) {
		e, _ := o.ring.read(seq)
		want = append(want, e.flow)
		wa, wb := o.sharedWire(e, a, &scratch), o.sharedWire(e, b, &scratch)
		if len(wa) == 0 || &wa[0] != &wb[0] {
			t.Fatalf("entry %d: two followers wrote the flow twice", seq)
		}
	}
	c := observerpb.NewObserverClient(serve(t, o))
	waitPersisted(t, o)
	for seq := range uint64(50) {
		e, _ := o.ring.read(seq)
		if w := e.wire.Load(); w != wireTaken {
			t.Fatalf("entry %d still holds %d bytes after the writer passed", seq, len(*w))
		}
		if o.sharedWire(e, a, &scratch) != nil {
			t.Fatalf("entry %d: a follower shares bytes the writer no longer takes", seq)
		}
	}
	fillPersisted(t, o, 50, 100) // the ring no longer holds the first 50
	flows, err := collect(t, c, &observerpb.GetFlowsRequest{Since: flowTime(o, 0)})
	if err != nil {
		t.Fatal(err)
	}
	checkOnce(t, flows, 0, 150)
	for i, f := range want {
		if !proto.Equal(f, flows[i]) {
			t.Fatalf("flow %d from disk differs from the ring's:\n%v\n%v", i, flows[i], f)
		}
	}
}

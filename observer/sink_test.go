package observer

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"

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
	ev := benchEvents()[0] // a TCP SYN: a flow block and a TCP block
	for range 256 {
		o.HandleEvent(ev)
	}
	if n := testing.AllocsPerRun(640, func() { o.HandleEvent(ev) }); n >= 1 {
		t.Fatalf("from slabs: %v allocations a flow, want under 1", n)
	}
	k := &lastFlowKeeper{}
	o.AddSink(k)
	if n := testing.AllocsPerRun(640, func() { o.HandleEvent(ev) }); n < 2 {
		t.Fatalf("with a sink that keeps flows: %v allocations a flow, want the block and the TCP block each", n)
	}
	if k.last == nil {
		t.Fatal("the keeper got no flow")
	}
}

package observer

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
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

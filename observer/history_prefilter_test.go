package observer

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"

	"github.com/loupe-project/loupe/observer/filters"
)

// The prefilter never rejects a flow the filters accept, and rejects
// flows of other pods.
func TestPodPrefilter(t *testing.T) {
	flows := benchRingFlowsT(t)
	for _, wl := range [][]*flowpb.FlowFilter{
		{{SourcePod: []string{"x/web"}}},
		{{DestinationPod: []string{"x/"}}},
		{{SourcePod: []string{"web"}, DestinationPort: []string{"80"}}, {DestinationPod: []string{"y/db"}}},
		{{SourcePod: []string{"nope/"}}},
		{{SourcePod: []string{"x/web"}}, {Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}, // no test
	} {
		pre := podPrefilter(wl)
		fl, err := filters.BuildList(wl)
		if err != nil {
			t.Fatal(err)
		}
		rejected := 0
		for _, f := range flows {
			b, _ := proto.Marshal(f)
			match := filters.Apply(fl, nil, f)
			if pre != nil && !pre(b) {
				rejected++
				if match {
					t.Fatalf("%v: prefilter rejects a matching flow %v", wl, f)
				}
			}
		}
		if wl[0].GetSourcePod() != nil && wl[0].SourcePod[0] == "nope/" && rejected != len(flows) {
			t.Fatalf("a pod of no flow: %d of %d rejected", rejected, len(flows))
		}
		if wl[0].GetSourcePod() != nil && wl[0].SourcePod[0] == "x/web" && len(wl) == 1 && rejected == 0 {
			t.Fatal("x/web rejects nothing")
		}
	}
}

func benchRingFlowsT(t testing.TB) []*flowpb.Flow {
	evs := benchEvents()
	o := newTestObserver(t, 1023, nil)
	var out []*flowpb.Flow
	for i, ev := range evs {
		o.HandleEvent(ev)
		e, _ := o.ring.read(uint64(i))
		out = append(out, e.flow)
	}
	return out
}

// FuzzPodPrefilter: on any stored bytes, the prefilter never panics and
// never rejects a flow that decodes and matches.
func FuzzPodPrefilter(f *testing.F) {
	for _, fl := range benchRingFlowsT(f)[:8] {
		b, _ := proto.Marshal(fl)
		f.Add(b)
	}
	wl := []*flowpb.FlowFilter{{SourcePod: []string{"x/web"}}, {DestinationPod: []string{"y/"}}}
	pre := podPrefilter(wl)
	fl, err := filters.BuildList(wl)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		keep := pre(b)
		var flow flowpb.Flow
		if proto.Unmarshal(b, &flow) == nil && filters.Apply(fl, nil, &flow) && !keep {
			t.Fatalf("rejects a matching flow %v", &flow)
		}
	})
}

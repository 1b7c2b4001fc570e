package observer

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer/filters"
	"github.com/loupe-project/loupe/observer/flowwire"
)

// BenchEvents is the event mix of the benchmarks: the same 5-tuples the
// Hubble side-by-side benchmark (bench/hubble) encodes as Cilium trace
// notifications.
func benchEvents() [][]byte {
	var out [][]byte
	for i := range 64 {
		switch i % 4 {
		case 0: // pod to pod, TCP SYN, from the pod
			out = append(out, rawEvent(evSpec{ts: uint64(i) * 1000, typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded, proto: 6, tcpFlags: 0x02,
				flags: 2, ifindex: 7, epID: 11, srcID: 1001, dstID: 1000, src: "10.0.1.11", dst: "10.0.1.10",
				sport: uint16(30000 + i), dport: 80, dir: contract.DirectionEgress, pkts: 1}))
		case 1: // reply, to the pod
			out = append(out, rawEvent(evSpec{ts: uint64(i) * 1000, typ: contract.MessageTypeTrace, obs: contract.TraceToLxc, verdict: contract.VerdictForwarded, proto: 6, tcpFlags: 0x12,
				flags: 1, ifindex: 7, epID: 11, srcID: 1000, dstID: 1001, src: "10.0.1.10", dst: "10.0.1.11",
				sport: 80, dport: uint16(30000 + i), dir: contract.DirectionIngress, pkts: 2}))
		case 2: // UDP to a service ClusterIP
			out = append(out, rawEvent(evSpec{ts: uint64(i) * 1000, typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded, proto: 17,
				flags: 2, ifindex: 8, epID: 10, srcID: 1000, dstID: 1002, src: "10.0.1.10", dst: "10.96.0.50",
				sport: uint16(40000 + i), dport: 80, dir: contract.DirectionEgress}))
		case 3: // remote pod to local pod, TCP ACK
			out = append(out, rawEvent(evSpec{ts: uint64(i) * 1000, typ: contract.MessageTypeTrace, obs: contract.TraceToLxc, verdict: contract.VerdictForwarded, proto: 6, tcpFlags: 0x10,
				ifindex: 8, epID: 10, srcID: 1003, dstID: 1000, src: "10.0.2.20", dst: "10.0.1.10",
				sport: uint16(50000 + i), dport: 80, dir: contract.DirectionIngress}))
		}
	}
	return out
}

// benchFilters is what `loupe observe -n x --port 80 --not --verdict DROPPED`
// asks for.
func benchFilters(b *testing.B) (wl, bl filters.FilterFuncs) {
	wl, err := filters.BuildList([]*flowpb.FlowFilter{
		{SourcePod: []string{"x/"}, DestinationPort: []string{"80"}},
		{DestinationPod: []string{"x/"}, DestinationPort: []string{"80"}},
	})
	if err != nil {
		b.Fatal(err)
	}
	bl, err = filters.BuildList([]*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}})
	if err != nil {
		b.Fatal(err)
	}
	return wl, bl
}

// BenchmarkDecodeEnrichFilter measures the per-flow work of the pipeline up
// to the ring: record -> enriched flow.Flow -> whitelist/blacklist.
func BenchmarkDecodeEnrichFilter(b *testing.B) {
	evs := benchEvents()
	d := NewDecoder("node-1", metadata.Static{Snap: testSnapshot(b)}, nil, func(uint32) string { return "lxc0" })
	wl, bl := benchFilters(b)
	matched := 0
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		f, err := d.DecodeFlow(evs[i%len(evs)])
		if err != nil {
			b.Fatal(err)
		}
		if filters.Apply(wl, bl, f) {
			matched++
		}
		i++
	}
	if matched == 0 {
		b.Fatal("no flow matched")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkHandleEvent adds metrics and the ring write to decode+enrich.
func BenchmarkHandleEvent(b *testing.B) {
	evs := benchEvents()
	o := newTestObserver(b, DefaultBufferSize, nil)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		o.HandleEvent(evs[i%len(evs)])
		i++
	}
	if o.DecodeErrors() != 0 {
		b.Fatal("decode errors")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkFlowWire compares writing the decoder's flows with the
// generic proto.Marshal and with flowwire, which the ring, the history and
// followers use.
func BenchmarkFlowWire(b *testing.B) {
	evs := benchEvents()
	d := NewDecoder("node-1", metadata.Static{Snap: testSnapshot(b)}, nil, func(uint32) string { return "lxc0" })
	flows := make([]*flowpb.Flow, len(evs))
	for i, ev := range evs {
		f, err := d.DecodeFlow(ev)
		if err != nil {
			b.Fatal(err)
		}
		flows[i] = f
	}
	var buf []byte
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			buf, _ = proto.MarshalOptions{}.MarshalAppend(buf[:0], flows[i%len(flows)])
			i++
		}
	})
	b.Run("flowwire-skip-unknown", func(b *testing.B) {
		e := flowwire.NewEncoder().SkipUnknownFields()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			buf, _ = e.Append(buf[:0], flows[i%len(flows)])
			i++
		}
	})
	b.Run("flowwire", func(b *testing.B) {
		e := flowwire.NewEncoder()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			buf, _ = e.Append(buf[:0], flows[i%len(flows)])
			i++
		}
	})
}

// BenchmarkFollowerAndHistoryWire is the wire work per flow of an agent
// with its history on and the relay following: "separate" writes the flow
// for each (before entry.wire), "shared" writes it once in the follower
// and hands the bytes to the history writer, as the agent does now.
func BenchmarkFollowerAndHistoryWire(b *testing.B) {
	o := newTestObserver(b, DefaultBufferSize, nil)
	o.hist = &historyState{} // sharedWire only asks whether there is one
	evs := benchEvents()
	var entries []*entry
	for i := range 4096 {
		o.HandleEvent(evs[i%len(evs)])
		e, _ := o.ring.read(uint64(i))
		entries = append(entries, e)
	}
	b.Run("separate", func(b *testing.B) {
		follower, writer := flowwire.NewEncoder(), flowwire.NewEncoder()
		var resp, arena []byte
		i := 0
		for b.Loop() {
			e := entries[i%len(entries)]
			resp, _ = follower.AppendFlowResponse(resp[:0], e.flow, e.flow.GetNodeName(), e.flow.GetTime())
			arena, _ = writer.Append(arena[:0], e.flow)
			i++
		}
	})
	b.Run("shared", func(b *testing.B) {
		follower := flowwire.NewEncoder()
		var resp, scratch []byte
		i := 0
		for b.Loop() {
			e := entries[i%len(entries)]
			e.wire.Store(nil)
			w := o.sharedWire(e, follower, &scratch)
			resp, _ = follower.AppendFlowResponseWire(resp[:0], w, e.flow.GetNodeName(), e.flow.GetTime())
			if t := e.wire.Swap(wireTaken); t == nil || t == wireTaken { // the writer's take
				b.Fatal("nothing to take")
			}
			i++
		}
	})
}

// TestFlowWireMatchesDecoderFlows ties flowwire to the flows the real
// decoder makes: byte for byte what proto.Marshal writes.
func TestFlowWireMatchesDecoderFlows(t *testing.T) {
	d := NewDecoder("node-1", metadata.Static{Snap: testSnapshot(t)}, nil, func(uint32) string { return "lxc0" })
	e, skip := flowwire.NewEncoder(), flowwire.NewEncoder().SkipUnknownFields()
	for i, ev := range benchEvents() {
		f, err := d.DecodeFlow(ev)
		if err != nil {
			t.Fatal(err)
		}
		want, err := proto.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.Append(nil, f)
		if err != nil || string(got) != string(want) {
			t.Fatalf("event %d: flowwire wrote %x (error %v), proto.Marshal %x", i, got, err, want)
		}
		// The agent's encoders skip the unknown-field check: the
		// decoder's flows have none.
		if got, err := skip.Append(nil, f); err != nil || string(got) != string(want) {
			t.Fatalf("event %d: flowwire without the unknown-field check wrote %x (error %v), proto.Marshal %x", i, got, err, want)
		}
	}
}

package observer

import (
	"context"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// FlowSink receives every flow the observer stores, on the event reader's
// path and one flow at a time (under the observer's lock): it must neither
// block nor modify the flow (readers of the ring share it). The OTLP
// exporter is one.
type FlowSink interface {
	Flow(*flowpb.Flow)
}

// FlowKeeper is a FlowSink that keeps flows after Flow returns, such as
// the OTLP exporter's queue. With one, the decoder gives every flow an
// allocation of its own: a kept flow would keep its whole slab of 64 alive
// (see slab), and a queue that keeps one flow in every few, as a slow
// collector makes it, would keep them all.
type FlowKeeper interface {
	FlowSink
	KeepsFlows() bool
}

// AddSink hands every flow stored from now on to s as well.
func (o *Observer) AddSink(s FlowSink) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sinks = append(o.sinks, s)
	if k, ok := s.(FlowKeeper); ok && k.KeepsFlows() {
		o.dec.blocks.size, o.dec.tcps.size, o.dec.bytes.size = 1, 1, 1 // bytes: every value its own array
		o.dec.blocks.free, o.dec.tcps.free, o.dec.bytes.free = nil, nil, nil
	}
}

// FollowSink hands s every flow stored from now on, as AddSink does, but
// from the calling goroutine, which follows the ring as the history writer
// does, instead of on the event reader's path: for a sink whose work per
// flow would hold the reader up and cost events at high rates (the agent's
// network rules cost half as much as decoding). s gets one flow at a time
// and must not keep it (FlowKeeper's slabs do not apply here); a caught-up
// follower waits on the ring rather than polling it (a 10 ms poll's
// wake-ups were enough to change the run-queue latency the UI's starved
// edges are drawn from). Flows the ring overwrote before s
// read them are counted in loupe_flow_sink_lost_total{sink=name}. It
// returns when ctx is done.
func (o *Observer) FollowSink(ctx context.Context, name string, s FlowSink) error {
	lost := o.sinkLost.WithLabelValues(name)
	r := o.ring
	seq := r.head.Load()
	for {
		e, n := r.read(seq)
		switch {
		case e != nil:
			if e.flow != nil { // not a lost event
				s.Flow(e.flow)
			}
			seq++
			// A ring that never runs dry must not keep ctx waiting.
			if seq%4096 == 0 && ctx.Err() != nil {
				return nil
			}
			continue
		case n > 0:
			lost.Add(float64(n))
			seq += n
			continue
		}
		// Caught up: wait for the next flow (the ring wakes a waiting
		// follower only, so this costs the reader nothing under load).
		if err := r.wait(ctx, seq); err != nil {
			return nil
		}
	}
}

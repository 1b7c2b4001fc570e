package observer

import flowpb "github.com/cilium/cilium/api/v1/flow"

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
		o.dec.blocks.size, o.dec.tcps.size = 1, 1
		o.dec.blocks.free, o.dec.tcps.free = nil, nil
	}
}

package observer

import flowpb "github.com/cilium/cilium/api/v1/flow"

// FlowSink receives every flow the observer stores, on the event reader's
// path and one flow at a time (under the observer's lock): it must neither
// block nor modify the flow (readers of the ring share it). The OTLP
// exporter is one.
type FlowSink interface {
	Flow(*flowpb.Flow)
}

// AddSink hands every flow stored from now on to s as well.
func (o *Observer) AddSink(s FlowSink) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sinks = append(o.sinks, s)
}

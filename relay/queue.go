package relay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Stats counts what the relay did with flows, over all requests.
type Stats struct {
	// FlowsMerged counts flows that left a merge for a client queue.
	FlowsMerged atomic.Uint64
	// FlowsDropped counts those a slow client's full queue dropped.
	FlowsDropped atomic.Uint64
	// PeerEventsLost sums the lost events the peers reported.
	PeerEventsLost atomic.Uint64
	// FlowBatchMessages counts FlowBatches messages received from peers
	// (contract.FlowBatchesMethod), GetFlowsFallbacks the peers that
	// answered it Unimplemented and were asked with GetFlows instead.
	FlowBatchMessages, GetFlowsFallbacks atomic.Uint64
	// FlowBlocks counts the history blocks within them
	// (contract.FlowBatchBlocksField).
	FlowBlocks atomic.Uint64
}

// maxControl bounds the node-status and forwarded lost-event responses
// waiting for a slow client; past it, lost events are folded together.
const maxControl = 1024

// outQueue sits between the merge and one client stream. Flows wait in a
// bounded slice that the sender takes whole, so a flow costs a short lock
// rather than a channel operation; in lossy (follow) mode a full queue drops
// the flow and counts it, and the count reaches the client as a LostEvent.
// Node statuses and lost events are never dropped.
type outQueue struct {
	n        int
	lossy    atomic.Bool
	nodeName string
	stats    *Stats

	lost      atomic.Uint64
	firstLost atomic.Int64
	lastLost  atomic.Int64

	mu      sync.Mutex
	flows   []*frame // waiting for the sender
	sending int      // flows the sender took and has not sent yet
	spare   []*frame // the sender's emptied batch, reused
	control []*observerpb.GetFlowsResponse
	closed  bool
	wake    chan struct{} // something was queued
	room    chan struct{} // the sender made room
}

func newOutQueue(n int, lossy bool, nodeName string, stats *Stats) *outQueue {
	if stats == nil {
		stats = &Stats{}
	}
	q := &outQueue{n: n, nodeName: nodeName, stats: stats,
		wake: make(chan struct{}, 1), room: make(chan struct{}, 1)}
	q.lossy.Store(lossy)
	return q
}

// setLossy switches between blocking (history) and dropping (live) delivery.
func (q *outQueue) setLossy(v bool) { q.lossy.Store(v) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// flow queues one flow; in ordered mode it blocks until there is room or
// ctx ends (false).
func (q *outQueue) flow(ctx context.Context, r *frame) bool {
	q.stats.FlowsMerged.Add(1)
	for {
		q.mu.Lock()
		if len(q.flows)+q.sending < q.n {
			q.flows = append(q.flows, r)
			first := len(q.flows) == 1
			q.mu.Unlock()
			if first {
				signal(q.wake)
			}
			return ctx.Err() == nil
		}
		q.mu.Unlock()
		if q.lossy.Load() {
			q.stats.FlowsDropped.Add(1)
			now := time.Now().UnixNano()
			if q.lost.Add(1) == 1 {
				q.firstLost.Store(now)
			}
			q.lastLost.Store(now)
			return ctx.Err() == nil
		}
		select {
		case <-q.room:
		case <-ctx.Done():
			return false
		}
	}
}

// status queues a node-status event.
func (q *outQueue) status(state relaypb.NodeState, msg string, names ...string) {
	if len(names) == 0 {
		return
	}
	q.addControl(&observerpb.GetFlowsResponse{
		NodeName: q.nodeName,
		Time:     timestamppb.Now(),
		ResponseTypes: &observerpb.GetFlowsResponse_NodeStatus{NodeStatus: &relaypb.NodeStatusEvent{
			StateChange: state, NodeNames: names, Message: msg,
		}},
	})
}

// lostEvents forwards a peer's lost-events response.
func (q *outQueue) lostEvents(r *observerpb.GetFlowsResponse) {
	q.stats.PeerEventsLost.Add(r.GetLostEvents().GetNumEventsLost())
	q.addControl(r)
}

func (q *outQueue) addControl(r *observerpb.GetFlowsResponse) {
	q.mu.Lock()
	if len(q.control) >= maxControl {
		if le := r.GetLostEvents(); le != nil {
			// Fold into the last queued lost event of the same source.
			for i := len(q.control) - 1; i >= 0; i-- {
				if prev := q.control[i].GetLostEvents(); prev != nil && prev.GetSource() == le.GetSource() {
					prev.NumEventsLost += le.GetNumEventsLost()
					prev.Last = le.GetLast()
					q.mu.Unlock()
					return
				}
			}
		}
	}
	q.control = append(q.control, r)
	q.mu.Unlock()
	signal(q.wake)
}

// close says that no more flows will come (non-follow requests).
func (q *outQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		signal(q.wake)
	}
}

func (q *outQueue) takeControl() []*observerpb.GetFlowsResponse {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := q.control
	q.control = nil
	return c
}

func (q *outQueue) lostResponse() *observerpb.GetFlowsResponse {
	n := q.lost.Swap(0)
	if n == 0 {
		return nil
	}
	return &observerpb.GetFlowsResponse{
		NodeName: q.nodeName,
		Time:     timestamppb.Now(),
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
			Source:        flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE,
			NumEventsLost: n,
			First:         timestamppb.New(time.Unix(0, q.firstLost.Load())),
			Last:          timestamppb.New(time.Unix(0, q.lastLost.Load())),
		}},
	}
}

// take hands the sender every queued flow, and whether the queue is closed.
func (q *outQueue) take() ([]*frame, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.flows
	q.flows, q.spare = q.spare[:0], nil
	q.sending = len(b)
	return b, q.closed
}

// sent returns the sender's batch for reuse and makes room for flows.
func (q *outQueue) sent(b []*frame) {
	clear(b)
	q.mu.Lock()
	q.spare, q.sending = b[:0], 0
	q.mu.Unlock()
	signal(q.room)
}

// run sends everything queued to the client until the queue is closed and
// empty, ctx ends, or send fails. send gets a *frame or a *GetFlowsResponse.
// Control responses queued before a flow are sent before it.
func (q *outQueue) run(ctx context.Context, send func(any) error) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	flushControl := func() error {
		for _, r := range q.takeControl() {
			if err := send(r); err != nil {
				return err
			}
		}
		if r := q.lostResponse(); r != nil {
			return send(r)
		}
		return nil
	}
	for {
		batch, closed := q.take()
		if err := flushControl(); err != nil {
			return err
		}
		for _, r := range batch {
			if err := send(r); err != nil {
				return err
			}
		}
		q.sent(batch)
		if len(batch) > 0 {
			continue
		}
		if closed {
			return flushControl()
		}
		select {
		case <-q.wake:
		case <-tick.C:
		case <-ctx.Done():
			return nil
		}
	}
}

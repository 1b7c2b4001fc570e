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
}

// maxControl bounds the node-status and forwarded lost-event responses
// waiting for a slow client; past it, lost events are folded together.
const maxControl = 1024

// outQueue sits between the merge and one client stream. Flows go through a
// bounded channel; in lossy (follow) mode a full channel drops the flow and
// counts it, and the count reaches the client as a LostEvent. Node statuses
// and lost events are never dropped.
type outQueue struct {
	ch       chan *frame
	lossy    atomic.Bool
	nodeName string
	stats    *Stats

	lost      atomic.Uint64
	firstLost atomic.Int64
	lastLost  atomic.Int64

	mu      sync.Mutex
	control []*observerpb.GetFlowsResponse
	wake    chan struct{}
	closed  bool
}

func newOutQueue(n int, lossy bool, nodeName string, stats *Stats) *outQueue {
	if stats == nil {
		stats = &Stats{}
	}
	q := &outQueue{ch: make(chan *frame, n), nodeName: nodeName, wake: make(chan struct{}, 1), stats: stats}
	q.lossy.Store(lossy)
	return q
}

// setLossy switches between blocking (history) and dropping (live) delivery.
func (q *outQueue) setLossy(v bool) { q.lossy.Store(v) }

// flow queues one flow; in ordered mode it blocks until there is room or
// ctx ends (false).
func (q *outQueue) flow(ctx context.Context, r *frame) bool {
	q.stats.FlowsMerged.Add(1)
	if q.lossy.Load() {
		select {
		case q.ch <- r:
		default:
			q.stats.FlowsDropped.Add(1)
			now := time.Now().UnixNano()
			if q.lost.Add(1) == 1 {
				q.firstLost.Store(now)
			}
			q.lastLost.Store(now)
		}
		return ctx.Err() == nil
	}
	select {
	case q.ch <- r:
		return true
	case <-ctx.Done():
		return false
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
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// close says that no more flows will come (non-follow requests).
func (q *outQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.ch)
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

// run sends everything queued to the client until the queue is closed and
// empty, ctx ends, or send fails. send gets a *frame or a *GetFlowsResponse.
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
		if err := flushControl(); err != nil {
			return err
		}
		select {
		case r, ok := <-q.ch:
			if !ok {
				return flushControl()
			}
			if err := send(r); err != nil {
				return err
			}
		case <-q.wake:
		case <-tick.C:
		case <-ctx.Done():
			return nil
		}
	}
}

package observer

import (
	"context"
	"errors"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/observer/history"
)

// historyCovers says whether a request from since needs the disk: the ring
// is empty or its oldest entry is newer than since.
func (o *Observer) historyCovers(since time.Time, head uint64) bool {
	if o.hist == nil || since.IsZero() {
		return false
	}
	r := o.ring
	for range 3 {
		old := r.oldest(head)
		if old >= head {
			return true
		}
		if e, _ := r.read(old); e != nil {
			return e.time().AsTime().After(since)
		}
		head = r.head.Load() // overwritten meanwhile: look again
	}
	return true
}

var errEnough = errors.New("enough flows")

// replayHistory streams the stored records of [since, until] and returns
// the ring sequence number where the stream goes on without a gap or a
// duplicate: after the last record of this run it sent, and never before
// what the writer had persisted when the read began (those entries were on
// disk, so the read saw every one of them in the range). limit > 0 stops
// after that many flows (done is then true). pre, if set, skips records
// before they are decoded (podPrefilter).
//
// A range that reaches past the retention first gets a LostEvent
// (HUBBLE_RING_BUFFER, as for a ring that overwrote them) with the number
// of removed records in it and their span in first/last.
func (o *Observer) replayHistory(ctx context.Context, send func(*observerpb.GetFlowsResponse) error,
	since, until time.Time, pre func([]byte) bool, match func(*flowpb.Flow) bool, mask fieldMask, limit uint64) (next, sent uint64, done bool, err error) {
	h := o.hist
	next = h.next.Load()
	var untilNs int64
	if !until.IsZero() {
		untilNs = until.UnixNano()
	}
	if n, first, last := h.store.Expired(since.UnixNano()); n > 0 {
		ft, lt := timestamppb.New(time.Unix(0, first)), timestamppb.New(time.Unix(0, last))
		if err := send(&observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
				Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: n, First: ft, Last: lt,
			}},
			NodeName: o.cfg.NodeName,
			Time:     ft,
		}); err != nil {
			return 0, 0, false, err
		}
	}
	err = h.store.Scan(ctx, since.UnixNano(), untilNs, func(rec *history.Record) error {
		if rec.Run == h.run {
			next = max(next, rec.Seq+1)
		}
		at := timestamppb.New(time.Unix(0, rec.Time))
		if rec.Kind == history.KindLost {
			le := &flowpb.LostEvent{}
			if err := proto.Unmarshal(rec.Data, le); err != nil {
				return nil
			}
			return send(&observerpb.GetFlowsResponse{
				ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: le},
				NodeName:      o.cfg.NodeName,
				Time:          at,
			})
		}
		if pre != nil && !pre(rec.Data) {
			return nil
		}
		f := &flowpb.Flow{}
		if err := proto.Unmarshal(rec.Data, f); err != nil {
			o.log.Warn("history record unreadable", "error", err)
			return nil
		}
		if !match(f) {
			return nil
		}
		out := f
		if mask != nil {
			out = mask.apply(f)
		}
		if err := send(&observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: out},
			NodeName:      f.GetNodeName(),
			Time:          f.GetTime(),
		}); err != nil {
			return err
		}
		sent++
		if limit > 0 && sent >= limit {
			return errEnough
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		return next, sent, true, nil
	}
	return next, sent, false, err
}

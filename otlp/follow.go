package otlp

import (
	"context"
	"io"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Follow feeds the exporter from an Observer API's follow stream (the
// relay's own, read in process) until ctx ends, whether or not any other
// client reads it. A broken stream is reopened from the last flow's time;
// lost events in the stream count as dropped flows (upstream_lost).
func (e *Exporter) Follow(ctx context.Context, c observerpb.ObserverClient) error {
	var since *timestamppb.Timestamp
	for ctx.Err() == nil {
		err := e.follow(ctx, c, &since)
		if ctx.Err() != nil {
			return nil
		}
		e.cfg.Log.Warn("otlp: flow stream ended; reopening", "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
	return nil
}

func (e *Exporter) follow(ctx context.Context, c observerpb.ObserverClient, since **timestamppb.Timestamp) error {
	stream, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true, Since: *since})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if f := resp.GetFlow(); f != nil {
			e.Flow(f)
			if t := f.GetTime(); t != nil {
				// Resume just after it: flows of the same nanosecond from
				// other nodes are rare, duplicates of this one certain.
				*since = timestamppb.New(t.AsTime().Add(time.Nanosecond))
			}
		} else if l := resp.GetLostEvents(); l != nil {
			e.Lost(l.GetNumEventsLost())
		}
	}
}

package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/loupe-project/loupe/datapath"
)

// lostEventsPoll is how often the agent reads the datapath's counts of
// events it could not hand over, to report new losses to the observer. The
// counts live in a map, not in the stream, so they are polled.
const lostEventsPoll = time.Second

// lostSink is where losses are reported: the Observer, which turns each
// report into a LostEvent in the flow stream.
type lostSink interface {
	AddLostEvents(n uint64)
	AddRateLimitedDropEvents(n uint64)
}

// forwardLostEvents reads the datapath's loss counts every interval and
// reports what each grew by to sink, until ctx ends: events the full ring
// buffer refused, and drop events the rate limit held back. The counts
// are pinned and survive agent restarts, so losses from before this start
// are taken as the baseline rather than reported again.
func forwardLostEvents(ctx context.Context, stats func() (datapath.EventStats, error), sink lostSink, every time.Duration, log *slog.Logger) error {
	var last datapath.EventStats
	haveBase := false
	read := func() {
		cur, err := stats()
		if err != nil {
			log.Warn("lost events: read the datapath counts", "err", err)
			return
		}
		if haveBase {
			if cur.Lost > last.Lost {
				sink.AddLostEvents(cur.Lost - last.Lost)
			}
			if cur.DropEventsLimited > last.DropEventsLimited {
				sink.AddRateLimitedDropEvents(cur.DropEventsLimited - last.DropEventsLimited)
			}
		}
		last, haveBase = cur, true
	}
	read()
	return repeat(ctx, every, read)
}

// repeat calls f every interval until ctx ends.
func repeat(ctx context.Context, every time.Duration, f func()) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			f()
		}
	}
}

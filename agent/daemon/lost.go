package daemon

import (
	"context"
	"log/slog"
	"time"
)

// lostEventsPoll is how often the agent reads the datapath's count of
// events the full ring buffer refused, to report new losses to the
// observer. The count lives in a map, not in the stream, so it is polled.
const lostEventsPoll = time.Second

// forwardLostEvents reads the datapath's lost-event count every interval
// and hands what it grew by to sink, until ctx ends. The count is pinned
// and survives agent restarts, so losses from before this start are taken
// as the baseline rather than reported again.
func forwardLostEvents(ctx context.Context, lost func() (uint64, error), sink func(n uint64), every time.Duration, log *slog.Logger) error {
	var last uint64
	haveBase := false
	read := func() {
		cur, err := lost()
		if err != nil {
			log.Warn("lost events: read the datapath count", "err", err)
			return
		}
		if haveBase && cur > last {
			sink(cur - last)
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

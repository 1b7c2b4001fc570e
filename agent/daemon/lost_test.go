package daemon

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// The observer hears of each loss once, as the growth of the datapath's
// count since the last read; losses before the start and failed reads are
// not reported as new losses.
func TestForwardLostEvents(t *testing.T) {
	// Successive reads of the count: a failed first read, then 5 from
	// before the start (the pinned map kept it: the baseline), growth, a
	// failed read, no change, growth again.
	gone := errors.New("map gone")
	reads := []struct {
		n   uint64
		err error
	}{{0, gone}, {5, nil}, {5, nil}, {8, nil}, {0, gone}, {8, nil}, {20, nil}}
	var mu sync.Mutex
	var got []uint64
	i := 0
	ctx, cancel := context.WithCancel(context.Background())
	lost := func() (uint64, error) {
		mu.Lock()
		defer mu.Unlock()
		if i == len(reads) {
			cancel()
			return 20, nil
		}
		r := reads[i]
		i++
		return r.n, r.err
	}
	sink := func(n uint64) { mu.Lock(); got = append(got, n); mu.Unlock() }
	if err := forwardLostEvents(ctx, lost, sink, time.Millisecond, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, []uint64{3, 12}) {
		t.Fatalf("reported %v, want [3 12]", got)
	}
}

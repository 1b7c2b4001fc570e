package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/loupe-project/loupe/agent/internal/atomicfile"
	"github.com/loupe-project/loupe/datapath"
)

// lostEventsPoll is how often the agent reads the datapath's counts of
// events it could not hand over, to report new losses to the observer. The
// counts live in a map, not in the stream, so they are polled.
const lostEventsPoll = time.Second

// lostEventsStateFile, in the state dir, holds the datapath's loss counts
// as last reported to the observer.
const lostEventsStateFile = "lost-events.json"

// lostStateVersion is the layout version of lostEventsStateFile.
const lostStateVersion = 1

// lostSink is where losses are reported: the Observer, which turns each
// report into a LostEvent in the flow stream.
type lostSink interface {
	AddLostEvents(n uint64)
	AddRateLimitedDropEvents(n uint64)
}

// lostState is the on-disk form of the counts last reported.
type lostState struct {
	Version int `json:"version"`
	// RingBufferFull is event_stats slot 0 (datapath.EventStats.Lost).
	RingBufferFull uint64 `json:"ringBufferFull"`
	// DropEventsRateLimited is slot 1 (EventStats.DropEventsLimited).
	DropEventsRateLimited uint64 `json:"dropEventsRateLimited"`
}

// forwardLostEvents reads the datapath's loss counts every interval and
// reports what each grew by to sink, until ctx ends: events the full ring
// buffer refused, and drop events the rate limit held back.
//
// The counts are pinned and keep growing while no agent runs. So that
// those losses are reported too, the counts last reported are kept in
// statePath and the first read after a start reports the growth since
// then. Without a usable file (the first start, or a corrupt one) the
// counts at the first read are the baseline, as nothing better is known.
func forwardLostEvents(ctx context.Context, stats func() (datapath.EventStats, error), sink lostSink, statePath string, every time.Duration, log *slog.Logger) error {
	r := &lostReporter{stats: stats, sink: sink, path: statePath, log: log}
	r.load()
	r.poll()
	return repeat(ctx, every, r.poll)
}

// lostReporter is the state of forwardLostEvents.
type lostReporter struct {
	stats func() (datapath.EventStats, error)
	sink  lostSink
	path  string
	log   *slog.Logger

	last     lostState // counts reported so far
	haveBase bool      // last is known, from the file or a read
	saved    lostState // what the file holds
	haveSave bool
	failing  bool // the last write failed (logged once until it works)
}

// load takes the counts last reported from the state file. It never
// fails: a missing or unreadable file only costs the losses while no
// agent ran, which is logged.
func (r *lostReporter) load() {
	b, err := os.ReadFile(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		r.log.Info("lost events: no record of losses reported before; counting from the datapath's current counts", "file", r.path)
		return
	}
	if err == nil {
		var st lostState
		if st, err = parseLostState(b); err == nil {
			r.last, r.saved, r.haveBase, r.haveSave = st, st, true, true
			return
		}
	}
	r.log.Warn("lost events: cannot use the record of losses reported before; losses while no agent ran are not reported, counting from the datapath's current counts",
		"file", r.path, "err", err)
}

func parseLostState(b []byte) (lostState, error) {
	var st lostState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return st, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return st, errors.New("decode: trailing data after the state object")
	}
	if st.Version != lostStateVersion {
		return st, fmt.Errorf("unsupported version %d (want %d)", st.Version, lostStateVersion)
	}
	return st, nil
}

// poll reads the counts, reports their growth, then records them. In
// that order a crash in between reports a loss twice rather than never.
func (r *lostReporter) poll() {
	st, err := r.stats()
	if err != nil {
		r.log.Warn("lost events: read the datapath counts", "err", err)
		return
	}
	cur := lostState{Version: lostStateVersion, RingBufferFull: st.Lost, DropEventsRateLimited: st.DropEventsLimited}
	if r.haveBase {
		if n := r.growth("ring_buffer_full", cur.RingBufferFull, r.last.RingBufferFull); n > 0 {
			r.sink.AddLostEvents(n)
		}
		if n := r.growth("drop_events_rate_limited", cur.DropEventsRateLimited, r.last.DropEventsRateLimited); n > 0 {
			r.sink.AddRateLimitedDropEvents(n)
		}
	}
	r.last, r.haveBase = cur, true
	if r.haveSave && r.saved == cur {
		return
	}
	if err := r.save(cur); err != nil {
		// Retried at the next poll; until then a restart would report
		// these losses again.
		if !r.failing {
			r.log.Warn("lost events: record the counts reported; retrying", "file", r.path, "err", err)
		}
		r.failing = true
		return
	}
	if r.failing {
		r.log.Info("lost events: recording the counts reported works again", "file", r.path)
	}
	r.saved, r.haveSave, r.failing = cur, true, false
}

// growth is how much a count grew since it was last reported. A count
// lower than the one reported means the pinned map was recreated (an
// upgrade changed its layout, or the pins were removed) after the last
// report, so all of the new count is new losses; what the old map gained
// between the last report and its removal is unknown.
func (r *lostReporter) growth(name string, cur, last uint64) uint64 {
	if cur >= last {
		return cur - last
	}
	r.log.Warn("lost events: a datapath count went back, so its map was recreated; reporting its count in full, losses between the last report and the recreation are unknown",
		"count", name, "reported", last, "now", cur)
	return cur
}

func (r *lostReporter) save(st lostState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode lost events: %w", err)
	}
	if err := atomicfile.Write(r.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write lost events: %w", err)
	}
	return nil
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

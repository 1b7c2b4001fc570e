package observer

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/loupe-project/loupe/observer/flowwire"
	"github.com/loupe-project/loupe/observer/history"
)

// The history writer is one more reader of the flow ring: the decoder never
// waits for the disk. It polls rather than waits on the ring's channel, so
// the ring's writer does not pay a wake-up per flow for it.
const (
	historyBatch   = 4096                   // records per block at most
	historyFlush   = 200 * time.Millisecond // a batch is written at least this often
	historyPoll    = 10 * time.Millisecond  // how often a caught-up writer looks again
	historyEnforce = time.Minute            // retention check while idle
)

// historyState is the observer's side of the on-disk history.
type historyState struct {
	store *history.Store
	// run tells this run's records from those of earlier runs, whose
	// sequence numbers mean nothing to this ring.
	run uint64
	// next is the ring sequence number the writer has persisted up to
	// (exclusive): every entry before it is on disk or recorded as lost.
	next atomic.Uint64

	// blocks are the writer's last blocks, for FlowBatches followers
	// behind it (flowblocks.go).
	blocks recentBlocks

	lost    prometheus.Counter
	written prometheus.Counter
	bytes   prometheus.GaugeFunc
}

func newHistoryState(s *history.Store, reg prometheus.Registerer) *historyState {
	h := &historyState{
		store: s,
		run:   rand.Uint64() | 1,
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Name: "history_lost_total",
			Help: "Flows that reached the ring but not the on-disk history (the writer fell behind or the disk failed)",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Name: "history_records_total",
			Help: "Flows and lost events written to the on-disk history",
		}),
		bytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "loupe", Name: "history_bytes",
			Help: "Size of the on-disk flow history",
		}, func() float64 { return float64(s.Size()) }),
	}
	blockFlows := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "loupe", Name: "history_block_flows_total",
		Help: "Flows and lost events sent to FlowBatches followers within the history's blocks rather than one by one",
	}, func() float64 { return float64(h.blocks.flowsSent.Load()) })
	reg.MustRegister(h.lost, h.written, h.bytes, blockFlows)
	return h
}

// writeHistory copies the ring to the store in batches until ctx is done,
// then writes what is left and closes the store.
func (o *Observer) writeHistory(ctx context.Context) error {
	h := o.hist
	defer h.store.Close()
	r := o.ring
	seq := h.next.Load()
	enc := flowwire.NewEncoder().SkipUnknownFields() // the decoder's flows have none
	var (
		recs        []history.Record
		arena       []byte
		pendingLost uint64
		lastFlush   = time.Now()
		lastEnforce = time.Now()
		failing     bool
		// The batch's records cover the ring from batchFirst to seq,
		// unless a flow that failed to encode left a gap (shareable
		// false): only then is its block whole for a follower.
		batchFirst = seq
		shareable  = true
		lapped     bool // the batch has a lost record of a ring lap
	)
	flush := func() {
		if len(recs) == 0 {
			return
		}
		if pendingLost > 0 {
			// Flows a failed write dropped: say so before what follows.
			recs = append([]history.Record{lostRecordOf(pendingLost, recs[0].Seq, time.Now(), flowpb.LostEventSource_UNKNOWN_LOST_EVENT_SOURCE)}, recs...)
		}
		var written func([]byte)
		if shareable && pendingLost == 0 && h.blocks.wanted() {
			first, end, n := batchFirst, seq, 0
			minT := recs[0].Time
			for i := range recs {
				minT = min(minT, recs[i].Time)
			}
			written = func(b []byte) {
				if n++; n == 1 { // a batch of over maxBlockRecords is not one block
					h.blocks.keep(first, end, minT, lapped, b, r.oldest(r.head.Load()))
				}
			}
		}
		if err := h.store.AppendEach(h.run, recs, written); err != nil {
			if !failing {
				o.log.Error("history write failed; flows stay in the ring only until it succeeds", "error", err)
			}
			failing = true
			for _, rc := range recs {
				if rc.Kind == history.KindFlow {
					pendingLost++
				}
			}
			h.lost.Add(float64(len(recs)))
		} else {
			if failing {
				o.log.Info("history write recovered")
			}
			failing, pendingLost = false, 0
			h.written.Add(float64(len(recs)))
		}
		h.next.Store(seq)
		recs, arena = recs[:0], arena[:0]
		batchFirst, shareable, lapped = seq, true, false
		lastFlush = time.Now()
	}
	for {
		e, lost := r.read(seq)
		switch {
		case e == nil && lost > 0:
			// The ring lapped the writer: these flows reach no disk. The
			// record carries the last sequence number it covers, so a
			// reader continues in the ring after it.
			h.lost.Add(float64(lost))
			recs = append(recs, lostRecordOf(lost, seq+lost-1, time.Now(), flowpb.LostEventSource_HUBBLE_RING_BUFFER))
			lapped = true
			seq += lost
		case e != nil:
			rec := history.Record{Kind: history.KindFlow, Seq: seq, Time: timeNs(e)}
			start := len(arena)
			var err error
			switch w := e.wire.Swap(wireTaken); {
			case w != nil && w != wireTaken: // a follower wrote it already
				rec.Data = *w
			case e.lost != nil:
				rec.Kind = history.KindLost
				arena, err = proto.MarshalOptions{}.MarshalAppend(arena, &e.lost.event)
			default:
				arena, err = enc.Append(arena, e.flow)
			}
			seq++
			if err != nil {
				h.lost.Inc()
				arena = arena[:start]
				shareable = false
				continue
			}
			if rec.Data == nil {
				rec.Data = arena[start:len(arena):len(arena)]
			}
			recs = append(recs, rec)
			// A batch ends at historyBatch records or historyFlush, also
			// while the ring keeps the writer busy: that bounds what a
			// crash can lose.
			if len(recs) >= historyBatch || (len(recs)%256 == 0 && time.Since(lastFlush) >= historyFlush) {
				flush()
			}
			continue
		}
		if len(recs) > 0 && time.Since(lastFlush) >= historyFlush {
			flush()
		} else if len(recs) == 0 {
			h.next.Store(seq) // nothing pending: every entry before seq is persisted
		}
		if time.Since(lastEnforce) >= historyEnforce {
			lastEnforce = time.Now()
			if err := h.store.Enforce(); err != nil {
				o.log.Warn("history retention", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			// Write what the ring holds now, then stop. Entries it skips
			// get no record, so its block is no follower's.
			shareable = false
			for head := r.head.Load(); seq < head; {
				e, lost := r.read(seq)
				if e == nil {
					seq += max(lost, 1)
					continue
				}
				if w := e.wire.Swap(wireTaken); w != nil && w != wireTaken {
					recs = append(recs, history.Record{Kind: history.KindFlow, Seq: seq, Time: timeNs(e), Data: *w})
				} else if e.flow != nil {
					if b, err := enc.Append(nil, e.flow); err == nil {
						recs = append(recs, history.Record{Kind: history.KindFlow, Seq: seq, Time: timeNs(e), Data: b})
					}
				}
				seq++
			}
			flush()
			return nil
		case <-time.After(historyPoll):
		}
	}
}

// lostRecordOf is a LostEvent record for the history.
func lostRecordOf(n, seq uint64, at time.Time, src flowpb.LostEventSource) history.Record {
	data, _ := proto.Marshal(&flowpb.LostEvent{Source: src, NumEventsLost: n})
	return history.Record{Kind: history.KindLost, Seq: seq, Time: at.UnixNano(), Data: data}
}

func timeNs(e *entry) int64 {
	t := e.time()
	return t.GetSeconds()*1e9 + int64(t.GetNanos())
}

// HistoryCaughtUp reports whether the history holds every entry of the
// ring (true without a history): for tests and tools that must not race
// the writer.
func (o *Observer) HistoryCaughtUp() bool {
	return o.hist == nil || o.hist.next.Load() >= o.ring.head.Load()
}

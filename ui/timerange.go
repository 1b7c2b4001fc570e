package ui

import (
	"context"
	"errors"
	"io"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/loupe-project/loupe/observer/aggregate"
)

// A browser's time range: "the last 6 hours" instead of live traffic. The
// map of a range is built from the relay's per-edge aggregates over the
// agents' flow history (GetFlows with the loupe-aggregate header), so a
// range costs one query and one edge per (source, destination, port,
// protocol, verdict), not its flows. A range's map is fixed: live deltas
// do not apply to it until the browser asks for live again.
const (
	maxRange     = 30 * 24 * time.Hour
	rangeTimeout = 60 * time.Second
)

// RangeView tells a browser which range its map shows.
type RangeView struct {
	Since int64  `json:"since"` // unix ms
	Until int64  `json:"until"`
	Edges int    `json:"edges"`
	Flows uint64 `json:"flows"`
	// Lost counts flows the range could not return (past the agents'
	// retention, or lost before they were written).
	Lost    uint64 `json:"lost"`
	Loading bool   `json:"loading,omitempty"`
	Error   string `json:"error,omitempty"`
}

// setRangeLocked switches c to the range of the last seconds (0: live) and
// starts its query.
func (s *Server) setRangeLocked(c *client, seconds int64) {
	c.rangeSeq++
	if seconds <= 0 {
		c.rng = nil
		c.sendRaw(s.snapshotLocked(c))
		return
	}
	d := min(time.Duration(seconds)*time.Second, maxRange)
	until := time.Now()
	since := until.Add(-d)
	c.rng = &RangeView{Since: since.UnixMilli(), Until: until.UnixMilli(), Loading: true}
	c.send(message{Type: "range", Range: c.rng})
	seq := c.rangeSeq
	go func() {
		agg, rv := s.rangeMap(since, until)
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.clients[c]; !ok || c.rangeSeq != seq {
			return // gone, or asked for something else since
		}
		c.rng = rv
		st := s.statusLocked()
		c.lastStatus = st
		if rv.Error != "" {
			c.send(message{Type: "range", Range: rv, Status: &st})
			return
		}
		snap := agg.Snapshot()
		c.send(message{Type: "snapshot", Map: &snap, Status: &st, Range: rv})
	}()
}

// rangeMap folds the relay's aggregates of [since, until] into a map.
func (s *Server) rangeMap(since, until time.Time) (*Aggregator, *RangeView) {
	rv := &RangeView{Since: since.UnixMilli(), Until: until.UnixMilli()}
	agg := NewAggregator(s.cfg.Aggregator)
	ctx, cancel := context.WithTimeout(aggregate.Ask(context.Background()), rangeTimeout)
	defer cancel()
	st, err := s.cfg.Flows(ctx, &observerpb.GetFlowsRequest{Since: timestampOf(since), Until: timestampOf(until)})
	for err == nil {
		var resp *observerpb.GetFlowsResponse
		resp, err = st.Recv()
		if err != nil {
			break
		}
		if f := resp.GetFlow(); f != nil {
			agg.AddAggregate(f)
			rv.Edges++
		}
		if l := resp.GetLostEvents(); l != nil {
			rv.Lost += l.GetNumEventsLost()
		}
	}
	if !errors.Is(err, io.EOF) {
		rv.Error = err.Error()
	}
	rv.Flows, _ = agg.Counts()
	return agg, rv
}

// rangeTickLocked keeps a browser on a past range informed of the
// connection state; its map and flow rows stay as they are.
func (s *Server) rangeTickLocked(c *client, st Status) {
	c.rows, c.skipped, c.resync = nil, 0, false
	if sameStatus(st, c.lastStatus) {
		return
	}
	c.lastStatus = st
	c.send(message{Type: "tick", Status: &st})
}

// AddAggregate folds one per-edge aggregate (package aggregate) into the
// map with its counts; a plain flow (a server that does not aggregate)
// counts as one.
func (a *Aggregator) AddAggregate(f *flowpb.Flow) {
	x, ok := aggregate.Of(f)
	e := a.Add(f)
	if !ok || x.Flows == 0 {
		return
	}
	more := x.Flows - 1
	e.flows += more
	a.flows += more
	e.key.src.flowsOut += more
	e.key.dst.flowsIn += more
	if v := f.GetVerdict(); int(v) < len(e.verdicts) {
		e.verdicts[v] += more
		if v == flowpb.Verdict_DROPPED {
			a.drops += more
			e.key.src.drops += more
		}
	}
	if !x.First.IsZero() {
		e.first = min(e.first, x.First.UnixNano())
	}
	if x.L7Flows > 0 {
		l := e.l7
		if l == nil {
			l = &edgeL7{}
			e.l7 = l
		}
		l.protocol = x.L7Protocol
		l.responses += x.L7Responses
		l.requests += x.L7Flows - x.L7Responses
		l.errors += x.L7Errors
		l.latSum += x.L7LatencySum
		l.latMax = max(l.latMax, x.L7LatencyMax)
	}
	if x.BytesSent+x.BytesReceived+x.Conns > 0 {
		tr := e.traffic
		if tr == nil {
			tr = &edgeTraffic{winStart: e.last, now: e.last}
			e.traffic = tr
		}
		tr.bytesSent += x.BytesSent
		tr.bytesRecv += x.BytesReceived
		tr.pktSent += x.PktSent
		tr.pktRecv += x.PktReceived
		tr.conns += x.Conns
	}
}

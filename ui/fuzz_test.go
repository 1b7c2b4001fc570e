package ui

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// wedged is how long one request may take before the fuzz calls the server
// stuck: handling one takes microseconds.
const wedged = 5 * time.Second

// FuzzRequest feeds a browser's message, as the websocket reads it, to the
// server's handling of it: whatever a page sends must neither panic nor
// wedge the server (the request returns in time and leaves the lock free),
// and a filter shows the remembered flows that the live feed would let
// through for the same filter, no more, no fewer.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"type":"filter","filter":{"ns":["demo"],"verdict":"DROPPED","proto":"TCP","port":5432,"q":"app=db"}}`))
	f.Add([]byte(`{"type":"filter","filter":{"from":"demo/frontend","to":"demo/api","edge":"x","node":"demo/db"}}`))
	f.Add([]byte(`{"type":"filter","filter":{"from":"demo/frontend","to":"demo/db"}}`))
	f.Add([]byte(`{"type":"filter","filter":{"node":"shop/cache","proto":"tcp","port":6379}}`))
	f.Add([]byte(`{"type":"filter","filter":{"q":"10.0.1.1"}}`))
	f.Add([]byte(`{"type":"filter","filter":{"q":"FRONTEND"}} trailing`))
	f.Add([]byte(`{"type":"filter","filter":{"edge":"demo/frontend|demo/db|5432/TCP","q":"app=FRONTEND"}}`))
	f.Add([]byte(`{"type":"pause"}`))
	f.Add([]byte(`{"type":"resume"}`))
	f.Add([]byte(`{"type":"filter","filter":{"port":-1,"q":"\u0000"}}`))
	a := NewAggregator(AggregatorConfig{})
	fe, db := pod("demo", "frontend", "", "k8s:app=frontend"), pod("demo", "db", "db", "k8s:app=db")
	cache := pod("shop", "cache-0", "cache", "k8s:app=cache")
	flows := []*flowpb.Flow{
		tcpFlow(fe, db, 1, 5432, flowpb.Verdict_DROPPED, 0),
		reply(tcpFlow(fe, db, 2, 5432, flowpb.Verdict_FORWARDED, 1)),
		tcpFlow(db, cache, 3, 6379, flowpb.Verdict_FORWARDED, 2),
		{},
	}
	var edges []*edge
	for _, fl := range flows {
		edges = append(edges, a.Add(fl))
	}
	s := &Server{agg: a, recent: make([]FlowRow, recentRows)}
	for i, fl := range flows {
		s.recent[i] = newRow(fl, edges[i])
	}
	s.recentN = len(flows)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req request
		// As conn.ReadJSON: the first JSON value of the message.
		if json.NewDecoder(bytes.NewReader(b)).Decode(&req) != nil {
			return
		}
		c := &client{out: make(chan []byte, sendQueue), paused: req.Type == "resume", rows: []FlowRow{{}}}
		before := *c
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.handle(c, &req)
		}()
		select {
		case <-done:
		case <-time.After(wedged):
			t.Fatalf("%q: not handled after %v", b, wedged)
		}
		if !s.mu.TryLock() {
			t.Fatalf("%q: the server stays locked", b)
		}
		s.mu.Unlock()

		switch req.Type {
		case "filter":
			if len(c.out) != 1 {
				t.Fatalf("%q: %d messages, want 1", b, len(c.out))
			}
			var m message
			if err := json.Unmarshal(<-c.out, &m); err != nil || m.Type != "flows" {
				t.Fatalf("%q: message %+v, %v", b, m, err)
			}
			var want []FlowRow
			for i, fl := range flows {
				if req.Filter.match(fl, edges[i]) {
					want = append(want, s.recent[i])
				}
			}
			if !slices.Equal(m.Rows, want) {
				t.Fatalf("%q: the history shows\n%+v\nthe live feed would show\n%+v", b, m.Rows, want)
			}
			if !reflect.DeepEqual(c.filter, req.Filter) || c.rows != nil {
				t.Fatalf("%q: client filter %+v, rows %v", b, c.filter, c.rows)
			}
		case "pause", "resume":
			if len(c.out) != 0 || c.paused != (req.Type == "pause") {
				t.Fatalf("%q: paused %v, %d messages", b, c.paused, len(c.out))
			}
		default:
			if len(c.out) != 0 || c.paused != before.paused || len(c.rows) != 1 {
				t.Fatalf("%q: an unknown request changed the client", b)
			}
		}
	})
}

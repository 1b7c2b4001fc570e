package ui

import (
	"encoding/json"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// FuzzRequest feeds a browser's message, as the websocket reads it, to the
// filters: whatever a page sends must neither panic nor wedge the server.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"type":"filter","filter":{"ns":["demo"],"verdict":"DROPPED","proto":"TCP","port":5432,"q":"app=db"}}`))
	f.Add([]byte(`{"type":"filter","filter":{"from":"demo/frontend","to":"demo/api","edge":"x","node":"demo/db"}}`))
	f.Add([]byte(`{"type":"pause"}`))
	f.Add([]byte(`{"type":"filter","filter":{"port":-1,"q":"\u0000"}}`))
	a := NewAggregator(AggregatorConfig{})
	fe, db := pod("demo", "frontend", "", "k8s:app=frontend"), pod("demo", "db", "db", "k8s:app=db")
	flows := []*flowpb.Flow{tcpFlow(fe, db, 1, 5432, flowpb.Verdict_DROPPED, 0), reply(tcpFlow(fe, db, 2, 5432, flowpb.Verdict_FORWARDED, 1)), {}}
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
		if json.Unmarshal(b, &req) != nil {
			return
		}
		for i, fl := range flows {
			req.Filter.match(fl, edges[i])
		}
		s.recentLocked(&req.Filter)
	})
}

package ui

import (
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/observer/aggregate"
)

// httpExchange is an HTTP request and its response as loupe's observer
// emits them at the client's veth: observer's TestL7HTTPFlows builds the
// same from L7 records, test/e2e's TestPrivilegedL7HTTP from the real datapath
// (type L7, event type 129, the response a reply carrying the request's
// method and URL and the latency).
func httpExchange(client, server *flowpb.Endpoint, sport uint32, at time.Time, method, path string, code uint32, latency time.Duration) []*flowpb.Flow {
	url := "http://web:80" + path
	base := func(src, dst *flowpb.Endpoint, s, d uint32, t time.Time, reply bool) *flowpb.Flow {
		return l7Flow(src, dst, "10.0.0.1", "10.0.1.1", &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: s, DestinationPort: d}}}, t, reply)
	}
	req := base(client, server, sport, 80, at, false)
	req.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Method: method, Url: url, Protocol: "HTTP/1.1"}}}
	resp := base(server, client, 80, sport, at.Add(latency), true)
	resp.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: uint64(latency),
		Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Code: code, Method: method, Url: url, Protocol: "HTTP/1.1"}}}
	return []*flowpb.Flow{req, resp}
}

// l7Flow is an L7 flow's frame as the observer emits it; client and server
// are the client's and server's addresses, swapped on a reply.
func l7Flow(src, dst *flowpb.Endpoint, client, server string, l4 *flowpb.Layer4, t time.Time, reply bool) *flowpb.Flow {
	sip, dip := client, server
	if reply {
		sip, dip = dip, sip
	}
	return &flowpb.Flow{Time: timestamppb.New(t), Verdict: flowpb.Verdict_FORWARDED, NodeName: "node-1", Type: flowpb.FlowType_L7,
		Source: src, Destination: dst, IP: &flowpb.IP{Source: sip, Destination: dip}, L4: l4,
		EventType: &flowpb.CiliumEventType{Type: contract.MessageTypeAccessLog}, IsReply: wrapperspb.Bool(reply)}
}

// l7Flows: 100 exchanges client -> web over 10 s: GET /ok (80, 2 ms), GET
// /status/500 (10, 500), POST /delay/200 (10, 200 ms).
func l7Flows(now time.Time) []*flowpb.Flow {
	client, web := pod("x", "client-1", "client"), pod("x", "web-1", "web")
	var out []*flowpb.Flow
	for i := range 100 {
		at := now.Add(-10*time.Second + time.Duration(i)*100*time.Millisecond)
		switch {
		case i%10 == 3:
			out = append(out, httpExchange(client, web, uint32(40000+i), at, "GET", "/status/500", 500, 3*time.Millisecond)...)
		case i%10 == 7:
			out = append(out, httpExchange(client, web, uint32(40000+i), at, "POST", "/delay/200", 200, 200*time.Millisecond)...)
		default:
			out = append(out, httpExchange(client, web, uint32(40000+i), at, "GET", "/ok", 200, 2*time.Millisecond)...)
		}
	}
	return out
}

func TestEdgeL7(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	now := time.Now()
	for _, f := range l7Flows(now) {
		a.Add(f)
	}
	a.Decay(now)
	d := a.Flush()
	l := edgeByID(t, d, "x/client|x/web|80/TCP").L7
	if l == nil {
		t.Fatal("no L7 on the edge")
	}
	if l.Protocol != "HTTP" || l.Requests != 100 || l.Responses != 100 || l.Errors != 10 || l.ErrorRate != 0.1 {
		t.Errorf("L7 %+v", l)
	}
	if l.RequestsPerSec < 9 || l.RequestsPerSec > 11 {
		t.Errorf("rate %.2f req/s, want about 10", l.RequestsPerSec)
	}
	if l.P50 < 2/1.5 || l.P50 > 2*1.5 || l.P99 < 200/1.5 || l.P99 > 200*1.5 {
		t.Errorf("p50 %.3f ms p99 %.3f ms, want about 2 and 200", l.P50, l.P99)
	}
	want := []PathView{{Path: "GET /ok", Count: 80}, {Path: "GET /status/500", Count: 10, Errors: 10}, {Path: "POST /delay/200", Count: 10}}
	if len(l.Paths) != 3 {
		t.Fatalf("paths %+v", l.Paths)
	}
	for i, w := range want {
		if g := l.Paths[i]; g.Path != w.Path || g.Count != w.Count || g.Errors != w.Errors {
			t.Errorf("path %d = %+v, want %+v", i, g, w)
		}
	}
	if p := l.Paths[2].P50; p < 200/1.5 || p > 200*1.5 {
		t.Errorf("/delay/200 p50 %.1f ms", p)
	}
	// A minute later, with no flows, the rate fades and the edge is sent again.
	a.Decay(now.Add(time.Minute))
	if l := edgeByID(t, a.Flush(), "x/client|x/web|80/TCP").L7; l.RequestsPerSec != 0 || l.Requests != 100 {
		t.Errorf("after a quiet minute: %+v", l)
	}
}

// Past maxPaths, paths are counted, not kept: memory stays bounded.
func TestEdgeL7PathsBounded(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	client, web := pod("x", "client-1", "client"), pod("x", "web-1", "web")
	for i := range 100 {
		for _, f := range httpExchange(client, web, 40000, t0.Add(time.Duration(i)*time.Millisecond), "GET", "/p/"+itoa(uint64(i)), 200, time.Millisecond) {
			a.Add(f)
		}
	}
	l := edgeByID(t, a.Flush(), "x/client|x/web|80/TCP").L7
	if len(l.Paths) != shownPaths || l.MorePaths != 100-shownPaths {
		t.Errorf("%d paths shown, %d more; want %d and %d", len(l.Paths), l.MorePaths, shownPaths, 100-shownPaths)
	}
}

// A past range's map: the relay's per-edge aggregates folded in keep the
// flow counts, the L7 totals and the bytes of the flows they sum.
func TestAddAggregate(t *testing.T) {
	now := time.Now()
	flows := append(l7Flows(now), trafficFlows(t, now)...)
	live := NewAggregator(AggregatorConfig{})
	set := aggregate.NewSet()
	for _, f := range flows {
		live.Add(f)
		set.Add(f)
	}
	past := NewAggregator(AggregatorConfig{})
	for _, e := range set.Edges() {
		past.AddAggregate(e.Flow("relay"))
	}
	if lf, _ := live.Counts(); lf != uint64(len(flows)) {
		t.Fatalf("live map counted %d flows of %d", lf, len(flows))
	}
	if pf, _ := past.Counts(); pf != uint64(len(flows)) {
		t.Errorf("range map counted %d flows, want %d", pf, len(flows))
	}
	d := past.Flush()
	l := edgeByID(t, d, "x/client|x/web|80/TCP").L7
	if l == nil || l.Protocol != "HTTP" || l.Requests != 100 || l.Responses != 100 || l.Errors != 10 || l.Mean < 20 || l.Mean > 25 || l.Max != 200 {
		t.Errorf("range L7 %+v, want 100 requests and responses, 10 errors, mean 21.7 ms, max 200 ms", l)
	}
	tr := edgeByID(t, d, "x/client|y/db|5432/TCP").Traffic
	if tr == nil || tr.BytesSent != 100e6 || tr.BytesReceived != 60e3 || tr.Connections != 1 {
		t.Errorf("range traffic %+v, want the bulk connection's 100 MB once", tr)
	}
}

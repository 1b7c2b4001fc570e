package ui

import (
	"math"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/contract"
)

// withConn gives a flow a connection's totals, as the observer does
// (observer's TestConnectionExtension from a record; e2e's
// TestPrivilegedLabConnectionBytes from a real transfer).
func withConn(t testing.TB, f *flowpb.Flow, at time.Time, ps, bs, pr, br, hsNS float64) *flowpb.Flow {
	fields := map[string]*structpb.Value{
		contract.ExtConnPacketsSent: structpb.NewNumberValue(ps), contract.ExtConnBytesSent: structpb.NewNumberValue(bs),
		contract.ExtConnPacketsReceived: structpb.NewNumberValue(pr), contract.ExtConnBytesReceived: structpb.NewNumberValue(br),
		contract.ExtConnObservedAt: structpb.NewStringValue(contract.ObservedAtClient),
	}
	if hsNS > 0 {
		fields[contract.ExtConnHandshakeNS] = structpb.NewNumberValue(hsNS)
	}
	ext, err := anypb.New(&structpb.Struct{Fields: map[string]*structpb.Value{contract.ExtConnection: structpb.NewStructValue(&structpb.Struct{Fields: fields})}})
	if err != nil {
		t.Fatal(err)
	}
	f.Extensions = ext
	f.Time = timestamppb.New(at)
	return f
}

// trafficFlows: one bulk connection client -> db (100 MB, then its FIN),
// and 20 small ones client -> web, each with a 200 µs handshake but two
// at 20 ms.
func trafficFlows(t testing.TB, now time.Time) []*flowpb.Flow {
	client, web, db := pod("x", "client-1", "client"), pod("x", "web-1", "web"), pod("y", "db-0", "db")
	var out []*flowpb.Flow
	bulk := tcpFlow(client, db, 50000, 5432, flowpb.Verdict_FORWARDED, 0)
	out = append(out, withConn(t, bulk, now.Add(-2*time.Second), 1, 74, 1, 74, 150e3))
	bulk = tcpFlow(client, db, 50000, 5432, flowpb.Verdict_FORWARDED, 0)
	out = append(out, withConn(t, bulk, now.Add(-time.Second), 70000, 100e6, 900, 60e3, 150e3))
	for i := range 20 {
		hs := 200e3
		if i < 2 {
			hs = 20e6
		}
		f := tcpFlow(client, web, uint32(40000+i), 80, flowpb.Verdict_FORWARDED, i)
		f.IP.Source = "10.0.0.1"
		out = append(out, withConn(t, f, now.Add(-time.Second+time.Duration(i)*time.Millisecond), 5, 500, 4, 600, hs))
		r := reply(f)
		r.NodeName = "node-1"
		out = append(out, withConn(t, r, now.Add(-time.Second+time.Duration(i)*time.Millisecond+time.Microsecond), 6, 566, 5, 666, hs))
	}
	return out
}

func TestEdgeTraffic(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	now := time.Now()
	for _, f := range trafficFlows(t, now) {
		a.Add(f)
	}
	a.Decay(now)
	d := a.Flush()
	bulk := edgeByID(t, d, "x/client|y/db|5432/TCP").Traffic
	small := edgeByID(t, d, "x/client|x/web|80/TCP").Traffic
	if bulk == nil || small == nil {
		t.Fatalf("no traffic: %+v %+v", bulk, small)
	}
	if bulk.BytesSent != 100e6 || bulk.BytesReceived != 60e3 || bulk.Connections != 1 || bulk.Handshakes != 1 {
		t.Errorf("bulk %+v", bulk)
	}
	// The edge is 2 s old: its rate is over those 2 s.
	if bulk.BytesPerSec < 45e6 || bulk.BytesPerSec > 55e6 {
		t.Errorf("bulk rate %.0f B/s, want about 50 MB/s", bulk.BytesPerSec)
	}
	if small.BytesSent != 20*566 || small.PacketsReceived != 20*5 || small.Connections != 20 || small.Handshakes != 20 {
		t.Errorf("small %+v", small)
	}
	// p50 at 200 µs and p99 at 20 ms, within the buckets' factor √2.
	within := func(got, want float64) bool { return got > want/math.Sqrt2 && got < want*math.Sqrt2 }
	if !within(small.HandshakeP50, 200) || !within(small.HandshakeP99, 20000) {
		t.Errorf("handshake p50 %.0f µs, p99 %.0f µs", small.HandshakeP50, small.HandshakeP99)
	}

	// Rates fade when the flows stop: Decay marks the edges again.
	a.Decay(now.Add(25 * time.Second))
	d = a.Flush()
	if b := edgeByID(t, d, "x/client|y/db|5432/TCP").Traffic; b.BytesPerSec != 0 || b.BytesSent != 100e6 {
		t.Errorf("after 25 s idle: %+v", b)
	}
	if len(a.active) != 0 {
		t.Errorf("%d edges still active", len(a.active))
	}
}

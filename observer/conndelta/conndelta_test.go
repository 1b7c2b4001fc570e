package conndelta

import (
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loupe-project/loupe/contract"
)

// flow is a connection flow as the observer builds it (observer's
// TestConnectionExtension builds it from a record).
func flow(t *testing.T, at time.Duration, reply bool, sport uint32, ps, bs, pr, br, hs float64) *flowpb.Flow {
	t.Helper()
	fields := map[string]*structpb.Value{
		contract.ExtConnPacketsSent: structpb.NewNumberValue(ps), contract.ExtConnBytesSent: structpb.NewNumberValue(bs),
		contract.ExtConnPacketsReceived: structpb.NewNumberValue(pr), contract.ExtConnBytesReceived: structpb.NewNumberValue(br),
	}
	if hs > 0 {
		fields[contract.ExtConnHandshakeNS] = structpb.NewNumberValue(hs)
	}
	ext, err := anypb.New(&structpb.Struct{Fields: map[string]*structpb.Value{contract.ExtConnection: structpb.NewStructValue(&structpb.Struct{Fields: fields})}})
	if err != nil {
		t.Fatal(err)
	}
	f := &flowpb.Flow{
		Time: timestamppb.New(time.Unix(1700000000, 0).Add(at)), NodeName: "n1",
		IP:          &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2"},
		L4:          &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: 80}}},
		Source:      &flowpb.Endpoint{PodName: "client"},
		Destination: &flowpb.Endpoint{PodName: "server"},
		IsReply:     wrapperspb.Bool(false),
		Extensions:  ext,
	}
	if reply {
		f.IP.Source, f.IP.Destination = f.IP.Destination, f.IP.Source
		f.Source, f.Destination = f.Destination, f.Source
		f.L4.GetTCP().SourcePort, f.L4.GetTCP().DestinationPort = 80, sport
		f.IsReply = wrapperspb.Bool(true)
	}
	return f
}

func TestTrackerCountsGrowthOnce(t *testing.T) {
	tr := New()
	var sent, recv uint64
	var conns int
	var hs time.Duration
	for _, f := range []*flowpb.Flow{
		flow(t, 0, false, 40000, 1, 74, 0, 0, 0),
		flow(t, time.Millisecond, true, 40000, 1, 74, 1, 74, 90e3),
		flow(t, 5*time.Second, false, 40000, 100, 150_000, 50, 3_300, 90e3),
		flow(t, 6*time.Second, true, 40000, 101, 150_066, 51, 3_366, 90e3),
		flow(t, 6*time.Second, false, 40000, 100, 150_000, 50, 3_300, 90e3), // late, out of order
	} {
		d, ok := tr.Add(f)
		if !ok {
			t.Fatal("flow not tracked")
		}
		if d.Client.GetPodName() != "client" || d.ServerPort != 80 {
			t.Fatalf("client %v port %d", d.Client, d.ServerPort)
		}
		sent += d.BytesSent
		recv += d.BytesReceived
		hs += d.Handshake
		if d.New {
			conns++
		}
	}
	// The late flow looks like a reused 5-tuple (fewer packets): it counts
	// as a new connection with its own totals and handshake. One agent's
	// flows come in order, so this happens only for a real reuse.
	if sent != 150_066+150_000 || recv != 3_366+3_300 || hs != 180*time.Microsecond || conns != 2 {
		t.Errorf("sent %d, received %d, handshake %s, connections %d", sent, recv, hs, conns)
	}
	if _, ok := tr.Add(&flowpb.Flow{}); ok {
		t.Error("a flow without totals was tracked")
	}
}

func TestTrackerBounded(t *testing.T) {
	tr := New()
	for i := range MaxConnections + 10 {
		tr.Add(flow(t, 0, false, uint32(i%65536), 1, 74, 0, 0, 0))
		if i >= 65535 {
			break
		}
	}
	if tr.Len() > MaxConnections {
		t.Fatalf("%d states", tr.Len())
	}
	// A flow after the TTL sweeps the old ones.
	tr.Add(flow(t, TTL+2*time.Second, false, 1, 1, 74, 0, 0, 0))
	if tr.Len() != 1 {
		t.Errorf("%d states after the TTL, want 1", tr.Len())
	}
}

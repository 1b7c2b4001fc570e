package observer

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// TestConnectionMetrics follows one connection x/b (workload client) -> x/web through
// its flows: the metrics count the growth of its totals once, whichever
// flows carry them, and time its handshake once. e2e's
// TestPrivilegedLabConnectionBytes checks them against a real transfer.
func TestConnectionMetrics(t *testing.T) {
	o := newTestObserver(t, 63, nil)
	ev := func(ts uint64, dir uint8, reply bool, flags uint8, pf, bf, pr, br, hs uint64) []byte {
		e := connEvent(dir, reply, 1001, 1000)
		e.TimestampNS, e.TCPFlags, e.PacketsFwd, e.BytesFwd, e.PacketsRev, e.BytesRev, e.HandshakeNS = ts, flags, pf, bf, pr, br, hs
		return datapath.MustEncodeEvent(e)
	}
	const s = 1e9
	o.HandleEvent(ev(1*s, contract.DirectionEgress, false, 0x02, 1, 74, 0, 0, 0))                  // SYN
	o.HandleEvent(ev(1*s+80e3, contract.DirectionIngress, true, 0x12, 1, 74, 1, 74, 80e3))         // SYN-ACK
	o.HandleEvent(ev(6*s, contract.DirectionEgress, false, 0x10, 500, 700_000, 200, 13_000, 80e3)) // periodic
	o.HandleEvent(ev(7*s, contract.DirectionEgress, false, 0x11, 700, 1_000_000, 300, 20_000, 80e3))
	o.HandleEvent(ev(7*s+1e5, contract.DirectionIngress, true, 0x11, 701, 1_000_066, 301, 20_066, 80e3))
	// The server's veth of the same connection (client is a pod): ignored.
	o.HandleEvent(datapath.MustEncodeEvent(connEvent(contract.DirectionIngress, false, 1001, 1000)))

	want := `
# HELP loupe_connection_bytes_total Bytes of connections between workloads, counted once per connection; direction sent is client to server, received server to client
# TYPE loupe_connection_bytes_total counter
loupe_connection_bytes_total{destination_namespace="x",destination_workload="web",direction="received",source_namespace="x",source_workload="client"} 20066
loupe_connection_bytes_total{destination_namespace="x",destination_workload="web",direction="sent",source_namespace="x",source_workload="client"} 1.000066e+06
# HELP loupe_connections_total Connections between workloads, counted once, at the client pod's veth (the server's when the client is no pod)
# TYPE loupe_connections_total counter
loupe_connections_total{destination_namespace="x",destination_workload="web",source_namespace="x",source_workload="client"} 1
`
	if err := testutil.GatherAndCompare(o.metrics.reg, strings.NewReader(want), "loupe_connection_bytes_total", "loupe_connections_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(o.conns.handshake); n != 1 {
		t.Errorf("%d handshake series", n)
	}
	if err := testutil.GatherAndCompare(o.metrics.reg, strings.NewReader(`
# HELP loupe_connection_packets_total Packets of connections between workloads, counted once per connection; direction sent is client to server, received server to client
# TYPE loupe_connection_packets_total counter
loupe_connection_packets_total{destination_namespace="x",destination_workload="web",direction="received",source_namespace="x",source_workload="client"} 301
loupe_connection_packets_total{destination_namespace="x",destination_workload="web",direction="sent",source_namespace="x",source_workload="client"} 701
`), "loupe_connection_packets_total"); err != nil {
		t.Error(err)
	}
	h := `loupe_connection_handshake_seconds_count{destination_namespace="x",destination_workload="web",source_namespace="x",source_workload="client"} 1`
	mfs, _ := o.metrics.reg.Gather()
	var found bool
	for _, mf := range mfs {
		if mf.GetName() == "loupe_connection_handshake_seconds" {
			m := mf.GetMetric()[0]
			found = m.GetHistogram().GetSampleCount() == 1 && m.GetHistogram().GetSampleSum() == 80e-6
		}
	}
	if !found {
		t.Errorf("want %s with sum 80µs", h)
	}

	// The state is bounded: connections without flows are forgotten.
	o.HandleEvent(ev(100*s, contract.DirectionEgress, false, 0x02, 1, 74, 0, 0, 0))
	if n := o.conns.tracker.Len(); n != 1 {
		t.Errorf("%d connection states after the TTL, want 1", n)
	}
}

package relay_test

import (
	"context"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/loupe-project/loupe/relay"
	"github.com/loupe-project/loupe/relay/relaytest"
)

// heapPeak samples the live heap until stopped and returns the peak.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
	})
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// benchRelay starts a farm of peers agents holding perPeer recorded-like
// flows each, in a child process so that the heap measured is the relay's,
// and a relay over them.
func benchRelay(b *testing.B, peers, perPeer int) *testRelay {
	r := startRelay(b, testConfig(), nil, relay.StaticPeers(startFarm(b, peers, perPeer)))
	waitConnected(b, r.srv, peers)
	return r
}

func benchGetFlows(b *testing.B, peers, perPeer int, req *observerpb.GetFlowsRequest, want int) {
	b.ReportAllocs()
	r := benchRelay(b, peers, perPeer)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc
	stop := heapPeak()
	b.ResetTimer()
	total := 0
	for b.Loop() {
		stream, err := r.client.GetFlows(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			resp, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if resp.GetFlow() != nil {
				n++
			}
		}
		if n != want {
			b.Fatalf("got %d flows, want %d", n, want)
		}
		total += n
	}
	b.StopTimer()
	peak := stop()
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "flows/s")
	b.ReportMetric(float64(b.N*peers*perPeer)/b.Elapsed().Seconds(), "peer-flows/s")
	b.ReportMetric(float64(int64(peak)-int64(baseline))/(1<<20), "peak-heap-MB")
}

// BenchmarkMerge32Peers: every flow of 32 agents (4095 each), merged in time
// order through the relay and read by one client over gRPC. The flows/s
// include the agents' and the client's gRPC work, all on this machine.
func BenchmarkMerge32Peers(b *testing.B) {
	benchGetFlows(b, 32, 4095, &observerpb.GetFlowsRequest{Number: ^uint64(0)}, 32*4095)
}

// BenchmarkLast1000Of32Peers: the cluster's 1000 newest flows out of 32×4095.
func BenchmarkLast1000Of32Peers(b *testing.B) {
	benchGetFlows(b, 32, 4095, &observerpb.GetFlowsRequest{Number: 1000}, 1000)
}

// BenchmarkFollow32Peers: live flows from 32 agents through a follow stream.
func BenchmarkFollow32Peers(b *testing.B) {
	const peers, batch = 32, 256
	agents := startAgents(b, peers, relaytest.Options{Capacity: 8191})
	r := startRelay(b, testConfig(), nil, addrs(agents))
	waitConnected(b, r.srv, peers)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := r.client.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		b.Fatal(err)
	}
	eventually(b, "agents see the follow request", func() bool {
		for _, a := range agents {
			if len(a.Requests()) == 0 {
				return false
			}
		}
		return true
	})
	// Pre-build the batches so the benchmark measures the relay, not flow construction.
	flows := make([][]*flowpb.Flow, peers)
	for k, a := range agents {
		for i := range batch {
			flows[k] = append(flows[k], relaytest.Flow(a.Name(), time.Now(), i))
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc
	stop := heapPeak()
	var received, lost uint64
	b.ResetTimer()
	for b.Loop() {
		now := time.Now()
		for k, a := range agents {
			for i, f := range flows[k] {
				f.Time.Seconds, f.Time.Nanos = now.Unix(), int32(now.Nanosecond()+i)
			}
			a.Add(flows[k]...)
		}
		want := received + lost + peers*batch
		for received+lost < want {
			resp, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if resp.GetFlow() != nil {
				received++
			} else if le := resp.GetLostEvents(); le != nil {
				lost += le.GetNumEventsLost()
			}
		}
	}
	b.StopTimer()
	peak := stop()
	b.ReportMetric(float64(received)/b.Elapsed().Seconds(), "flows/s")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(float64(int64(peak)-int64(baseline))/(1<<20), "peak-heap-MB")
}

package observer

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/observer/filters"
	"github.com/loupe-project/loupe/observer/flowwire"
	"github.com/loupe-project/loupe/observer/history"
)

// benchRingFlows fills a ring with the benchmark's event mix through the
// real decoder and returns the flows.
func benchRingFlows(b testing.TB, n int) []*flowpb.Flow {
	evs := benchEvents()
	o := newTestObserver(b, 65535, nil)
	out := make([]*flowpb.Flow, 0, n)
	for i := range n {
		o.HandleEvent(evs[i%len(evs)])
		e, _ := o.ring.read(uint64(i))
		out = append(out, e.flow)
	}
	return out
}

// BenchmarkHistoryWrite is the history writer's work per flow on one core:
// protobuf encoding (flowwire, as the writer), batching, compression and the write. It reports
// flows/s, the bytes a flow takes on disk and its protobuf wire size.
func BenchmarkHistoryWrite(b *testing.B) {
	flows := benchRingFlows(b, 8192)
	st, err := history.Open(history.Options{Dir: b.TempDir(), Retention: testRetention, MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var recs []history.Record
	var arena []byte
	var wire, n int
	enc := flowwire.NewEncoder()
	now := time.Now().UnixNano()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f := flows[n%len(flows)]
		start := len(arena)
		arena, _ = enc.Append(arena, f)
		wire += len(arena) - start
		recs = append(recs, history.Record{Kind: history.KindFlow, Seq: uint64(n), Time: now + int64(n), Data: arena[start:]})
		n++
		if len(recs) == historyBatch {
			if err := st.Append(1, recs); err != nil {
				b.Fatal(err)
			}
			recs, arena = recs[:0], arena[:0]
		}
	}
	if len(recs) > 0 {
		if err := st.Append(1, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "flows/s")
	b.ReportMetric(float64(st.Size())/float64(n), "disk_B/flow")
	b.ReportMetric(float64(wire)/float64(n), "wire_B/flow")
}

// BenchmarkHistoryQuery1h stores LOUPE_BENCH_HISTORY_FLOWS flows (default
// 10 M) spread over 24 hours, then times GetFlows' disk read of one hour
// with a pod filter (source pod x/web): Unmarshal, filter and the stream's
// send. It reports s/query and the flows the hour held and matched.
func BenchmarkHistoryQuery1h(b *testing.B) {
	total := 10_000_000
	if v, err := strconv.Atoi(os.Getenv("LOUPE_BENCH_HISTORY_FLOWS")); err == nil && v > 0 {
		total = v
	}
	flows := benchRingFlows(b, 8192)
	dir := b.TempDir()
	st, err := history.Open(history.Options{Dir: dir, Retention: testRetention, MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now().Add(-25 * time.Hour)
	step := 24 * time.Hour / time.Duration(total)
	var recs []history.Record
	var arena []byte
	for i := range total {
		f := proto.Clone(flows[i%len(flows)]).(*flowpb.Flow)
		at := t0.Add(time.Duration(i) * step)
		f.Time = timestamppb.New(at)
		start := len(arena)
		arena, _ = proto.MarshalOptions{}.MarshalAppend(arena, f)
		recs = append(recs, history.Record{Kind: history.KindFlow, Seq: uint64(i), Time: at.UnixNano(), Data: arena[start:]})
		if len(recs) == historyBatch || i == total-1 {
			if err := st.Append(1, recs); err != nil {
				b.Fatal(err)
			}
			recs, arena = recs[:0], arena[:0]
		}
	}
	o, err := New(Config{NodeName: "node-1", History: st})
	if err != nil {
		b.Fatal(err)
	}
	filter := []*flowpb.FlowFilter{{SourcePod: []string{"x/web"}}}
	pre := podPrefilter(filter)
	wl, err := filters.BuildList(filter)
	if err != nil {
		b.Fatal(err)
	}
	match := func(f *flowpb.Flow) bool { return filters.Apply(wl, nil, f) }
	since := t0.Add(12 * time.Hour)
	until := since.Add(time.Hour)
	var matched uint64
	// CPU time beside wall time: on a shared machine the wall time is
	// mostly waiting for a core.
	cpu0 := processCPU(b)
	b.ResetTimer()
	for b.Loop() {
		send := func(r *observerpb.GetFlowsResponse) error {
			_, err := proto.Marshal(r) // what the stream does with it
			return err
		}
		_, n, _, err := o.replayHistory(context.Background(), send, since, until, pre, match, nil, 0)
		if err != nil {
			b.Fatal(err)
		}
		matched = n
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/query")
	b.ReportMetric((processCPU(b)-cpu0).Seconds()/float64(b.N), "cpu_s/query")
	b.ReportMetric(float64(matched), "matched")
	b.ReportMetric(float64(time.Hour/step), "flows_in_hour")
	b.ReportMetric(float64(st.Size())/float64(total), "disk_B/flow")
}

// processCPU is the process's user + system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

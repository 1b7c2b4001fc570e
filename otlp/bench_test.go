package otlp

import (
	"context"
	"runtime"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/proto"

	"github.com/loupe-project/loupe/otlp/otlptest"
)

// BenchmarkFlowEnqueue is what export costs the observer's event path:
// one non-blocking queue send per flow.
func BenchmarkFlowEnqueue(b *testing.B) {
	e, err := New(Config{Endpoint: "127.0.0.1:1", Insecure: true, QueueSize: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	f := l4Flow(0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		e.Flow(f)
		if i&(1<<19) != 0 { // keep the queue from filling
			for len(e.in) > 0 {
				<-e.in
			}
			i = 0
		}
	}
}

// BenchmarkEncodeRaw is the exporter's own work per flow: the record,
// its attributes and its share of the encoded request.
func BenchmarkEncodeRaw(b *testing.B) {
	recs := make([]*logspb.LogRecord, 0, DefaultBatchSize)
	src := []*flowpb.Flow{l4Flow(0), policyDrop(), kernelDrop(b), httpFlow()}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		recs = append(recs, flowRecord(src[n%len(src)], time.Now()))
		n++
		if len(recs) == DefaultBatchSize {
			req := &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{ScopeLogs: []*logspb.ScopeLogs{{LogRecords: recs}}}}}
			if _, err := proto.Marshal(req); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkExportPipeline sends b.N flows through the whole exporter to
// the in-process receiver (the collector's pdata server, decoding every
// request on the same cores) and waits until every one is acknowledged.
// With -test.cpu=1 it is flows/s per core, receiver included.
func BenchmarkExportPipeline(b *testing.B) {
	r := otlptest.Start(b, "127.0.0.1:0", nil)
	r.Discard = true
	e, err := New(Config{Endpoint: r.Addr(), Insecure: true, QueueSize: DefaultQueueSize, BatchTimeout: 5 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx, nil) }()
	defer func() { cancel(); <-done }()
	f := l4Flow(0)
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		for len(e.in) == cap(e.in) {
			runtime.Gosched()
		}
		e.Flow(f)
	}
	for e.Stats().Exported+e.Stats().Dropped < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	if s := e.Stats(); s.Dropped != 0 {
		b.Fatalf("dropped %v", s.DroppedBy)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	// On a shared machine the process gets a fraction of a core: flows per
	// CPU-second of the whole process (exporter and receiver) is the
	// figure that does not move with the neighbours.
	if d := cpuTime() - cpu0; d > 0 {
		b.ReportMetric(float64(b.N)/d.Seconds(), "flows/cpu-s")
	}
}

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

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

// benchFlows are the flows the encoder benchmarks cycle through: the
// fixtures (an L4 flow, a policy drop, a kernel drop, an HTTP flow) and
// the observer's decoder's flows.
func benchFlows(b *testing.B) []*flowpb.Flow {
	return append([]*flowpb.Flow{l4Flow(0), policyDrop(), kernelDrop(b), httpFlow()}, realFlows(b)...)
}

// encodeProto is the previous encoder's work for n flows: the records as
// OTLP objects, then proto.Marshal of their request.
func encodeProto(b *testing.B, src []*flowpb.Flow, recs []*logspb.LogRecord, n int) []*logspb.LogRecord {
	recs = recs[:0]
	for i := range n {
		recs = append(recs, refFlowRecord(src[i%len(src)], time.Now()))
	}
	req := &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{ScopeLogs: []*logspb.ScopeLogs{{LogRecords: recs}}}}}
	if _, err := proto.Marshal(req); err != nil {
		b.Fatal(err)
	}
	return recs
}

// encodeWire is the wire encoder's work for n flows: records appended
// to a reused buffer, then the header.
func encodeWire(h *requestHeader, enc *recordEncoder, src []*flowpb.Flow, buf []byte, n int) []byte {
	buf = h.start(buf)
	for i := range n {
		buf = enc.appendFlow(buf, src[i%len(src)], time.Now())
	}
	h.finish(buf)
	return buf
}

// BenchmarkEncode is the exporter's own work per flow (record,
// attributes, its share of the encoded request), old and new: proto
// builds OTLP objects and marshals them, wire writes the bytes. Each op
// is one batch of DefaultBatchSize flows; ns/flow and allocs/flow are per
// flow.
func BenchmarkEncode(b *testing.B) {
	src := benchFlows(b)
	h, _, _ := testResource(b)
	perFlow := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*DefaultBatchSize), "ns/flow")
		b.ReportMetric(float64(DefaultBatchSize*b.N)/b.Elapsed().Seconds(), "flows/s")
	}
	b.Run("proto", func(b *testing.B) {
		recs := make([]*logspb.LogRecord, 0, DefaultBatchSize)
		b.ReportAllocs()
		for b.Loop() {
			recs = encodeProto(b, src, recs, DefaultBatchSize)
		}
		perFlow(b)
		b.ReportMetric(allocsPerFlow(func() { encodeProto(b, src, recs, DefaultBatchSize) }), "allocs/flow")
	})
	b.Run("wire", func(b *testing.B) {
		var enc recordEncoder
		var buf []byte
		b.ReportAllocs()
		for b.Loop() {
			buf = encodeWire(&h, &enc, src, buf, DefaultBatchSize)
		}
		perFlow(b)
		b.ReportMetric(allocsPerFlow(func() { buf = encodeWire(&h, &enc, src, buf, DefaultBatchSize) }), "allocs/flow")
	})
}

// BenchmarkEncodeSideBySide alternates a batch of each encoder within
// one loop, so that both see the same machine load, and reports each
// one's ns/flow and the ratio (proto time / wire time).
func BenchmarkEncodeSideBySide(b *testing.B) {
	src := benchFlows(b)
	h, _, _ := testResource(b)
	var enc recordEncoder
	var buf []byte
	recs := make([]*logspb.LogRecord, 0, DefaultBatchSize)
	var tProto, tWire time.Duration
	for b.Loop() {
		t0 := time.Now()
		recs = encodeProto(b, src, recs, DefaultBatchSize)
		t1 := time.Now()
		buf = encodeWire(&h, &enc, src, buf, DefaultBatchSize)
		tProto, tWire = tProto+t1.Sub(t0), tWire+time.Since(t1)
	}
	flows := float64(b.N * DefaultBatchSize)
	b.ReportMetric(float64(tProto.Nanoseconds())/flows, "proto-ns/flow")
	b.ReportMetric(float64(tWire.Nanoseconds())/flows, "wire-ns/flow")
	b.ReportMetric(float64(tProto)/float64(tWire), "speedup")
}

// allocsPerFlow is the allocations of one batch of fn, per flow.
func allocsPerFlow(fn func()) float64 {
	return testing.AllocsPerRun(3, fn) / DefaultBatchSize
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

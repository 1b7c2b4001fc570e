package otlp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
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
	pipeline(b, r.Addr(), 0)
}

// BenchmarkExportPipelineRemote is BenchmarkExportPipeline with the
// receiver in another process (this test binary, run as the receiver), as
// a collector is: flows/cpu-s is then the exporter's process alone, what
// export costs an agent; flows/cpu-s-both adds the receiver's CPU.
func BenchmarkExportPipelineRemote(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), receiverEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("receiver: %v", err)
	}
	pipeline(b, strings.TrimSpace(addr), cmd.Process.Pid)
}

// receiverEnv makes this test binary an OTLP receiver (TestMain): it
// prints its address and serves until its stdin closes.
const receiverEnv = "LOUPE_OTLP_BENCH_RECEIVER"

func TestMain(m *testing.M) {
	if os.Getenv(receiverEnv) != "" {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		r := otlptest.Serve(lis)
		fmt.Println(r.Addr())
		_, _ = io.Copy(io.Discard, os.Stdin)
		r.Stop()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pipeline sends b.N flows through an exporter to the receiver at addr
// and waits until every one is acknowledged; peer, when set, is the
// receiver's process, whose CPU flows/cpu-s-both adds.
func pipeline(b *testing.B, addr string, peer int) {
	e, err := New(Config{Endpoint: addr, Insecure: true, QueueSize: DefaultQueueSize, BatchTimeout: 5 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx, nil) }()
	defer func() { cancel(); <-done }()
	f := l4Flow(0)
	b.ReportAllocs()
	cpu0, peer0 := cpuTime(), procCPU(peer)
	b.ResetTimer()
	for range b.N {
		for len(e.in) == cap(e.in) {
			// With the receiver away, a full queue waits on it: sleep
			// rather than spin, whose CPU would count as export's.
			if peer != 0 {
				time.Sleep(50 * time.Microsecond)
			} else {
				runtime.Gosched()
			}
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
	d := cpuTime() - cpu0
	if d > 0 {
		b.ReportMetric(float64(b.N)/d.Seconds(), "flows/cpu-s")
	}
	if peer != 0 {
		if both := d + procCPU(peer) - peer0; both > 0 {
			b.ReportMetric(float64(b.N)/both.Seconds(), "flows/cpu-s-both")
		}
	}
}

// procCPU is process pid's user + system CPU time (/proc/PID/stat), or 0.
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th, in clock ticks (100 a second on Linux).
	i := bytes.LastIndexByte(st, ')')
	f := strings.Fields(string(st[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Package otlptest runs a real OTLP/gRPC receiver in process: the
// OpenTelemetry Collector's own pdata servers (plogotlp, pmetricotlp), for
// tests and benchmarks of loupe's exporter.
package otlptest

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Receiver is a real OTLP/gRPC receiver: the collector's own pdata
// servers, in process. It keeps every log record and metric it accepted.
type Receiver struct {
	plogotlp.UnimplementedGRPCServer
	addr  string
	creds credentials.TransportCredentials
	// Discard, when set before the first export, counts records without
	// keeping them (benchmarks).
	Discard bool
	count   int

	mu      sync.Mutex
	records []plog.LogRecord
	res     []pcommon.Resource
	metrics []pmetric.Metrics
	srv     *grpc.Server
	done    chan struct{}
}

type metricsServer struct {
	pmetricotlp.UnimplementedGRPCServer
	r *Receiver
}

func (m metricsServer) Export(_ context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	md := pmetric.NewMetrics()
	req.Metrics().CopyTo(md)
	m.r.metrics = append(m.r.metrics, md)
	return pmetricotlp.NewExportResponse(), nil
}

func (r *Receiver) Export(_ context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Discard {
		r.count += req.Logs().LogRecordCount()
		return plogotlp.NewExportResponse(), nil
	}
	rls := req.Logs().ResourceLogs()
	for i := range rls.Len() {
		rl := rls.At(i)
		for j := range rl.ScopeLogs().Len() {
			lrs := rl.ScopeLogs().At(j).LogRecords()
			for k := range lrs.Len() {
				lr := plog.NewLogRecord()
				lrs.At(k).CopyTo(lr)
				r.records = append(r.records, lr)
				res := pcommon.NewResource()
				rl.Resource().CopyTo(res)
				r.res = append(r.res, res)
			}
		}
	}
	return plogotlp.NewExportResponse(), nil
}

// Start serves on addr ("127.0.0.1:0" picks a port) until the
// test ends or stop.
func Start(t testing.TB, addr string, tc *tls.Config) *Receiver {
	t.Helper()
	r := &Receiver{addr: addr}
	if tc != nil {
		r.creds = credentials.NewTLS(tc)
	}
	r.Restart(t)
	t.Cleanup(r.Stop)
	return r
}

// Addr is the address served, HOST:PORT.
func (r *Receiver) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// Restart serves again on the same address after Stop.
func (r *Receiver) Restart(t testing.TB) {
	t.Helper()
	var lis net.Listener
	var err error
	// The port may linger for a moment after a stop.
	for i := 0; i < 50; i++ {
		if lis, err = net.Listen("tcp", r.Addr()); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.serve(lis)
}

// Serve serves on lis until Stop, counting log records without keeping
// them (Count): for the bench, which has no testing.TB.
func Serve(lis net.Listener) *Receiver {
	r := &Receiver{Discard: true}
	r.serve(lis)
	return r
}

// Count is how many log records were accepted with Discard set.
func (r *Receiver) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

func (r *Receiver) serve(lis net.Listener) {
	r.mu.Lock()
	r.addr = lis.Addr().String()
	r.mu.Unlock()
	var opts []grpc.ServerOption
	if r.creds != nil {
		opts = append(opts, grpc.Creds(r.creds))
	}
	srv := grpc.NewServer(opts...)
	plogotlp.RegisterGRPCServer(srv, r)
	pmetricotlp.RegisterGRPCServer(srv, &metricsServer{r: r})
	done := make(chan struct{})
	r.mu.Lock()
	r.srv, r.done = srv, done
	r.mu.Unlock()
	go func() { defer close(done); _ = srv.Serve(lis) }()
}

// Stop lets the exports in progress finish (so each accepted one is
// answered), then closes the listener and every connection.
func (r *Receiver) Stop() {
	r.mu.Lock()
	srv, done := r.srv, r.done
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.GracefulStop()
		<-done
	}
}

func (r *Receiver) LogRecords() []plog.LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]plog.LogRecord(nil), r.records...)
}

// Resources returns the resource of each record, in order.
func (r *Receiver) Resources() []pcommon.Resource {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pcommon.Resource(nil), r.res...)
}

// Metrics returns every metrics export received.
func (r *Receiver) Metrics() []pmetric.Metrics {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pmetric.Metrics(nil), r.metrics...)
}

// SumInt sums an integer attribute over the records received (the
// exporter's loupe.flow.count gives the flows that arrived).
func (r *Receiver) SumInt(attr string) uint64 {
	var n uint64
	for _, lr := range r.LogRecords() {
		if v, ok := lr.Attributes().Get(attr); ok {
			n += uint64(v.Int())
		}
	}
	return n
}

// WaitFor polls cond every 20 ms for at most d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Attrs flattens a record's attributes to strings (arrays joined by ",").
func Attrs(lr plog.LogRecord) map[string]string {
	out := map[string]string{}
	lr.Attributes().Range(func(k string, v pcommon.Value) bool {
		if v.Type() == pcommon.ValueTypeSlice {
			var s []string
			for i := range v.Slice().Len() {
				s = append(s, v.Slice().At(i).AsString())
			}
			out[k] = strings.Join(s, ",")
		} else {
			out[k] = v.AsString()
		}
		return true
	})
	return out
}

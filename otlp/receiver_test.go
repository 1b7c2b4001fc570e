package otlp

import (
	"context"
	"crypto/tls"
	"net"
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

// receiver is a real OTLP/gRPC receiver: the collector's own pdata
// servers, in process. It keeps every log record and metric it accepted.
type receiver struct {
	plogotlp.UnimplementedGRPCServer
	addr  string
	creds credentials.TransportCredentials

	mu      sync.Mutex
	records []plog.LogRecord
	res     []pcommon.Resource
	metrics []pmetric.Metrics
	srv     *grpc.Server
	done    chan struct{}
}

type metricsServer struct {
	pmetricotlp.UnimplementedGRPCServer
	r *receiver
}

func (m metricsServer) Export(_ context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	md := pmetric.NewMetrics()
	req.Metrics().CopyTo(md)
	m.r.metrics = append(m.r.metrics, md)
	return pmetricotlp.NewExportResponse(), nil
}

func (r *receiver) Export(_ context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
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

// startReceiver serves on addr ("127.0.0.1:0" picks a port) until the
// test ends or stop.
func startReceiver(t testing.TB, addr string, tc *tls.Config) *receiver {
	t.Helper()
	r := &receiver{addr: addr}
	if tc != nil {
		r.creds = credentials.NewTLS(tc)
	}
	r.start(t)
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) start(t testing.TB) {
	t.Helper()
	var lis net.Listener
	var err error
	// The port may linger for a moment after a stop.
	for i := 0; i < 50; i++ {
		if lis, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.addr = lis.Addr().String()
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

// stop lets the exports in progress finish (so each accepted one is
// answered), then closes the listener and every connection.
func (r *receiver) stop() {
	r.mu.Lock()
	srv, done := r.srv, r.done
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.GracefulStop()
		<-done
	}
}

func (r *receiver) logRecords() []plog.LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]plog.LogRecord(nil), r.records...)
}

func (r *receiver) metricSets() []pmetric.Metrics {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pmetric.Metrics(nil), r.metrics...)
}

// flowsReceived sums loupe.flow.count over the records received.
func (r *receiver) flowsReceived() uint64 {
	var n uint64
	for _, lr := range r.logRecords() {
		if v, ok := lr.Attributes().Get(AttrFlowCount); ok {
			n += uint64(v.Int())
		}
	}
	return n
}

// waitFor polls cond every 20 ms for at most d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

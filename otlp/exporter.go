package otlp

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/loupe-project/loupe/internal/version"
)

// ScopeName is the instrumentation scope of every record loupe exports.
const ScopeName = "github.com/loupe-project/loupe/otlp"

// shutdownGrace is how long Run keeps sending what is queued after its
// context ends; what is still unsent then is dropped and counted.
const shutdownGrace = 5 * time.Second

// maxRetryDelay caps the exponential backoff between retries of a batch
// and between reconnection attempts, so export resumes within seconds of
// the collector's return.
const maxRetryDelay = 5 * time.Second

// Exporter sends flows (as log records) and metrics to one collector. Flow
// never blocks: a full queue drops the flow and counts it.
type Exporter struct {
	cfg      Config
	conn     *grpc.ClientConn
	metrics  colmetricspb.MetricsServiceClient
	in       chan *flowpb.Flow
	batches  chan *batch
	resource *resourcepb.Resource
	scope    *commonpb.InstrumentationScope
	header   requestHeader // the fixed parts of a logs request
	bufs     *bufPool
	md       metadata.MD
	stats    *stats
	start    time.Time
}

// batch is one encoded export request, its number of records and the
// flows they stand for.
type batch struct {
	buf     *sendBuf
	records int
	flows   uint64
}

// New checks cfg and builds an exporter; it connects lazily, so an
// unreachable collector is not an error here.
func New(cfg Config) (*Exporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, fmt.Errorf("otlp: no endpoint")
	}
	creds, err := cfg.credentials()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(cfg.Endpoint,
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: cfg.retryBase, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxRetryDelay},
			MinConnectTimeout: cfg.Timeout,
		}),
		// An export waits (up to Timeout) for the connection to come back
		// rather than failing at once: it goes out as soon as the
		// collector returns, not at the next retry.
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)),
		grpc.WithUserAgent("loupe/"+version.Version))
	if err != nil {
		return nil, fmt.Errorf("otlp: %w", err)
	}
	e := &Exporter{
		cfg:     cfg,
		conn:    conn,
		metrics: colmetricspb.NewMetricsServiceClient(conn),
		in:      make(chan *flowpb.Flow, cfg.QueueSize),
		// One batch waits while one is sent: memory stays at the queue
		// plus two batches whatever the collector does.
		batches: make(chan *batch, 1),
		scope:   &commonpb.InstrumentationScope{Name: ScopeName, Version: version.Version},
		stats:   newStats(),
		start:   time.Now(),
		bufs:    newBufPool(),
	}
	res := []*commonpb.KeyValue{str("service.name", cfg.ServiceName)}
	res = appendStr(res, "service.version", cfg.ServiceVersion)
	res = appendStr(res, AttrK8sNode, cfg.NodeName)
	e.resource = &resourcepb.Resource{Attributes: res}
	if e.header, err = newRequestHeader(e.resource, e.scope); err != nil {
		conn.Close()
		return nil, fmt.Errorf("otlp: %w", err)
	}
	for _, h := range cfg.Headers {
		k, v, _ := strings.Cut(h, "=")
		e.md = metadata.Join(e.md, metadata.Pairs(k, v))
	}
	return e, nil
}

// Collectors are the exporter's own metrics, for the /metrics registry.
func (e *Exporter) Collectors() []prometheus.Collector {
	return append(e.stats.collectors(), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "loupe", Subsystem: "otlp", Name: "queue_length",
		Help: "Flows waiting in the OTLP export queue",
	}, func() float64 { return float64(len(e.in)) }))
}

// Stats returns the exporter's flow counts.
func (e *Exporter) Stats() Stats { return e.stats.snapshot() }

// Flow queues one flow for export. It never blocks and never modifies f,
// so the observer can call it on its hot path.
func (e *Exporter) Flow(f *flowpb.Flow) {
	if e.cfg.Flows == FlowsOff {
		return
	}
	e.stats.received.Add(1)
	select {
	case e.in <- f:
	default:
		e.stats.drop(ReasonQueueFull, 1)
	}
}

// KeepsFlows says that the exporter keeps flows after Flow returns (its
// queue): the observer then allocates each flow on its own
// (observer.FlowKeeper).
func (e *Exporter) KeepsFlows() bool { return e.cfg.Flows != FlowsOff }

// Lost counts n flows lost upstream of the exporter (the relay's follow
// queue overflowed), so that the dropped count covers them too.
func (e *Exporter) Lost(n uint64) {
	e.stats.received.Add(n)
	e.stats.drop(ReasonUpstreamLost, n)
}

// Run exports until ctx ends, then sends what is queued for at most
// shutdownGrace. gatherer, when set, is exported as OTLP metrics every
// MetricsInterval.
func (e *Exporter) Run(ctx context.Context, gatherer prometheus.Gatherer) error {
	defer e.conn.Close()
	sendCtx, cancelSend := context.WithCancel(context.Background())
	defer cancelSend()
	go func() {
		<-ctx.Done()
		t := time.NewTimer(shutdownGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancelSend()
		case <-sendCtx.Done():
		}
	}()
	var wg sync.WaitGroup
	if e.cfg.Flows != FlowsOff {
		wg.Go(func() {
			if e.cfg.Flows == FlowsAggregated {
				e.aggregate(ctx)
			} else {
				e.batchRaw(ctx)
			}
		})
		wg.Go(func() {
			for b := range e.batches {
				e.send(sendCtx, b)
			}
		})
	}
	if gatherer != nil && e.cfg.MetricsInterval > 0 {
		wg.Go(func() { e.exportMetricsEvery(ctx, sendCtx, gatherer) })
	}
	stop := make(chan struct{})
	logged := make(chan struct{})
	go func() { defer close(logged); e.stats.logDrops(stop, e.cfg.Log) }()
	e.cfg.Log.Info("otlp export", "endpoint", e.cfg.Endpoint, "tls", !e.cfg.Insecure, "flows", e.cfg.Flows,
		"metrics_interval", e.cfg.MetricsInterval)
	if e.cfg.Insecure {
		e.cfg.Log.Warn("OTLP export is plain text (--otlp-insecure): flows travel unencrypted and the collector is not authenticated")
	}
	wg.Wait()
	close(stop)
	<-logged
	return nil
}

// batchRaw encodes each flow as one log record and cuts batches by size
// and age.
func (e *Exporter) batchRaw(ctx context.Context) {
	defer close(e.batches)
	var enc recordEncoder
	cur, n := e.header.start(e.bufs.get()), 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		if n == 0 {
			return
		}
		e.batches <- e.newBatch(cur, n, uint64(n))
		cur, n = e.header.start(e.bufs.get()), 0
	}
	add := func(f *flowpb.Flow) {
		cur = enc.appendFlow(cur, f, time.Now())
		n++
	}
	for {
		select {
		case f := <-e.in:
			add(f)
			if n == 1 {
				timer.Reset(e.cfg.BatchTimeout)
			}
			if n >= e.cfg.BatchSize {
				timer.Stop()
				flush()
			}
		case <-timer.C:
			flush()
		case <-ctx.Done():
			for {
				select {
				case f := <-e.in:
					add(f)
					if n >= e.cfg.BatchSize {
						flush()
					}
					continue
				default:
				}
				break
			}
			flush()
			return
		}
	}
}

// newBatch completes the request in buf (from header.start, then
// records) for the sender.
func (e *Exporter) newBatch(buf []byte, records int, flows uint64) *batch {
	start := e.header.finish(buf)
	e.bufs.sized(len(buf))
	return &batch{buf: &sendBuf{full: buf, req: buf[start:], pool: e.bufs}, records: records, flows: flows}
}

// retryable are the codes the OTLP specification lets a client retry.
func retryable(c codes.Code) bool {
	switch c {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange,
		codes.Unavailable, codes.DataLoss, codes.ResourceExhausted:
		return true
	}
	return false
}

// send exports one batch, retrying with exponential backoff for at most
// RetryMaxElapsed; every flow of the batch ends up counted as exported or
// dropped.
func (e *Exporter) send(ctx context.Context, b *batch) {
	buf := b.buf.buffer()
	defer buf.Free()
	req := &rawRequest{buf: buf}
	err := e.retry(ctx, func(ctx context.Context) error {
		resp := &collogspb.ExportLogsServiceResponse{}
		if err := e.conn.Invoke(ctx, exportLogsMethod, req, resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
			return err
		}
		rej := uint64(resp.GetPartialSuccess().GetRejectedLogRecords())
		if rej > 0 {
			// Which records were refused is not said; with raw records
			// each is one flow, aggregated ones are apportioned.
			flows := min(b.flows, rej*b.flows/uint64(b.records))
			e.stats.drop(ReasonRejected, flows)
			e.stats.exported.Add(b.flows - flows)
			e.cfg.Log.Warn("otlp: collector rejected log records", "records", rej, "message", resp.GetPartialSuccess().GetErrorMessage())
			return nil
		}
		e.stats.exported.Add(b.flows)
		return nil
	})
	if err != nil {
		reason := ReasonRetriesExhausted
		switch {
		case ctx.Err() != nil:
			reason = ReasonShutdown
		case !retryable(status.Code(err)):
			reason = ReasonRejected
		}
		e.stats.drop(reason, b.flows)
		e.stats.lastErr(err)
	}
}

// retry calls fn until it succeeds, fails for good, ctx ends or
// RetryMaxElapsed has passed.
func (e *Exporter) retry(ctx context.Context, fn func(context.Context) error) error {
	deadline := time.Now().Add(e.cfg.RetryMaxElapsed)
	delay := e.cfg.retryBase
	for {
		// An attempt waits for the connection at most until the deadline.
		cctx, cancel := context.WithTimeout(ctx, max(min(e.cfg.Timeout, time.Until(deadline)), 10*time.Millisecond))
		if e.md != nil {
			cctx = withMD(cctx, e.md)
		}
		err := fn(cctx)
		cancel()
		if err == nil || !retryable(status.Code(err)) || ctx.Err() != nil {
			return err
		}
		wait := delay/2 + rand.N(delay/2+1)
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		e.stats.retries.Inc()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

func withMD(ctx context.Context, md metadata.MD) context.Context {
	return metadata.NewOutgoingContext(ctx, md)
}

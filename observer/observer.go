// Package observer turns datapath events into Hubble flows, keeps them in a
// bounded ring and serves them over Hubble's Observer and Peer gRPC APIs.
package observer

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/internal/version"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer/history"
	"github.com/loupe-project/loupe/observer/hubblemetrics"
)

// Config configures an Observer.
type Config struct {
	// NodeName is this node's name, as in its Node object.
	NodeName string
	// Metadata supplies pods, namespaces, services and nodes for enrichment
	// and peer discovery. Nil means no enrichment.
	Metadata metadata.Source
	// BufferSize is the flow ring capacity, 2^n-1; 0 means DefaultBufferSize.
	BufferSize int
	// Log defaults to a discarding logger.
	Log *slog.Logger
	// Policy resolves the datapath's policy rule ids for allowed_by /
	// denied_by; nil leaves them empty.
	Policy PolicyResolver
	// LinkName names an interface index; nil asks the kernel (cached).
	LinkName func(ifindex uint32) string
	// TLS secures the TCP listener; the zero value is plain text.
	TLS TLSConfig
	// Version is reported by ServerStatus and GetNodes; "" means
	// internal/version.Version.
	Version string
	// Address is this node's Observer address for GetNodes; "" uses the
	// observer-address annotation of this node's Node object.
	Address string
	// EventsCaughtUp returns a CLOCK_BOOTTIME instant (ns) before which
	// every datapath event has been through HandleEvent (0: unknown); it
	// sets the watermarks sent to followers. Nil means events reach
	// HandleEvent as they happen.
	EventsCaughtUp func() int64
	// Metrics are the Hubble metric families to export (--metrics); nil
	// means hubblemetrics.Default, an empty slice none.
	Metrics []hubblemetrics.Spec
	// KernelEvents places and names kernel drop records; nil drops them.
	KernelEvents KernelEvents
	// ServiceByID names the Service the datapath translated a packet
	// from (the event's ServiceID); nil: only ClusterIP:port lookups.
	ServiceByID func(id uint32) (namespace, name string, ok bool)
	// L7 configures the flows made of L7 records (HandleL7).
	L7 L7Config
	// History keeps the ring's flows on disk (see history.go); nil keeps
	// only the ring. Serve writes to it and closes it when it returns.
	History *history.Store
	// Services are more gRPC services served on the same listeners, with
	// the same TLS (the agent's security events).
	Services []func(grpc.ServiceRegistrar)
}

// Observer is the flow pipeline of one agent.
type Observer struct {
	cfg     Config
	log     *slog.Logger
	start   time.Time
	ring    *ring
	metrics *metrics

	// mu serializes HandleEvent: one decoder, one ring writer.
	mu       sync.Mutex
	dec      *Decoder
	lastSnap *metadata.Snapshot
	index    atomic.Pointer[enrichIndex]

	seen   atomic.Uint64
	kdrops *kernelDropMetrics
	conns  *connMetrics
	tcp    *tcpMetrics
	l7     *l7State

	// lastFlowNS is the time of the newest flow written (under mu): see
	// orderFlow.
	lastFlowNS int64
	sinks      []FlowSink             // sink.go; guarded by mu
	sinkLost   *prometheus.CounterVec // FollowSink's
	hist       *historyState          // nil without Config.History
	// batchBuffersMade counts the FlowBatches streams' batch buffers
	// (batchBuffers): they are recycled, so it stays small.
	batchBuffersMade atomic.Uint64

	// podMetricsGrace is how long a deleted pod's metric series stay.
	podMetricsGrace time.Duration
}

// New builds an Observer. It starts no goroutines; Serve does.
func New(cfg Config) (*Observer, error) {
	if cfg.BufferSize == 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	r, err := newRing(cfg.BufferSize)
	if err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Metadata == nil {
		cfg.Metadata = metadata.Static{}
	}
	if cfg.Version == "" {
		cfg.Version = version.Version
	}
	if err := cfg.TLS.validate(); err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = hubblemetrics.MustParse(hubblemetrics.Default)
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("observer: metrics: %w", err)
	}
	o := &Observer{
		cfg:     cfg,
		log:     cfg.Log.With("component", "observer"),
		start:   time.Now(),
		ring:    r,
		metrics: m,

		podMetricsGrace: hubblemetrics.PodGrace,
	}
	o.dec = newDecoder(cfg.NodeName, &o.index, cfg.Policy, cfg.LinkName)
	o.dec.serviceByID = cfg.ServiceByID
	o.dec.kernel = cfg.KernelEvents
	o.kdrops = newKernelDropMetrics(o.metrics.reg)
	o.conns = newConnMetrics(o.metrics.reg)
	o.tcp = newTCPMetrics(o.metrics.reg)
	o.l7 = newL7State(cfg.L7, o.metrics.reg)
	o.sinkLost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "loupe", Name: "flow_sink_lost_total",
		Help: "Flows a sink that follows the ring (the agent's network rules: sink=\"security\") did not see: the ring overwrote them first",
	}, []string{"sink"})
	o.metrics.reg.MustRegister(o.sinkLost)
	o.dec.names = newFQDNCache()
	if cfg.History != nil {
		o.hist = newHistoryState(cfg.History, o.metrics.reg)
	}
	o.refreshIndex()
	return o, nil
}

// refreshIndex rebuilds the enrichment index when the metadata changed.
// Called with o.mu held (or before any concurrency).
func (o *Observer) refreshIndex() {
	snap := o.cfg.Metadata.Current()
	if snap == o.lastSnap && o.index.Load() != nil {
		return
	}
	o.lastSnap = snap
	old := o.index.Load()
	cur := newEnrichIndex(snap)
	o.index.Store(cur)
	o.dec.forgetLinks()
	if old != nil {
		o.forgetPods(old, cur)
	}
}

// forgetPods removes, after Hubble's grace, the metric series bound to
// the pods that left the metadata, so pod contexts do not keep a series
// for every pod that ever ran.
func (o *Observer) forgetPods(old, cur *enrichIndex) {
	type ref struct{ namespace, name string }
	live := make(map[ref]bool, len(cur.pods))
	for _, p := range cur.pods {
		live[ref{p.namespace, p.name}] = true
	}
	gone := map[ref]bool{}
	for _, p := range old.pods {
		if r := (ref{p.namespace, p.name}); !live[r] {
			gone[r] = true
		}
	}
	for r := range gone {
		time.AfterFunc(o.podMetricsGrace, func() {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.metrics.hubble.DeletePod(r.namespace, r.name)
		})
	}
}

// HandleEvent decodes one datapath record and stores the flow. raw is not
// retained. Safe for concurrent use, though the agent calls it from one
// goroutine.
func (o *Observer) HandleEvent(raw []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	// A pointer comparison per event picks up metadata changes without a
	// goroutine; the rebuild happens once per change.
	if o.cfg.Metadata.Current() != o.lastSnap {
		o.refreshIndex()
	}
	e, err := o.dec.Decode(raw)
	if errors.Is(err, ErrNotReported) {
		o.kdrops.others.Inc()
		return
	}
	if err != nil {
		o.metrics.decodeErrors.Inc()
		return
	}
	if ev := &o.dec.ev; ev.Flags&datapath.FlagKernel != 0 {
		o.kdrops.observe(o.dec.kreason, o.dec.attributed)
	}
	o.tcp.observe(&o.dec.ev, e.flow, o.dec.kreason)
	o.orderFlow(e.flow, false)
	o.metrics.observe(e.flow)
	if o.dec.connOK {
		src, dst := o.dec.flowAddrs(e.flow)
		o.conns.observe(e.flow, o.dec.conn, src, dst)
	}
	o.ring.write(e)
	o.seen.Add(1)
	for _, s := range o.sinks {
		s.Flow(e.flow)
	}
}

// AddLostEvents records n datapath events lost before HandleEvent saw them
// (the BPF ring buffer was full): it counts them in loupe_events_lost_total
// and puts a LostEvent (source PERF_EVENT_RING_BUFFER, as Hubble names
// losses before its parser) in the flow ring, so that GetFlows streams
// show where flows are missing, as hubble observe prints them.
func (o *Observer) AddLostEvents(n uint64) {
	if n == 0 {
		return
	}
	o.metrics.lost.Add(float64(n))
	o.addLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, n)
}

// AddRateLimitedDropEvents records n drop events the datapath held back
// under its per-CPU drop-event rate limit (--drop-events-per-second): it
// puts a LostEvent with source UNKNOWN_LOST_EVENT_SOURCE in the flow ring.
// None of Hubble's sources is true of them: the ring buffer had room and
// nothing fell behind, so PERF_EVENT_RING_BUFFER would send an operator to
// the wrong remedy, and a source of its own keeps them apart from ring
// losses where LostEvents of one source are merged (the relay's queue).
// hubble observe prints "EVENTS LOST: UNKNOWN_LOST_EVENT_SOURCE ... n".
// They are not counted in loupe_events_lost_total, which stays the ring's
// count; loupe_datapath_events_total{outcome="rate_limited"} has them.
func (o *Observer) AddRateLimitedDropEvents(n uint64) {
	if n == 0 {
		return
	}
	o.addLost(flowpb.LostEventSource_UNKNOWN_LOST_EVENT_SOURCE, n)
}

// addLost writes a LostEvent stamped with the time the loss was noticed.
// It also counts them in hubble_lost_events_total{source}.
func (o *Observer) addLost(src flowpb.LostEventSource, n uint64) {
	rec := &lostRecord{event: flowpb.LostEvent{Source: src, NumEventsLost: n}}
	now := time.Now()
	rec.at.Seconds, rec.at.Nanos = now.Unix(), int32(now.Nanosecond())
	o.mu.Lock()
	defer o.mu.Unlock()
	o.metrics.hubble.Lost(src, n)
	o.ring.write(&entry{lost: rec})
}

// DecodeErrors returns how many records failed to decode.
func (o *Observer) DecodeErrors() uint64 {
	return uint64(counterValue(o.metrics.decodeErrors))
}

// MetricsHandler serves the observer's Prometheus registry.
func (o *Observer) MetricsHandler() http.Handler { return o.metrics.handler() }

// Gatherer is the observer's metrics registry, so the agent can serve it
// together with its own collectors on one /metrics.
func (o *Observer) Gatherer() prometheus.Gatherer { return o.metrics.reg }

// RegisterCollector adds a collector (e.g. the datapath's per-CPU counters)
// to the registry MetricsHandler serves.
func (o *Observer) RegisterCollector(c prometheus.Collector) error {
	return o.metrics.reg.Register(c)
}

// SeenFlows returns how many flows were stored since start.
func (o *Observer) SeenFlows() uint64 { return o.seen.Load() }

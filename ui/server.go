package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"

	respb "github.com/loupe-project/loupe/api/resources/v1"
	secpb "github.com/loupe-project/loupe/api/secevents/v1"
)

// Defaults of a UI Server.
const (
	DefaultListen        = ":12000"
	DefaultFlushInterval = 250 * time.Millisecond
	DefaultHistory       = 20000
	DefaultFeedRate      = 50 // flow rows a second per browser
	recentRows           = 1000
	// sentRows bounds the remembered rows a snapshot or a filter's answer
	// carries: the flow table shows at most 500 (MAX_ROWS in web/src/main.js),
	// so more would only make the first message longer to build, send and
	// parse.
	sentRows     = 500
	sendQueue    = 16
	writeTimeout = 10 * time.Second
)

// A browser that stops answering pings is dropped after pongWait, so a
// dead peer does not hold its connection, goroutines and queue forever.
// Variables so that a test can shorten them.
// idleTimeout closes keep-alive connections that carry no request, so
// idle browsers and scanners do not pin file descriptors.
var (
	pingInterval = 20 * time.Second
	pongWait     = 60 * time.Second
	idleTimeout  = 2 * time.Minute
)

// Config configures a Server. Zero values take the defaults.
type Config struct {
	// Listen is the HTTP address of the UI.
	Listen string
	// Flows opens the relay's merged flow stream. The server calls it again,
	// with backoff, whenever the stream ends.
	Flows func(ctx context.Context, req *observerpb.GetFlowsRequest) (observerpb.Observer_GetFlowsClient, error)
	// AllowedHosts lists the host names (no port) the UI answers to besides
	// IP literals and localhost: a request whose Host header names anything
	// else gets 421, so a DNS-rebinding page cannot read the UI.
	AllowedHosts []string
	// AllowedOrigins lists the browser origins (scheme://host:port) allowed
	// to open the websocket besides the UI's own; "*" allows any.
	AllowedOrigins []string
	// FlushInterval is how often map deltas and flow rows go to browsers.
	FlushInterval time.Duration
	// History is how many past flows to fold into the map on the first
	// connection to the relay.
	History uint64
	// FeedRate bounds the flow rows a second sent to one browser.
	FeedRate   float64
	Aggregator AggregatorConfig
	// SecurityEvents and Resources, when set, are the relay's merged
	// services: workloads get a badge for their recent security events
	// and their run-queue and I/O latency beside their traffic.
	SecurityEvents secpb.SecurityEventsClient
	Resources      respb.ResourcesClient
	// SecurityWindow is how long an event keeps its workload's badge
	// (default 1h, at most 24h); ResourcesInterval how often the
	// resources are read (default 10s): the latencies cover one interval.
	SecurityWindow    time.Duration
	ResourcesInterval time.Duration
	Log               *slog.Logger
}

// Server serves the UI: embedded assets, and the websocket.
type Server struct {
	cfg    Config
	log    *slog.Logger
	assets fs.FS
	up     websocket.Upgrader

	mu      sync.Mutex
	agg     *Aggregator
	clients map[*client]struct{}
	recent  []FlowRow // ring of rows, for a browser that just changed its filter
	recentN int
	sample  bucket // rows into recent when nobody asked for them
	state   Status
	flowsAt []rateSample
	health  *health
}

// Status is the connection state a browser shows.
type Status struct {
	// State is connecting (no stream yet), live, or reconnecting.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// Nodes are the relay's nodes as its node_status events last told.
	Nodes []NodeState `json:"nodes"`
	// LostEvents counts flows lost upstream (rings overflowed, slow
	// consumers) since the UI started; LastLost is when (unix ms).
	LostEvents uint64 `json:"lostEvents"`
	LastLost   int64  `json:"lastLost,omitempty"`
	// SecurityEventsLost counts security events lost upstream.
	SecurityEventsLost uint64 `json:"securityEventsLost,omitempty"`
	// Flows and Drops count what the map folded in; FlowsPerSecond is the
	// recent rate.
	Flows          uint64  `json:"flows"`
	Drops          uint64  `json:"drops"`
	FlowsPerSecond float64 `json:"flowsPerSecond"`
	Since          int64   `json:"since"` // state change, unix ms
}

// NodeState is one cluster node's state.
type NodeState struct {
	Name    string `json:"name"`
	State   string `json:"state"` // connected, unavailable, error
	Message string `json:"message,omitempty"`
}

type rateSample struct {
	t     time.Time
	flows uint64
}

// New builds a UI server.
func New(cfg Config) (*Server, error) {
	if cfg.Flows == nil {
		return nil, errors.New("ui: no flow source")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.History == 0 {
		cfg.History = DefaultHistory
	}
	if cfg.FeedRate <= 0 {
		cfg.FeedRate = DefaultFeedRate
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ResourcesInterval <= 0 {
		cfg.ResourcesInterval = DefaultResourcesInterval
	}
	for _, o := range cfg.AllowedOrigins {
		if o == "*" {
			continue
		}
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("ui: allowed origin %q: want scheme://host[:port]", o)
		}
	}
	assets, err := Assets()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Log, assets: assets, agg: NewAggregator(cfg.Aggregator),
		clients: map[*client]struct{}{}, recent: make([]FlowRow, recentRows),
		sample: newBucket(200, 200), health: newHealth(cfg.SecurityWindow),
		state: Status{State: "connecting", Nodes: []NodeState{}, Since: time.Now().UnixMilli()}}
	// No permessage-deflate: on the LAN or loopback, deflating a snapshot
	// of megabytes costs more time than it saves (measured: the first
	// render of 2,000 workloads went from 3.8 s to 2.0 s without it).
	s.up = websocket.Upgrader{CheckOrigin: s.checkOrigin}
	return s, nil
}

// hostAllowed says whether host (a Host header or an Origin's host, with
// or without a port) names this UI: an IP literal or localhost, which no
// attacker's DNS can point elsewhere, or a configured name. A rebinding
// attack reaches the UI under the attacker's own name, which fails here.
func (s *Server) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	for _, h := range s.cfg.AllowedHosts {
		if strings.EqualFold(strings.TrimSuffix(h, "."), host) {
			return true
		}
	}
	return false
}

// checkHost answers 421 to a request for a Host not in the allowlist, on
// every route.
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r.Host) {
			s.log.Debug("request for a foreign host refused", "host", r.Host, "path", r.URL.Path)
			http.Error(w, fmt.Sprintf("host %q is not one of this UI's names (IP addresses, localhost, --ui-allowed-hosts)", r.Host), http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkOrigin accepts the UI's own origin (its allowed Host, same port),
// the configured ones, and requests without an Origin (not from a browser,
// so not a cross-site request). Everything else could be another site's
// page reading the cluster's flows through the visitor's browser.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if (u.Scheme == "http" || u.Scheme == "https") && s.hostAllowed(u.Host) && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// Handler serves the assets, /ws and /api/map, each to allowed Hosts only.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	files := http.FileServerFS(s.assets)
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.HandleFunc("GET /api/map", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		snap := s.agg.Snapshot()
		st := s.statusLocked()
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		wl := s.health.all()
		_ = json.NewEncoder(w).Encode(struct {
			Map       Delta                      `json:"map"`
			Status    Status                     `json:"status"`
			Workloads map[string]*WorkloadHealth `json:"workloads"`
		}{snap, st, wl})
	})
	return s.checkHost(mux)
}

// Run listens on cfg.Listen and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("ui: listen: %w", err)
	}
	return s.Serve(ctx, lis)
}

// Serve follows the relay and serves HTTP on lis until ctx ends.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idleTimeout}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { s.follow(gctx); return nil })
	g.Go(func() error { s.flushLoop(gctx); return nil })
	if s.cfg.SecurityEvents != nil {
		g.Go(func() error { s.followSecurity(gctx); return nil })
	}
	if s.cfg.Resources != nil {
		g.Go(func() error { s.pollResources(gctx); return nil })
	}
	g.Go(func() error {
		s.log.Info("ui serving", "address", lis.Addr().String())
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("ui: serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		s.mu.Lock()
		for c := range s.clients {
			c.conn.Close()
		}
		s.mu.Unlock()
		return nil
	})
	return g.Wait()
}

// follow keeps one follow stream open to the relay, reconnecting with
// backoff, and resuming from the last flow it saw.
func (s *Server) follow(ctx context.Context) {
	delay := 250 * time.Millisecond
	var last time.Time
	for ctx.Err() == nil {
		req := &observerpb.GetFlowsRequest{Follow: true}
		if last.IsZero() {
			req.Number = s.cfg.History
		} else {
			req.Since = timestampOf(last)
		}
		got, err := s.stream(ctx, req, &last)
		if ctx.Err() != nil {
			return
		}
		if got {
			delay = 250 * time.Millisecond
		}
		msg := "stream ended"
		if err != nil {
			msg = err.Error()
		}
		s.log.Warn("relay flow stream ended; reconnecting", "error", msg, "delay", delay)
		s.setState("reconnecting", msg)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func (s *Server) stream(ctx context.Context, req *observerpb.GetFlowsRequest, last *time.Time) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := s.cfg.Flows(ctx, req)
	if err != nil {
		return false, err
	}
	if _, err := st.Header(); err != nil {
		return false, err
	}
	s.setState("live", "")
	got := false
	for {
		resp, err := st.Recv()
		if err != nil {
			return got, err
		}
		got = true
		switch r := resp.GetResponseTypes().(type) {
		case *observerpb.GetFlowsResponse_Flow:
			if t := r.Flow.GetTime(); t != nil {
				*last = t.AsTime()
			}
			s.Ingest(r.Flow)
		case *observerpb.GetFlowsResponse_NodeStatus:
			s.nodeStatus(r.NodeStatus)
		case *observerpb.GetFlowsResponse_LostEvents:
			s.mu.Lock()
			s.state.LostEvents += r.LostEvents.GetNumEventsLost()
			s.state.LastLost = time.Now().UnixMilli()
			s.mu.Unlock()
		}
	}
}

func (s *Server) setState(state, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.State != state || s.state.Error != msg {
		s.state.State, s.state.Error, s.state.Since = state, msg, time.Now().UnixMilli()
	}
}

func (s *Server) nodeStatus(ev *relaypb.NodeStatusEvent) {
	state := strings.ToLower(strings.TrimPrefix(ev.GetStateChange().String(), "NODE_"))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range ev.GetNodeNames() {
		i := slices.IndexFunc(s.state.Nodes, func(n NodeState) bool { return n.Name == name })
		ns := NodeState{Name: name, State: state, Message: ev.GetMessage()}
		if i < 0 {
			s.state.Nodes = append(s.state.Nodes, ns)
		} else {
			s.state.Nodes[i] = ns
		}
	}
	slices.SortFunc(s.state.Nodes, func(a, b NodeState) int { return strings.Compare(a.Name, b.Name) })
}

// Ingest folds one flow into the map and offers it to each browser's feed.
func (s *Server) Ingest(f *flowpb.Flow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.agg.Add(f)
	now := time.Now()
	var row *FlowRow
	mk := func() FlowRow {
		if row == nil {
			r := newRow(f, e)
			row = &r
		}
		return *row
	}
	for c := range s.clients {
		if c.paused || !c.filter.match(f, e) {
			continue
		}
		if !c.feed.take(now) {
			c.skipped++
			continue
		}
		c.rows = append(c.rows, mk())
	}
	// The history ring keeps every drop it can and a sample of the rest.
	if row != nil || f.GetVerdict() == flowpb.Verdict_DROPPED || s.sample.take(now) {
		s.recent[s.recentN%recentRows] = mk()
		s.recentN++
	}
}

func (s *Server) statusLocked() Status {
	st := s.state
	st.Nodes = slices.Clone(st.Nodes)
	st.Flows, st.Drops = s.agg.Counts()
	st.SecurityEventsLost = s.health.lost
	if n := len(s.flowsAt); n >= 2 {
		a, b := s.flowsAt[0], s.flowsAt[n-1]
		if d := b.t.Sub(a.t).Seconds(); d > 0 {
			st.FlowsPerSecond = float64(b.flows-a.flows) / d
		}
	}
	return st
}

// message is what the server sends a browser.
type message struct {
	Type    string     `json:"type"` // snapshot, tick, flows
	Map     *Delta     `json:"map,omitempty"`
	Rows    []FlowRow  `json:"rows,omitempty"`
	Skipped uint64     `json:"skipped,omitempty"`
	Status  *Status    `json:"status,omitempty"`
	Range   *RangeView `json:"range,omitempty"` // on the snapshot of a past range
	// Workloads' health: all of it on a live snapshot, what changed on a
	// tick (and the ids with nothing left to show in RemovedWorkloads).
	Workloads        map[string]*WorkloadHealth `json:"workloads,omitempty"`
	RemovedWorkloads []string                   `json:"removedWorkloads,omitempty"`
}

func (s *Server) flushLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.flush(now)
		}
	}
}

func (s *Server) flush(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	flows, _ := s.agg.Counts()
	s.flowsAt = append(s.flowsAt, rateSample{now, flows})
	for len(s.flowsAt) > 2 && now.Sub(s.flowsAt[0].t) > 5*time.Second {
		s.flowsAt = s.flowsAt[1:]
	}
	s.agg.Decay(now)
	d := s.agg.Flush()
	wl, wlGone := s.health.flush(now, s.agg)
	st := s.statusLocked()
	var shared []byte // the delta and status are the same for every browser
	for c := range s.clients {
		if c.rng != nil {
			s.rangeTickLocked(c, st)
			continue
		}
		if c.resync {
			if c.sendRaw(s.snapshotLocked(c)) {
				c.resync = false
			}
			continue
		}
		if d.Empty() && len(wl)+len(wlGone) == 0 && len(c.rows) == 0 && c.skipped == 0 && sameStatus(st, c.lastStatus) {
			continue
		}
		m := message{Type: "tick", Rows: c.rows, Skipped: c.skipped, Status: &st, Workloads: wl, RemovedWorkloads: wlGone}
		if !d.Empty() {
			m.Map = &d
		}
		var b []byte
		if len(c.rows) == 0 && c.skipped == 0 && shared != nil {
			b = shared
		} else {
			b = mustJSON(m)
			if len(c.rows) == 0 && c.skipped == 0 {
				shared = b
			}
		}
		c.rows, c.skipped = nil, 0
		c.lastStatus = st
		if !c.sendRaw(b) && (!d.Empty() || len(wl)+len(wlGone) > 0) {
			c.resync = true // it missed a delta: start it over from a snapshot
		}
	}
}

func sameStatus(a, b Status) bool {
	return a.State == b.State && a.Error == b.Error && a.LostEvents == b.LostEvents && a.Flows == b.Flows &&
		a.SecurityEventsLost == b.SecurityEventsLost &&
		a.Drops == b.Drops && a.FlowsPerSecond == b.FlowsPerSecond && slices.Equal(a.Nodes, b.Nodes)
}

// snapshotLocked returns the live snapshot message for c, encoded: the
// map, first, from the aggregator's encoded views (SnapshotJSON), then the
// rest of the message.
func (s *Server) snapshotLocked(c *client) []byte {
	st := s.statusLocked()
	c.lastStatus = st
	rest := mustJSON(message{Type: "snapshot", Status: &st, Rows: s.recentLocked(&c.filter), Workloads: s.health.all()})
	m := s.agg.SnapshotJSON()
	b := make([]byte, 0, len(m)+len(rest)+8)
	b = append(b, `{"map":`...)
	b = append(b, m...)
	b = append(b, ',')
	return append(b, rest[1:]...) // rest is an object with a type: {"type":...}
}

// recentLocked returns the newest sentRows remembered rows that pass fl,
// oldest first.
func (s *Server) recentLocked(fl *Filter) []FlowRow {
	n := min(s.recentN, recentRows)
	nodes := map[string]*node{}
	for _, nd := range s.agg.nodes {
		nodes[nd.id] = nd
	}
	labels := func(id string) []string {
		if nd := nodes[id]; nd != nil {
			return slices.Collect(mapsKeys(nd.labels.m))
		}
		return nil
	}
	out := []FlowRow{}
	for i := s.recentN - 1; i >= s.recentN-n && len(out) < sentRows; i-- {
		r := &s.recent[i%recentRows]
		var srcNS, dstNS string
		if nd := nodes[r.Source]; nd != nil {
			srcNS = nd.ns
		}
		if nd := nodes[r.Destination]; nd != nil {
			dstNS = nd.ns
		}
		port := r.DestPort
		if r.Reply {
			port = r.SourcePort
		}
		if fl.matchRow(r, srcNS, dstNS, port, labels) {
			out = append(out, *r)
		}
	}
	slices.Reverse(out)
	return out
}

// client is one browser.
type client struct {
	conn       *websocket.Conn
	out        chan []byte
	filter     Filter
	paused     bool
	feed       bucket
	rows       []FlowRow
	skipped    uint64
	resync     bool
	lastStatus Status
	rng        *RangeView // a past range shown instead of the live map; nil: live
	rangeSeq   uint64     // the latest range request, so a slow answer to an older one is dropped
}

func (c *client) send(m message) bool { return c.sendRaw(mustJSON(m)) }

// sendRaw queues without blocking: a browser that cannot keep up misses
// messages (and is resynced) instead of slowing the server down.
func (c *client) sendRaw(b []byte) bool {
	select {
	case c.out <- b:
		return true
	default:
		return false
	}
}

func mustJSON(m any) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("ui: encode: %v", err)) // only plain data types: cannot happen
	}
	return b
}

// request is what a browser sends: its filter, or pause/resume.
type request struct {
	Type   string `json:"type"` // filter, pause, resume, range
	Filter Filter `json:"filter"`
	// Seconds is the range's length back from now ("range"); 0 is live.
	Seconds int64 `json:"seconds"`
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	conn, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug("websocket upgrade refused", "origin", r.Header.Get("Origin"), "error", err)
		return // Upgrade wrote the error response
	}
	conn.SetReadLimit(64 << 10)
	_ = conn.SetReadDeadline(time.Now().Add(pongWait))
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(pongWait)) })
	c := &client{conn: conn, out: make(chan []byte, sendQueue), feed: newBucket(s.cfg.FeedRate, int(s.cfg.FeedRate)*2)}
	s.mu.Lock()
	s.clients[c] = struct{}{}
	c.sendRaw(s.snapshotLocked(c))
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		defer close(done)
		ping := time.NewTicker(pingInterval)
		defer ping.Stop()
		for {
			var err error
			select {
			case b, ok := <-c.out:
				if !ok {
					return
				}
				_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
				err = conn.WriteMessage(websocket.TextMessage, b)
			case <-ping.C:
				err = conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout))
			}
			if err != nil {
				conn.Close()
				for range c.out { // drain until the reader closes it
				}
				return
			}
		}
	}()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
		close(c.out)
		<-done
		conn.Close()
	}()
	for {
		var req request
		if err := conn.ReadJSON(&req); err != nil {
			return // closed, or silent past pongWait
		}
		_ = conn.SetReadDeadline(time.Now().Add(pongWait))
		s.handle(c, &req)
	}
}

// handle applies one browser request to its client.
func (s *Server) handle(c *client, req *request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.Type {
	case "filter":
		c.filter = req.Filter
		c.rows, c.skipped = nil, 0
		c.send(message{Type: "flows", Rows: s.recentLocked(&c.filter)})
	case "pause":
		c.paused = true
		c.rows = nil
	case "resume":
		c.paused = false
	case "range":
		s.setRangeLocked(c, req.Seconds)
	}
}

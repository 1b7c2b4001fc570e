package ui

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/relay"
	"github.com/loupe-project/loupe/relay/relaytest"
)

func TestCheckOrigin(t *testing.T) {
	s, err := New(Config{Flows: RelayFlows(nil), AllowedOrigins: []string{"https://ops.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host, origin string
		ok           bool
	}{
		{"10.0.0.1:12000", "", true}, // not a browser
		{"10.0.0.1:12000", "http://10.0.0.1:12000", true},
		{"localhost:12000", "http://LOCALHOST:12000", true},
		{"10.0.0.1:12000", "https://ops.example.com", true},
		{"10.0.0.1:12000", "http://evil.example.com", false},
		{"10.0.0.1:12000", "http://10.0.0.1:12001", false},
		{"10.0.0.1:12000", "null", false},
		{"10.0.0.1:12000", "http://ops.example.com", false},
	} {
		r := httptest.NewRequest("GET", "/ws", nil)
		r.Host = tc.host
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := s.checkOrigin(r); got != tc.ok {
			t.Errorf("host %s origin %q: allowed=%v, want %v", tc.host, tc.origin, got, tc.ok)
		}
	}
	if _, err := New(Config{Flows: RelayFlows(nil), AllowedOrigins: []string{"ops.example.com"}}); err == nil {
		t.Error("an origin without a scheme was accepted")
	}
}

// startRelay runs fake agents behind a real relay and returns a client of it.
func startRelay(t testing.TB, agents ...*relaytest.Agent) observerpb.ObserverClient {
	t.Helper()
	return observerpb.NewObserverClient(startRelayConn(t, agents...))
}

// startRelayConn starts a relay over agents and returns a connection to it.
func startRelayConn(t testing.TB, agents ...*relaytest.Agent) *grpc.ClientConn {
	t.Helper()
	var addrs []string
	for _, a := range agents {
		addrs = append(addrs, a.Addr())
	}
	srv, err := relay.New(relay.Config{Lab: true, SortBufferDrainTimeout: 20 * time.Millisecond}, relay.StaticPeers(addrs))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func startUI(t testing.TB, c observerpb.ObserverClient) (*Server, string) {
	t.Helper()
	return startUIConfig(t, Config{Flows: RelayFlows(c), FlushInterval: 20 * time.Millisecond})
}

func startUIConfig(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, serveUI(t, s)
}

// serveUI serves s on a loopback port until the test ends.
func serveUI(t testing.TB, s *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	return lis.Addr().String()
}

type wsClient struct {
	t     *testing.T
	conn  *websocket.Conn
	nodes map[string]NodeView
	edges map[string]EdgeView
	rows  []FlowRow
	state Status
	reset int // "flows" messages: answers to a filter
}

func dialWS(t *testing.T, addr string, origin string) (*wsClient, *http.Response, error) {
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", h)
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn, nodes: map[string]NodeView{}, edges: map[string]EdgeView{}}, resp, nil
}

// until reads messages, applying them as the browser does, until cond holds.
func (c *wsClient) until(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s; nodes %d edges %d rows %d state %+v", what, len(c.nodes), len(c.edges), len(c.rows), c.state)
		}
		_ = c.conn.SetReadDeadline(deadline)
		var m message
		if err := c.conn.ReadJSON(&m); err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		switch m.Type {
		case "snapshot":
			c.nodes, c.edges, c.rows = map[string]NodeView{}, map[string]EdgeView{}, nil
		case "flows":
			c.rows = nil
			c.reset++
		}
		if m.Map != nil {
			for _, id := range m.Map.RemovedNodes {
				delete(c.nodes, id)
			}
			for _, id := range m.Map.RemovedEdges {
				delete(c.edges, id)
			}
			for _, n := range m.Map.Nodes {
				c.nodes[n.ID] = n
			}
			for _, e := range m.Map.Edges {
				c.edges[e.ID] = e
			}
		}
		c.rows = append(c.rows, m.Rows...)
		if m.Status != nil {
			c.state = *m.Status
		}
	}
}

func TestWebsocketRejectsForeignOrigin(t *testing.T) {
	a, err := relaytest.Start(relaytest.Options{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	_, addr := startUI(t, startRelay(t, a))
	if _, resp, err := dialWS(t, addr, "http://evil.example.com"); err == nil {
		t.Fatal("foreign origin accepted")
	} else if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v, response %v", err, resp)
	}
	c, _, err := dialWS(t, addr, "http://"+addr)
	if err != nil {
		t.Fatalf("own origin refused: %v", err)
	}
	c.until("a snapshot", func() bool { return c.state.State != "" })
}

func TestServerStreamsMapFlowsAndState(t *testing.T) {
	a1, err := relaytest.Start(relaytest.Options{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a1.Stop)
	a2, err := relaytest.Start(relaytest.Options{Name: "node-2"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a2.Stop)
	_, addr := startUI(t, startRelay(t, a1, a2))
	c, _, err := dialWS(t, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	c.until("live with both nodes connected", func() bool {
		return c.state.State == "live" && len(c.state.Nodes) == 2 &&
			c.state.Nodes[0].State == "connected" && c.state.Nodes[1].State == "connected"
	})

	fe, api, db := pod("demo", "fe-1", "frontend"), pod("demo", "api-1", "api"), pod("demo", "db-1", "db")
	now := time.Now()
	var flows []*flowpb.Flow
	for i := range 40 {
		f := tcpFlow(fe, api, uint32(40000+i), 8080, flowpb.Verdict_FORWARDED, i)
		f.Time = timestampOf(now.Add(time.Duration(i) * time.Millisecond))
		flows = append(flows, f)
	}
	drop := tcpFlow(fe, db, 41000, 5432, flowpb.Verdict_DROPPED, 50)
	drop.Time = timestampOf(now.Add(50 * time.Millisecond))
	drop.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
	drop.IngressDeniedBy = []*flowpb.Policy{{Name: "db-only-api", Namespace: "demo"}}
	a1.Add(flows...)
	a2.Add(drop)

	feAPI, feDB := "demo/frontend|demo/api|8080/TCP", "demo/frontend|demo/db|5432/TCP"
	c.until("both edges", func() bool { return c.edges[feAPI].Flows == 40 && c.edges[feDB].Flows == 1 })
	if e := c.edges[feDB]; e.Verdicts["DROPPED"] != 1 || len(e.Policies) != 1 || e.Policies[0].Name != "db-only-api" {
		t.Fatalf("dropped edge %+v", e)
	}
	for _, id := range []string{"demo/frontend", "demo/api", "demo/db"} {
		if _, ok := c.nodes[id]; !ok {
			t.Fatalf("no node %s", id)
		}
	}

	// Filtering on the dropped edge: the history sent back has only its flow.
	if err := c.conn.WriteJSON(request{Type: "filter", Filter: Filter{Edge: feDB}}); err != nil {
		t.Fatal(err)
	}
	c.until("the edge's flows", func() bool { return c.reset > 0 })
	if len(c.rows) != 1 || c.rows[0].Edge != feDB || c.rows[0].Verdict != "DROPPED" || c.rows[0].Policy != "demo/db-only-api" {
		t.Fatalf("filtered rows: %d, first %+v", len(c.rows), c.rows[0])
	}

	// A node going away shows in the state.
	a2.Stop()
	c.until("node-2 unavailable", func() bool {
		i := slices.IndexFunc(c.state.Nodes, func(n NodeState) bool { return n.Name == "node-2" })
		return i >= 0 && c.state.Nodes[i].State != "connected"
	})
}

func TestAssetsServed(t *testing.T) {
	s, err := New(Config{Flows: RelayFlows(nil)})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "http://127.0.0.1:12000/", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "<title>loupe") {
		t.Fatalf("GET /: %d %q", rec.Code, rec.Body.String())
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Fatalf("CSP %q", csp)
	}
}

// TestSnapshotRowsNewest: a snapshot carries the newest sentRows of the
// remembered rows, oldest first.
func TestSnapshotRowsNewest(t *testing.T) {
	s, err := New(Config{Flows: RelayFlows(nil)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for i, f := range scaleFlows(200, recentRows, start) {
		f.Verdict = flowpb.Verdict_DROPPED // every drop is remembered
		f.Time = timestampOf(start.Add(time.Duration(i) * time.Millisecond))
		s.Ingest(f)
	}
	var m message
	if err := json.Unmarshal(s.snapshotLocked(&client{}), &m); err != nil {
		t.Fatal(err)
	}
	rows := m.Rows
	if len(rows) != sentRows {
		t.Fatalf("%d rows, want %d", len(rows), sentRows)
	}
	for i, r := range rows {
		if want := start.Add(time.Duration(recentRows-sentRows+i) * time.Millisecond).UnixMilli(); r.Time != want {
			t.Fatalf("row %d at %d, want %d (the newest, oldest first)", i, r.Time, want)
		}
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/loupe-project/loupe/internal/testtools"
)

func uuidsOf(fs []*flowpb.Flow) []string {
	var ids []string
	for _, f := range fs {
		ids = append(ids, f.GetUuid())
	}
	return ids
}

// stable runs a, then b, then a again until both runs of a agree, so that
// a and b saw the same buffers; it returns a's and b's results.
func stable[T any](t *testing.T, a func() T, b func() T, eq func(T, T) bool) (T, T) {
	t.Helper()
	for range 5 {
		x1 := a()
		y := b()
		if x2 := a(); eq(x1, x2) {
			return x1, y
		}
	}
	t.Fatal("flows kept arriving: could not compare two commands on the same buffers")
	var zero T
	return zero, zero
}

// The stock hubble CLI against a loupe agent: observe prints the same flows
// as loupe observe, byte-equivalent JSON, and status reads the agent.
func TestPrivilegedHubbleCLIAgainstAgent(t *testing.T) {
	c := needLab(t)
	bin := testtools.Hubble(t, "hubble")
	names := c.nodeNames()
	local, remote := c.podsOn(names[0]), c.podsOn(names[1])
	last := c.dial(t, "TCP", local[0], remote[1], 81)
	c.dial(t, "UDP", local[1], remote[2], 80)
	last = c.dial(t, "UDP", local[2], remote[0], 81)
	agent := c.agent(t, names[0])
	if err := poll(10*time.Second, 200*time.Millisecond, func() error {
		if len(last.matching(c.observe(t, agent, "--last", "5"))) == 0 {
			return fmt.Errorf("no flow of %s", last)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.quiet(t)

	for _, args := range [][]string{
		{"--last", "30"},
		{"--last", "100", "--protocol", "udp"},
		{"--last", "10", "--from-pod", local[0].Namespace + "/" + local[0].Name},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			loupeRun := func() []*observerpb.GetFlowsResponse {
				return parseFlows(t, c.mustLoupe(t, append([]string{"observe", "--server", agent, "-o", "json"}, args...)...))
			}
			hubbleRun := func() []*observerpb.GetFlowsResponse {
				out, errs, err := hubble(t, bin, append([]string{"observe", "--server", agent, "-o", "json"}, args...)...)
				if err != nil {
					t.Fatalf("hubble observe %v: %v\n%s", args, err, errs)
				}
				return parseFlows(t, out)
			}
			same := func(a, b []*observerpb.GetFlowsResponse) bool {
				return slices.Equal(uuidsOf(flowsOf(a)), uuidsOf(flowsOf(b)))
			}
			lr, hr := stable(t, loupeRun, hubbleRun, same)
			if len(flowsOf(lr)) == 0 {
				t.Fatalf("loupe observe %v printed no flows", args)
			}
			if lu, hu := uuidsOf(flowsOf(lr)), uuidsOf(flowsOf(hr)); !slices.Equal(lu, hu) {
				t.Fatalf("hubble and loupe show different flows for %v:\nhubble %v\nloupe  %v", args, hu, lu)
			}
			for i := range lr {
				if !proto.Equal(lr[i], hr[i]) {
					t.Errorf("line %d differs:\nhubble %v\nloupe  %v", i, hr[i], lr[i])
				}
			}
		})
	}

	t.Run("status", func(t *testing.T) {
		num := func() string {
			var st struct {
				Status struct {
					NumFlows string `json:"num_flows"`
				} `json:"status"`
			}
			if err := json.Unmarshal([]byte(c.mustLoupe(t, "status", "--server", agent, "-o", "json")), &st); err != nil {
				t.Fatal(err)
			}
			n, _ := strconv.Atoi(st.Status.NumFlows)
			return commas(n)
		}
		hubbleStatus := func() string {
			out, errs, err := hubble(t, bin, "status", "--server", agent)
			if err != nil {
				t.Fatalf("hubble status: %v\n%s%s", err, out, errs)
			}
			return out
		}
		n, out := stable(t, num, hubbleStatus, func(a, b string) bool { return a == b })
		for _, want := range []string{
			"Healthcheck (via " + agent + "): Ok",
			"Current/Max Flows: " + n + "/65,535",
			"Connected Nodes: 1/1",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("hubble status lacks %q:\n%s", want, out)
			}
		}
	})
}

// commas formats n as hubble status does: 12,345.
func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The stock Hubble Relay, given one loupe agent as its peer service, finds
// every node through the agent's peer.Peer Notify and serves their flows to
// loupe observe, in both one-shot and follow mode.
func TestPrivilegedStockHubbleRelay(t *testing.T) {
	c := needLab(t)
	bin := testtools.Hubble(t, "hubble-relay")
	names := c.nodeNames()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logFile := filepath.Join(t.TempDir(), "hubble-relay.log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(bin, "serve",
		"--peer-service", c.agent(t, names[0]),
		"--listen-address", addr,
		"--health-listen-address", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--disable-server-tls", "--disable-client-tls", "--gops=false",
		"--retry-timeout", "2s", "--log-level", "info")
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("hubble-relay log:\n%s", tail(logFile, 6000))
		}
	})

	// It connects to all three nodes it learnt from the agent.
	connected := regexp.MustCompile(`"num_connected_nodes":\s*3\b`)
	var last string
	if err := poll(30*time.Second, 300*time.Millisecond, func() error {
		out, errs, code := c.loupe("status", "--server", addr, "-o", "json")
		last = out + errs
		if code != 0 || !connected.MatchString(out) {
			return fmt.Errorf("hubble-relay does not reach 3 nodes yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("%v: loupe status says:\n%s", err, last)
	}
	nodes := c.mustLoupe(t, "list", "nodes", "--server", addr)
	for _, n := range names {
		if !strings.Contains(nodes, n) {
			t.Errorf("loupe list nodes through hubble-relay lacks %s:\n%s", n, nodes)
		}
	}

	// Connections between every pair of nodes show through the relay as
	// they do on the agents: the same flows, from all three nodes.
	since := time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	var conns []conn
	for i, n := range names {
		src, dst := c.podsOn(n)[0], c.podsOn(names[(i+1)%len(names)])[0]
		conns = append(conns, c.dial(t, "TCP", src, dst, 80))
	}
	// mine maps the uuids of the flows of conns to "node conn-index".
	mine := func(fs []*flowpb.Flow) map[string]string {
		ids := map[string]string{}
		for _, f := range fs {
			for i, k := range conns {
				if k.of(f) {
					ids[f.GetUuid()] = fmt.Sprintf("%s %d", f.GetNodeName(), i)
				}
			}
		}
		return ids
	}
	want := map[string]string{}
	if err := poll(10*time.Second, 300*time.Millisecond, func() error {
		for _, n := range names {
			for id, where := range mine(c.observe(t, c.agent(t, n), "--since", since)) {
				want[id] = where
			}
		}
		perConn := map[string]bool{}
		for _, where := range want {
			perConn[where] = true
		}
		for i, k := range conns {
			if !perConn[fmt.Sprintf("%s %d", k.src.Node, i)] || !perConn[fmt.Sprintf("%s %d", k.dst.Node, i)] {
				return fmt.Errorf("%s is not on both its nodes' agents yet", k)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := poll(10*time.Second, 300*time.Millisecond, func() error {
		got = mine(c.observe(t, addr, "--since", since))
		if len(got) < len(want) {
			return fmt.Errorf("%d of the agents' %d flows through hubble-relay", len(got), len(want))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for id, where := range want {
		if got[id] != where {
			t.Errorf("flow %s (%s): through hubble-relay %q", id, where, got[id])
		}
		seen[strings.Fields(where)[0]] = true
	}
	if len(seen) != 3 || len(got) != len(want) {
		t.Errorf("hubble-relay gave %d flows; the agents of nodes %v hold %d", len(got), seen, len(want))
	}

	// Follow through the stock relay.
	fl := c.follow(t, addr)
	c.live(t, fl, c.podsOn(names[2])[0], c.podsOn(names[0])[1])
}

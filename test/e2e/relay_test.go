package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/internal/testtools"
)

// The lab's loupe-relay: --last 20 is the cluster's 20 most recent flows,
// from all three nodes, in time order; the stock hubble CLI reads it too.
func TestPrivilegedRelayLast(t *testing.T) {
	c := needLab(t)
	names := c.nodeNames()
	// One TCP connection from each node to the next: the newest flows come
	// from every node.
	var conns []conn
	for i, n := range names {
		conns = append(conns, c.dial(t, "TCP", c.podsOn(n)[0], c.podsOn(names[(i+1)%len(names)])[0], 81))
	}
	lastConn := conns[len(conns)-1]
	if err := poll(10*time.Second, 200*time.Millisecond, func() error {
		for _, n := range []string{lastConn.src.Node, lastConn.dst.Node} {
			if len(lastConn.matching(c.observe(t, c.agent(t, n), "--last", "10"))) == 0 {
				return fmt.Errorf("no flow of %s on %s", lastConn, n)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.quiet(t)

	relay := c.status.RelayAddress
	relayRun := func() []*flowpb.Flow { return c.observe(t, relay, "--last", "20") }
	// The expected answer: every agent's last 20, merged, newest 20.
	agentsRun := func() []*flowpb.Flow {
		var all []*flowpb.Flow
		for _, n := range names {
			all = append(all, c.observe(t, c.agent(t, n), "--last", "20")...)
		}
		sort.SliceStable(all, func(i, j int) bool { return all[i].GetTime().AsTime().Before(all[j].GetTime().AsTime()) })
		if len(all) > 20 {
			all = all[len(all)-20:]
		}
		return all
	}
	sameSet := func(a, b []*flowpb.Flow) bool {
		x, y := uuidsOf(a), uuidsOf(b)
		slices.Sort(x)
		slices.Sort(y)
		return slices.Equal(x, y)
	}
	got, want := stable(t, relayRun, agentsRun, sameSet)
	if len(got) != 20 {
		t.Fatalf("relay --last 20 returned %d flows", len(got))
	}
	if !sameSet(got, want) {
		t.Errorf("relay --last 20 is not the cluster's 20 newest flows:\nrelay:\n%sagents:\n%s", describeAll(got), describeAll(want))
	}
	nodes := map[string]bool{}
	for i, f := range got {
		if f.GetNodeName() == "" {
			t.Errorf("flow without node_name: %s", describe(f))
		}
		nodes[f.GetNodeName()] = true
		if i > 0 && f.GetTime().AsTime().Before(got[i-1].GetTime().AsTime()) {
			t.Errorf("relay flows out of time order at %d:\n%s", i, describeAll(got))
		}
	}
	if len(nodes) != 3 {
		t.Errorf("relay --last 20 has flows from %v, want all 3 nodes:\n%s", nodes, describeAll(got))
	}

	t.Run("hubble", func(t *testing.T) {
		bin := testtools.Hubble(t, "hubble")
		out, errs, err := hubble(t, bin, "observe", "--server", relay, "-o", "json", "--last", "20")
		if err != nil {
			t.Fatalf("hubble observe --server relay: %v\n%s", err, errs)
		}
		if h := flowsOf(parseFlows(t, out)); !slices.Equal(uuidsOf(h), uuidsOf(got)) {
			t.Errorf("hubble observe through the relay:\n%sloupe observe:\n%s", describeAll(h), describeAll(got))
		}
		out, errs, err = hubble(t, bin, "list", "nodes", "--server", relay)
		if err != nil {
			t.Fatalf("hubble list nodes: %v\n%s", err, errs)
		}
		for _, n := range names {
			line := ""
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, n+" ") {
					line = l
				}
			}
			if !strings.Contains(line, "Connected") {
				t.Errorf("hubble list nodes has no connected %s:\n%s", n, out)
			}
		}
		out, errs, err = hubble(t, bin, "status", "--server", relay)
		if err != nil || !strings.Contains(out, "Connected Nodes: 3/3") {
			t.Errorf("hubble status --server relay: %v\n%s%s", err, out, errs)
		}
	})
}

// agentPID returns the pid of node's running agent, checking that it is one.
func (c *cluster) agentPID(t *testing.T, node string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "nodes", node, "agent.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("agent.pid of %s: %v", node, err)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !strings.Contains(string(cmdline), "loupe-agent") || !strings.Contains(string(cmdline), c.dir) {
		t.Fatalf("pid %d of %s is not this lab's agent: %q", pid, node, cmdline)
	}
	return pid
}

// awaitNote waits for a node_status notice on the follower's stderr.
func (fl *follower) awaitNote(t *testing.T, timeout time.Duration, what string, match func(*relaypb.NodeStatusEvent) bool) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case l := <-fl.notes:
			if ns := l.res.GetNodeStatus(); ns != nil && match(ns) {
				return
			}
		case <-timer.C:
			t.Fatalf("no %s notice within %s; stderr:\n%s", what, timeout, fl.stderrText())
		}
	}
}

// Kill one agent while following the relay: flows from the other nodes keep
// coming, stderr names the node that went away, and after `loupe lab up`
// restarts the agent its flows come back into the same stream.
func TestPrivilegedRelayAgentKilled(t *testing.T) {
	c := needLab(t)
	names := c.nodeNames()
	victim := names[1]
	p1, p3, pv := c.podsOn(names[0])[0], c.podsOn(names[2])[0], c.podsOn(victim)[0]
	t.Cleanup(func() {
		// Leave a whole lab for the tests after this one, whatever happened.
		if out, errs, code := c.lab("up"); code != 0 {
			t.Errorf("loupe lab up after the test: exit %d\n%s%s", code, out, errs)
		}
	})

	fl := c.follow(t, c.status.RelayAddress, "--debug")
	c.live(t, fl, p1, p3)

	pid := c.agentPID(t, victim)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	awaitGone(t, pid)
	fl.awaitNote(t, 15*time.Second, "NODE_UNAVAILABLE for "+victim, func(ns *relaypb.NodeStatusEvent) bool {
		return ns.GetStateChange() == relaypb.NodeState_NODE_UNAVAILABLE && slices.Contains(ns.GetNodeNames(), victim)
	})
	t.Logf("unavailable notice %s after the kill", time.Since(killed).Round(time.Millisecond))

	// The stream goes on with the other nodes.
	k := c.dial(t, "TCP", p1, p3, 80)
	for _, n := range []string{p1.Node, p3.Node} {
		fl.await(t, 10*time.Second, "flow of "+k.String()+" from "+n, func(f *flowpb.Flow) bool {
			return k.of(f) && f.GetNodeName() == n
		})
	}

	// A one-shot request answers within 5s while the node is down, exits 0
	// and names the missing node on stderr.
	start := time.Now()
	out, errs, code := c.loupe("observe", "--server", c.status.RelayAddress, "--last", "20", "-o", "json")
	if took := time.Since(start); code != 0 || took > 5*time.Second {
		t.Errorf("loupe observe --last 20 with %s down: exit %d after %s, want 0 within 5s\n%s", victim, code, took, errs)
	}
	if len(flowsOf(parseFlows(t, out))) == 0 || !strings.Contains(errs, victim) {
		t.Errorf("loupe observe --last 20 with %s down: %d flows, stderr %q; want flows and a notice naming %s", victim, len(flowsOf(parseFlows(t, out))), errs, victim)
	}

	// Restart the agent; its flows come back into the stream.
	c.mustLab(t, "up")
	if newPID := c.agentPID(t, victim); newPID == pid {
		t.Fatalf("lab up did not restart the agent of %s", victim)
	}
	restarted := time.Now()
	deadline := restarted.Add(30 * time.Second)
	back := false
	var sent []conn
	for !back && time.Now().Before(deadline) {
		sent = append(sent, c.dial(t, "UDP", p1, pv, 81))
		timer := time.NewTimer(time.Second)
	wait:
		for {
			select {
			case l := <-fl.flows:
				f := l.res.GetFlow()
				for _, k := range sent {
					if k.of(f) && f.GetNodeName() == victim {
						back = true
						break wait
					}
				}
			case <-timer.C:
				break wait
			}
		}
		timer.Stop()
	}
	if !back {
		t.Fatalf("no flow from %s within 30s of restarting its agent; stderr:\n%s", victim, fl.stderrText())
	}
	t.Logf("flows from %s back %s after the restart", victim, time.Since(restarted).Round(time.Millisecond))
	fl.awaitNote(t, 5*time.Second, "NODE_CONNECTED for "+victim, func(ns *relaypb.NodeStatusEvent) bool {
		return ns.GetStateChange() == relaypb.NodeState_NODE_CONNECTED && slices.Contains(ns.GetNodeNames(), victim)
	})
	if err := c.refresh(); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.status.Nodes {
		if !n.Healthy {
			t.Errorf("node %s unhealthy after the restart", n.Name)
		}
	}
}

// Following the relay during lab traffic: flows from every node, in time
// order up to the relay's 1s sort window.
func TestPrivilegedRelayFollowAllNodes(t *testing.T) {
	c := needLab(t)
	names := c.nodeNames()
	fl := c.follow(t, c.status.RelayAddress)
	c.live(t, fl, c.podsOn(names[0])[0], c.podsOn(names[1])[0])
	c.mustLab(t, "traffic", "--duration", "3s", "--rate", "20")
	for i, n := range names {
		c.dial(t, "TCP", c.podsOn(n)[0], c.podsOn(names[(i+1)%len(names)])[0], 80)
	}
	// Read what comes until two seconds pass without a flow.
	var got []*flowpb.Flow
	nodes := map[string]int{}
	for quiet := time.NewTimer(2 * time.Second); ; {
		select {
		case l := <-fl.flows:
			if f := l.res.GetFlow(); f != nil {
				got = append(got, f)
				nodes[f.GetNodeName()]++
			}
			quiet.Reset(2 * time.Second)
			continue
		case <-fl.done:
			t.Fatalf("loupe observe -f exited: %s", fl.stderrText())
		case <-quiet.C:
		}
		break
	}
	for _, n := range names {
		if nodes[n] == 0 {
			t.Errorf("no flow from %s in %d followed flows: %v", n, len(got), nodes)
		}
	}
	var newest time.Time
	for _, f := range got {
		ft := f.GetTime().AsTime()
		if ft.Before(newest.Add(-time.Second)) {
			t.Errorf("flow %s came after one %s newer, beyond the 1s sort window", describe(f), newest.Sub(ft))
		}
		if ft.After(newest) {
			newest = ft
		}
	}
	t.Logf("%d flows followed from %v", len(got), nodes)
}

// The stock hubble CLI follows loupe-relay, and an agent directly: the
// agents' watermarks (responses without a type) stop at the relay or, on
// the direct stream, are skipped by hubble, and it prints every flow.
func TestPrivilegedStockHubbleFollowsWatermarks(t *testing.T) {
	c := needLab(t)
	bin := testtools.Hubble(t, "hubble")
	names := c.nodeNames()
	local, remote := c.podsOn(names[0]), c.podsOn(names[1])
	home := t.TempDir()
	env := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "TERM=dumb"}
	followers := map[string]*follower{
		"relay":  followCmd(t, env, bin, "observe", "--server", c.status.RelayAddress, "-o", "json", "-f"),
		"direct": followCmd(t, env, bin, "observe", "--server", c.agent(t, names[0]), "-o", "json", "-f"),
	}
	for _, fl := range followers {
		c.live(t, fl, local[0], remote[0])
	}
	var sent []conn
	for i := range 8 {
		sent = append(sent, c.dial(t, "TCP", local[i%len(local)], remote[(i+1)%len(remote)], 80))
	}
	// What the agents recorded of those connections, through a plain request.
	var want []*flowpb.Flow
	if err := poll(15*time.Second, 300*time.Millisecond, func() error {
		want = want[:0]
		for _, f := range c.observe(t, c.status.RelayAddress, "--last", "5000") {
			for _, k := range sent {
				if k.of(f) {
					want = append(want, f)
					break
				}
			}
		}
		for _, k := range sent {
			if len(k.matching(want)) == 0 {
				return fmt.Errorf("no flow of %s yet", k)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for name, fl := range followers {
		missing := map[string]*flowpb.Flow{}
		for _, f := range want {
			if name == "relay" || f.GetNodeName() == names[0] {
				missing[f.GetUuid()] = f
			}
		}
		n := len(missing)
		timeout := time.NewTimer(20 * time.Second)
		for len(missing) > 0 {
			select {
			case l := <-fl.flows:
				if l.res == nil || l.res.GetResponseTypes() == nil {
					t.Fatalf("%s: hubble printed a line that is no flow, status or loss: %q", name, l.raw)
				}
				delete(missing, l.res.GetFlow().GetUuid())
			case <-fl.done:
				t.Fatalf("%s: hubble observe -f exited: %s", name, fl.stderrText())
			case <-timeout.C:
				var d []*flowpb.Flow
				for _, f := range missing {
					d = append(d, f)
				}
				t.Fatalf("%s: hubble observe -f printed %d of %d flows; missing:\n%sstderr:\n%s", name, n-len(missing), n, describeAll(d), fl.stderrText())
			}
		}
		timeout.Stop()
		t.Logf("%s: hubble printed all %d flows", name, n)
	}
}

// A live agent sends its followers watermarks (responses without a type,
// observer.WatermarkInterval apart) while pods talk, and keeps their
// promise: no flow it sends afterwards is older than the last one. The
// relay tests' fake agents send the same responses.
func TestPrivilegedAgentWatermarks(t *testing.T) {
	c := needLab(t)
	names := c.nodeNames()
	local, remote := c.podsOn(names[0]), c.podsOn(names[1])
	conn, err := grpc.NewClient(c.agent(t, names[0]), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	type resp struct {
		r   *observerpb.GetFlowsResponse
		err error
	}
	ch := make(chan resp, 1<<14)
	go func() {
		for {
			r, err := stream.Recv()
			ch <- resp{r, err}
			if err != nil {
				return
			}
		}
	}()
	// Responses queue in ch meanwhile, in stream order.
	for i := range 20 {
		c.dial(t, "TCP", local[i%len(local)], remote[i%len(remote)], 80)
		time.Sleep(50 * time.Millisecond)
	}
	var mark time.Time
	marks, flows, after := 0, 0, 0
	deadline := time.After(30 * time.Second)
	for marks < 40 || flows == 0 || after == 0 {
		select {
		case x := <-ch:
			if x.err != nil {
				t.Fatal(x.err)
			}
			ts := x.r.GetTime().AsTime()
			if x.r.GetResponseTypes() == nil {
				if x.r.GetNodeName() != names[0] || !ts.After(mark) || ts.After(time.Now()) {
					t.Fatalf("watermark %v after %v", x.r, mark)
				}
				mark = ts
				marks++
				continue
			}
			if f := x.r.GetFlow(); f != nil {
				if f.GetTime().AsTime().Before(mark) {
					t.Fatalf("flow %s older than the watermark %v before it", describe(f), mark)
				}
				flows++
				if !mark.IsZero() {
					after++
				}
			}
		case <-deadline:
			t.Fatalf("%d watermarks, %d flows (%d after a watermark) in 30s", marks, flows, after)
		}
	}
	t.Logf("%d watermarks, %d flows", marks, flows)
}

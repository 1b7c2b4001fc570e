package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
	"github.com/loupe-project/loupe/api/endpoint/v1/endpointgrpc"
	"github.com/loupe-project/loupe/observer/hubblemetrics"
)

const (
	agentReadyTimeout = 60 * time.Second
	applyTimeout      = 30 * time.Second
)

// agentArgs is node n's loupe-agent command line.
func (l *Lab) agentArgs(bin string, n Node) []string {
	ip := netip.MustParseAddr(n.IP)
	args := []string{bin,
		"--node-name", n.Name,
		"--pod-cidr", n.PodCIDR,
		"--state-dir", l.NodeStateDir(n.Name),
		"--bpf-root", l.NodeBPFRoot(n.Name),
		"--socket", l.AgentSocket(n.Name),
		"--insecure-listen", netip.AddrPortFrom(ip, ObserverPort).String(), // the lab bridge is private
		"--metrics-listen", n.MetricsAddress(),
		// Every Hubble family the Grafana dashboards read, with their contexts.
		"--metrics", hubblemetrics.Dashboards,
		"--manifests-dir", l.ManifestsDir(),
	}
	if l.XDPMode != "" {
		args = append(args, "--xdp-mode", l.XDPMode)
	}
	if l.FlowBufferSize != 0 {
		args = append(args, "--flow-buffer-size", strconv.Itoa(l.FlowBufferSize))
	}
	if l.RulesDir != "" {
		args = append(args, "--rules-dir", l.RulesDir)
	}
	return args
}

// agentPID returns the pid of node n's running agent, or 0.
func (l *Lab) agentPID(n Node) int {
	return pidFromFile(l.AgentPIDFile(n.Name), l.AgentSocket(n.Name))
}

// startAgent starts node n's agent unless it runs already. The returned
// channel closes if the agent exits while this process watches it.
func (l *Lab) startAgent(bin string, n Node) (<-chan struct{}, error) {
	if l.agentPID(n) != 0 {
		return nil, nil
	}
	for _, d := range []string{l.NodeStateDir(n.Name), l.NodeBPFRoot(n.Name)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	_ = os.Remove(l.AgentSocket(n.Name))
	d := detached{netns: n.NetNSPath(), argv: l.agentArgs(bin, n), logFile: l.AgentLog(n.Name), pidFile: l.AgentPIDFile(n.Name)}
	_, done, err := d.start()
	if err != nil {
		return nil, fmt.Errorf("node %s: agent: %w", n.Name, err)
	}
	return done, nil
}

// agentStatus asks node n's agent for its status.
func (l *Lab) agentStatus(ctx context.Context, n Node) (*endpointv1.StatusResponse, error) {
	conn, err := grpc.NewClient("unix://"+l.AgentSocket(n.Name), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("node %s: dial agent: %w", n.Name, err)
	}
	defer conn.Close()
	st, err := endpointgrpc.NewEndpointsClient(conn).Status(ctx, &endpointv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("node %s: agent status: %w", n.Name, err)
	}
	return st, nil
}

// waitAgents waits until every agent is ready and has applied generation gen
// (gen 0: readiness only). exited maps node names to channels that close when
// an agent started by this process dies, to fail fast with its log.
func (l *Lab) waitAgents(ctx context.Context, gen int64, timeout time.Duration, exited map[string]<-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	for _, n := range l.Nodes {
		g.Go(func() error {
			var last string
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				// An agent this process just started is watched through its
				// exited channel: while nsenter execs it, /proc/PID/cmdline
				// reads empty for a moment and agentPID says 0.
				if exited[n.Name] == nil && l.agentPID(n) == 0 {
					return fmt.Errorf("node %s: agent is not running; its log (%s) ends with:\n%s", n.Name, l.AgentLog(n.Name), tail(l.AgentLog(n.Name), 2000))
				}
				sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
				st, err := l.agentStatus(sctx, n)
				scancel()
				switch {
				case err != nil:
					last = err.Error()
				case !st.GetReady():
					last = "not ready: " + st.GetMessage()
				case gen > 0 && appliedGen(st.GetAppliedGeneration()) < gen:
					last = fmt.Sprintf("applied generation %q, want %d", st.GetAppliedGeneration(), gen)
				default:
					return nil
				}
				select {
				case <-ctx.Done():
					if gen > 0 {
						return fmt.Errorf("node %s: agent did not apply manifests generation %d within %s (%s)", n.Name, gen, timeout, last)
					}
					return fmt.Errorf("node %s: agent not ready within %s (%s); log %s", n.Name, timeout, last, l.AgentLog(n.Name))
				case <-exited[n.Name]:
					return fmt.Errorf("node %s: agent exited; its log (%s) ends with:\n%s", n.Name, l.AgentLog(n.Name), tail(l.AgentLog(n.Name), 2000))
				case <-tick.C:
				}
			}
		})
	}
	return g.Wait()
}

func appliedGen(s string) int64 {
	g, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return -1
	}
	return g
}

// RestartAgent stops node's agent and starts it again with extra flags
// after the lab's own (a repeated flag's last value wins), then waits
// until it is ready and has applied the manifests. The datapath stays
// pinned meanwhile, so pods keep their traffic. The bench uses it to
// measure one agent under two settings in the same run.
func (l *Lab) RestartAgent(ctx context.Context, agentBin, node string, extra ...string) error {
	n, ok := l.Node(node)
	if !ok {
		return fmt.Errorf("no node %q", node)
	}
	if pid := l.agentPID(n); pid != 0 {
		stopPIDs([]int{pid}, 10*time.Second)
	}
	_ = os.Remove(l.AgentSocket(n.Name))
	d := detached{netns: n.NetNSPath(), argv: append(l.agentArgs(agentBin, n), extra...), logFile: l.AgentLog(n.Name), pidFile: l.AgentPIDFile(n.Name)}
	_, done, err := d.start()
	if err != nil {
		return fmt.Errorf("node %s: agent: %w", n.Name, err)
	}
	gen, err := l.generation()
	if err != nil {
		return err
	}
	return l.waitAgents(ctx, gen, agentReadyTimeout, map[string]<-chan struct{}{n.Name: done})
}

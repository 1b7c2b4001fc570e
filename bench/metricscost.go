package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/loupe-project/loupe/observer/hubblemetrics"
)

// metricsCostTarget: with every Hubble family and the dashboards' contexts
// on, the agent should still turn at least this share of the events per
// CPU-second it does with the default set.
const metricsCostTarget = 0.8

// runEventsAndMetricsCost is the events suite: runEvents, then
// runMetricsCost on the same lab once runEvents released its server.
func runEventsAndMetricsCost(ctx context.Context, cfg *Config, bl *benchLab) ([]Row, error) {
	rows, err := runEvents(ctx, cfg, bl)
	if err != nil {
		return rows, err
	}
	mc, err := runMetricsCost(ctx, cfg, bl)
	rows = append(rows, mc...)
	if err != nil {
		return rows, err
	}
	ok, err := runOTLPKeepUp(ctx, cfg, bl)
	return append(rows, ok...), err
}

// runMetricsCost measures what Hubble's metric families cost the agent:
// events per agent CPU-second under the same short-connection traffic as
// runEvents, with node 1's agent restarted with the default set and with
// every family (the lab's dashboards set), rounds interleaved. The agent
// is left with the lab's own settings.
func runMetricsCost(ctx context.Context, cfg *Config, bl *benchLab) ([]Row, error) {
	c1, s1 := bl.pods["c1"], bl.pods["s1"]
	node := c1.Node
	agentBin := filepath.Join(cfg.BinDir, "loupe-agent")
	defer func() {
		if err := bl.lab.RestartAgent(context.WithoutCancel(ctx), agentBin, node.Name); err != nil {
			cfg.Log.Warn("metrics cost: restore agent", "err", err)
		}
	}()
	srv, err := startRRServer(s1.Netns, eventsPort)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	metricsURL := fmt.Sprintf("http://%s/metrics", node.MetricsAddress())
	dur := pick(cfg, 5*time.Second, 2*time.Second, 500*time.Millisecond)
	sets := map[string]string{"default": hubblemetrics.Default, "all": hubblemetrics.Dashboards}
	per := map[string][]float64{}
	for r := range cfg.rounds() {
		order := []string{"default", "all"}
		if r%2 == 1 {
			order = []string{"all", "default"}
		}
		for _, name := range order {
			if err := bl.lab.RestartAgent(ctx, agentBin, node.Name, "--metrics", sets[name]); err != nil {
				return nil, err
			}
			pid, err := agentPID(bl.lab.AgentPIDFile(node.Name))
			if err != nil {
				return nil, err
			}
			before, err := readAgent(ctx, metricsURL, pid)
			if err != nil {
				return nil, err
			}
			if _, err := shortConns(ctx, c1.Netns, s1.IP, eventsPort, 8, dur); err != nil {
				return nil, err
			}
			after, err := settle(ctx, metricsURL, pid)
			if err != nil {
				return nil, err
			}
			cs := float64(after.cpuTicks-before.cpuTicks) / 100
			if cs <= 0 {
				continue
			}
			per[name] = append(per[name], (after.flows-before.flows)/cs)
			cfg.Log.Info("metrics cost", "round", r+1, "set", name, "events_per_cpu_s", fmt.Sprintf("%.0f", per[name][len(per[name])-1]))
		}
	}
	row, err := NewRow("events_per_agent_core_all_metrics", "events/cpu-s", per["all"], per["default"], "default metrics", metricsCostTarget, Higher,
		"events per agent CPU-second with every Hubble family and the dashboards' contexts on ("+hubblemetrics.String(hubblemetrics.MustParse(hubblemetrics.Dashboards))[:40]+"...) against --metrics' default set, same traffic, agent restarted between, rounds interleaved")
	if err != nil {
		return nil, err
	}
	return []Row{row}, nil
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Suites, in the order they run.
var Suites = []string{"decode", "relay", "follow", "l7hook", "otlp", "history", "secevents", "resources", "policy", "service", "datapath", "cni", "events", "kdrop", "l7http"}

// Run runs the suites cfg asks for. It always tears its lab down, and
// returns the rows it has even when a suite fails.
func Run(ctx context.Context, cfg *Config) (rows []Row, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("bench: needs root (network namespaces, BPF)")
	}
	for _, s := range cfg.Suites {
		if !contains(Suites, s) {
			return nil, fmt.Errorf("bench: unknown suite %q (have %v)", s, Suites)
		}
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var errs []error
	step := func(name string, f func() ([]Row, error)) {
		if !cfg.want(name) || ctx.Err() != nil {
			return
		}
		start := time.Now()
		r, err := f()
		rows = append(rows, r...)
		if err != nil {
			cfg.Log.Error("suite failed", "suite", name, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		cfg.Log.Info("suite done", "suite", name, "rows", len(r), "took", time.Since(start).Round(time.Millisecond))
	}
	step("decode", func() ([]Row, error) { return runDecode(ctx, cfg) })
	step("relay", func() ([]Row, error) { return runRelayRows(ctx, cfg) })
	step("follow", func() ([]Row, error) { return runFollowRows(ctx, cfg) })
	step("l7hook", func() ([]Row, error) { return runL7Hook(ctx, cfg) })
	step("otlp", func() ([]Row, error) { return runOTLP(ctx, cfg) })
	step("history", func() ([]Row, error) { return runHistory(ctx, cfg) })
	step("secevents", func() ([]Row, error) { return runSecurityEvents(ctx, cfg) })
	step("resources", func() ([]Row, error) { return runResources(ctx, cfg) })
	step("policy", func() ([]Row, error) { return runPolicyApply(ctx, cfg) })
	step("service", func() ([]Row, error) { return runServiceApply(ctx, cfg) })

	if cfg.want("datapath") || cfg.want("cni") || cfg.want("events") || cfg.want("kdrop") || cfg.want("l7http") {
		for _, b := range []string{"loupe", "loupe-agent", "loupe-cni"} {
			if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
				return rows, fmt.Errorf("bench: %w (run make build)", err)
			}
		}
		bl, err := upLab(ctx, cfg)
		defer downLab(cfg)
		if err != nil {
			errs = append(errs, err)
		} else {
			step("datapath", func() ([]Row, error) { return runDatapath(ctx, cfg, bl) })
			step("cni", func() ([]Row, error) { return runCNI(ctx, cfg, bl) })
			step("events", func() ([]Row, error) { return runEventsAndMetricsCost(ctx, cfg, bl) })
			step("kdrop", func() ([]Row, error) { return runKernelDrops(ctx, cfg, bl) })
			step("l7http", func() ([]Row, error) { return runL7HTTP(ctx, cfg, bl) })
		}
	}
	rows = perCoreVsDecode(rows)
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("bench: interrupted: %w", ctx.Err()))
	}
	return rows, errors.Join(errs...)
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// decodeShare is the bar for the agent: events per agent CPU-second
// at least half of what the decoder does in process on one core.
const decodeShare = 0.5

// perCoreVsDecode re-bases events_per_agent_core on decode_rate when both
// ran: ratio is then the share of the in-process rate the agent reaches.
func perCoreVsDecode(rows []Row) []Row {
	var dec *Row
	for i := range rows {
		if rows[i].Name == "decode_rate" {
			dec = &rows[i]
		}
	}
	for i := range rows {
		if r := &rows[i]; r.Name == "events_per_agent_core" && dec != nil && dec.Value > 0 {
			r.Baseline, r.BaseSpreadPct, r.BaselineName = dec.Value, dec.SpreadPct, "decode_rate (in process, one core)"
			r.Ratio, r.Target = r.Value/r.Baseline, decodeShare
			r.Pass = passes(r.Ratio, r.Target, r.Better)
		}
	}
	return rows
}

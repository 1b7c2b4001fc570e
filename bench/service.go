package bench

import (
	"context"
	"path/filepath"
	"strconv"
)

// Issue #19's bars for Service translation's control plane.
const (
	serviceApplyBarS   = 2.0  // 10,000 Services x 10 backends
	serviceChangeBarMS = 50.0 // one backend change among them
)

// runServiceApply writes 10,000 Services x 10 backends into a real
// datapath's Service maps with the agent's Syncer, round after round, and
// changes one backend among them (package service's benchmarks).
func runServiceApply(ctx context.Context, cfg *Config) ([]Row, error) {
	bin, err := testBinary(ctx, cfg, cfg.Root, "./service", "service.test")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.Root, "service")
	const full, change = "BenchmarkApply10kServices10Backends", "BenchmarkOneBackendChange"
	out, err := runIn(ctx, dir, bin, "-test.run=^$", "-test.bench=^"+full+"$",
		"-test.count="+strconv.Itoa(cfg.rounds()), "-test.benchtime=1x", "-test.timeout=30m")
	if err != nil {
		return nil, err
	}
	rows, err := barRows(ParseBench(out), full, out, []barSpec{
		{"service_apply_10k", "s", "s/apply", "issue #19 bar (2 s)", serviceApplyBarS,
			"10,000 ClusterIP Services x 10 ready backends written by the agent's Syncer into empty Service maps"},
		{"service_apply_10k_cpu", "s", "cpu-s/apply", "issue #19 bar (2 s)", serviceApplyBarS, "the same apply's CPU time"},
	})
	if err != nil {
		return rows, err
	}
	out, err = runIn(ctx, dir, bin, "-test.run=^$", "-test.bench=^"+change+"$",
		"-test.count="+strconv.Itoa(cfg.rounds()), "-test.benchtime="+pick(cfg, "50x", "20x", "5x"), "-test.timeout=30m")
	if err != nil {
		return rows, err
	}
	more, err := barRows(ParseBench(out), change, out, []barSpec{
		{"service_backend_change", "ms", "ms/change", "issue #19 bar (50 ms)", serviceChangeBarMS,
			"one backend of one Service changed among 10,000: snapshot to maps"},
		{"service_backend_change_cpu", "ms", "cpu-ms/change", "issue #19 bar (50 ms)", serviceChangeBarMS, "the same change's CPU time"},
	})
	return append(rows, more...), err
}

package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
)

// Issue #26's bars for the policy of 1,000 policies x 5,000 pods on one
// node: the baselines of the policy_* rows.
const (
	policyApplyBarMS       = 2000.0
	policyIncrementalBarMS = 50.0
	policyMemoryBarMiB     = 128.0
)

// runPolicyApply applies the benchmark cluster of package policy (1,000
// policies, 5,000 pods, node0 with 500 local pods, 262,960 policy map
// entries) to a real datapath with the agent's engine, round after round
// (policy's BenchmarkPrivilegedApplyNode): a whole apply onto an empty
// map, then one policy changed.
func runPolicyApply(ctx context.Context, cfg *Config) ([]Row, error) {
	bin, err := testBinary(ctx, cfg, cfg.Root, "./policy", "policy.test")
	if err != nil {
		return nil, err
	}
	const bench = "BenchmarkPrivilegedApplyNode"
	out, err := runIn(ctx, filepath.Join(cfg.Root, "policy"), bin, "-test.run=^$", "-test.bench=^"+bench+"$",
		"-test.count="+strconv.Itoa(cfg.rounds()), "-test.benchtime=1x", "-test.timeout=30m")
	if err != nil {
		return nil, err
	}
	return barRows(ParseBench(out), bench, out, []barSpec{
		{"policy_apply_full", "ms", "ms/apply-full", "issue #26 bar (2 s)", policyApplyBarMS,
			"1,000 policies x 5,000 pods applied on a node of 500 pods (262,960 entries) onto an empty policy map: compile and every map write"},
		{"policy_apply_full_cpu", "ms", "cpu-ms/apply-full", "issue #26 bar (2 s)", policyApplyBarMS,
			"the same apply's CPU time (user and kernel): about its wall time on an idle machine, as nothing in an apply waits"},
		{"policy_apply_incremental", "ms", "ms/apply-incremental", "issue #26 bar (50 ms)", policyIncrementalBarMS,
			"one of the 1,000 policies changed: recompile of the groups it selects, the difference written, conntrack judged"},
		{"policy_apply_incremental_cpu", "ms", "cpu-ms/apply-incremental", "issue #26 bar (50 ms)", policyIncrementalBarMS,
			"the same incremental apply's CPU time"},
		{"policy_map_kernel_memory", "MiB", "MiB-policy-map", "issue #26 bar (128 MiB)", policyMemoryBarMiB,
			"kernel memory of the node's policy map: entries x 144 bytes, the charge measured in a memory cgroup (TestPrivilegedPolicyMapMemory)"},
	})
}

// barSpec is a row of a Go benchmark's metric against a fixed bar, lower
// being better.
type barSpec struct {
	name, unit, metric, barName string
	bar                         float64
	note                        string
}

// barRows turns bench's metrics in rs into rows against their bars; out is
// the benchmark's output, for the error.
func barRows(rs []BenchResult, bench, out string, specs []barSpec) ([]Row, error) {
	var rows []Row
	for _, r := range specs {
		vals := Samples(rs, bench, r.metric)
		bar := make([]float64, len(vals))
		for i := range bar {
			bar[i] = r.bar
		}
		row, err := NewRow(r.name, r.unit, vals, bar, r.barName, 1, Lower, r.note)
		if err != nil {
			return rows, fmt.Errorf("%s: %w\n%s", bench, err, tailStr(out, 2000))
		}
		rows = append(rows, row)
	}
	return rows, nil
}

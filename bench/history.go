package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
)

// historyQueryBar is issue #20's bar for a 1-hour query over 10 M stored
// flows with a pod filter: the baseline of that row, in seconds.
const historyQueryBar = 2.0

// runHistory measures the on-disk flow history (observer/history) with the
// observer package's Go benchmarks, one core: the writer's rate beside the
// agent's own per-flow work (HandleEvent) in the same run, the bytes a
// flow takes on disk beside its protobuf wire size, and a 1-hour query.
func runHistory(ctx context.Context, cfg *Config) ([]Row, error) {
	dir := filepath.Join(cfg.Root, "observer")
	bin, err := testBinary(ctx, cfg, cfg.Root, "./observer", "observer.test")
	if err != nil {
		return nil, err
	}
	const write, handle, query = "BenchmarkHistoryWrite", "BenchmarkHandleEvent", "BenchmarkHistoryQuery1h"
	out, err := runIn(ctx, dir, bin, "-test.run=^$", "-test.bench=^("+write+"|"+handle+")$",
		"-test.count="+strconv.Itoa(cfg.rounds()), "-test.benchtime="+pick(cfg, "1s", "300ms", "50ms"), "-test.cpu=1")
	if err != nil {
		return nil, err
	}
	rs := ParseBench(out)
	var rows []Row
	rate, err := NewRow("history_write_rate", "flows/s/core", Samples(rs, write, "flows/s"), Samples(rs, handle, "flows/s"),
		"agent HandleEvent (decode, enrich, ring)", 1, Higher,
		"flows written to history per core (encode, batch, zstd, write) vs the agent's own per-flow work: above 1, the writer keeps up with the decoder")
	if err != nil {
		return nil, fmt.Errorf("history: %w\n%s", err, tailStr(out, 2000))
	}
	size, err := NewRow("history_bytes_per_flow", "B/flow", Samples(rs, write, "disk_B/flow"), Samples(rs, write, "wire_B/flow"),
		"protobuf wire bytes (what the relay forwards)", 0.5, Lower, "bytes a flow takes on disk")
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	rows = append(rows, rate, size)

	flows := pick(cfg, 10_000_000, 1_000_000, 100_000)
	out, err = runIn(ctx, dir, "env", "LOUPE_BENCH_HISTORY_FLOWS="+strconv.Itoa(flows), bin, "-test.run=^$",
		"-test.bench=^"+query+"$", "-test.count="+strconv.Itoa(cfg.rounds()), "-test.benchtime=1x", "-test.cpu=1", "-test.timeout=60m")
	if err != nil {
		return rows, err
	}
	rs = ParseBench(out)
	var bar []float64
	for range Samples(rs, query, "s/query") {
		bar = append(bar, historyQueryBar)
	}
	q, err := NewRow("history_query_1h", "s", Samples(rs, query, "s/query"), bar, "issue #20 bar (2 s)", 1, Lower,
		fmt.Sprintf("1-hour range with a pod filter over %d stored flows spread over 24 h, one core", flows))
	if err != nil {
		return rows, fmt.Errorf("history query: %w\n%s", err, tailStr(out, 2000))
	}
	rows = append(rows, q)
	qc, err := NewRow("history_query_1h_cpu", "cpu-s", Samples(rs, query, "cpu_s/query"), bar, "issue #20 bar (2 s)", 1, Lower,
		"CPU time (user + system) of the same query: on a shared machine the wall time is mostly waiting for a core")
	if err != nil {
		return rows, fmt.Errorf("history query: %w", err)
	}
	return append(rows, qc), nil
}

package bench

import (
	"context"
	"fmt"
	"strconv"
)

// runOTLP runs the OTLP exporter's pipeline benchmark (package otlp): flows
// per second through the whole exporter to the collector's own pdata
// receiver in process, one core for both. The bar is the datapath-event
// benchmark's target: an agent exporting every flow must keep up with it.
func runOTLP(ctx context.Context, cfg *Config) ([]Row, error) {
	bin, err := testBinary(ctx, cfg, cfg.Root, "./otlp", "otlp.test")
	if err != nil {
		return nil, err
	}
	const pipeline, enqueue = "BenchmarkExportPipeline", "BenchmarkFlowEnqueue"
	out, err := runIn(ctx, cfg.Root, bin, "-test.run=^$", "-test.bench=^("+pipeline+"|"+enqueue+")$",
		"-test.count="+strconv.Itoa(cfg.rounds()), "-test.benchtime="+pick(cfg, "2s", "1s", "200ms"), "-test.benchmem", "-test.cpu=1")
	if err != nil {
		return nil, err
	}
	rs := ParseBench(out)
	// Per CPU-second of the benchmark process: wall-clock rates on a
	// shared machine measure the neighbours.
	rates := Samples(rs, pipeline, "flows/cpu-s")
	targets := make([]float64, len(rates))
	for i := range targets {
		targets[i] = eventsTarget
	}
	enq := Samples(rs, enqueue, "ns/op")
	note := "raw records through the exporter to an in-process pdata receiver, per CPU-second of both; target: the events benchmark's 200k/s"
	if len(enq) > 0 {
		note += fmt.Sprintf("; Flow() on the event path: %.0f ns", enq[0])
	}
	row, err := NewRow("otlp_export_rate", "flows/s/core", rates, targets, "target 200k/s", 1, Higher, note)
	if err != nil {
		return nil, fmt.Errorf("otlp: %w\n%s", err, tailStr(out, 2000))
	}
	return []Row{row}, nil
}

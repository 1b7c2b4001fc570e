package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
)

// runL7Hook measures in the kernel (BPF_PROG_TEST_RUN, datapath's
// BenchmarkL7Hook*) what the L7 check costs an established TCP packet that
// is neither DNS nor HTTP, with the hook compiled in (--l7=dns,http) and
// out (--l7=off), round after round: steadier than the veth rows, which
// the machine's load dominates.
func runL7Hook(ctx context.Context, cfg *Config) ([]Row, error) {
	bin, err := testBinary(ctx, cfg, cfg.Root, "./datapath", "datapath.test")
	if err != nil {
		return nil, err
	}
	benchtime := pick(cfg, "1000000x", "300000x", "10000x")
	out, err := runIn(ctx, filepath.Join(cfg.Root, "datapath"), bin, "-test.run=^$", "-test.bench=^BenchmarkL7Hook",
		"-test.count="+strconv.Itoa(cfg.rounds()), "-test.benchtime="+benchtime, "-test.cpu=1")
	if err != nil {
		return nil, err
	}
	rs := ParseBench(out)
	var rows []Row
	for _, k := range []struct{ name, bench, note string }{
		{"l7_hook_bulk_ns_per_pkt", "Bulk", "in-kernel cost of an established 1,400-byte TCP packet from the pod, --l7=dns,http vs --l7=off"},
		{"l7_hook_rr_ns_per_pkt", "RR", "the same for a 1-byte payload (request/response)"},
	} {
		r, err := NewRow(k.name, "ns/pkt", Samples(rs, "BenchmarkL7HookOn"+k.bench, "ns/pkt"), Samples(rs, "BenchmarkL7HookOff"+k.bench, "ns/pkt"),
			"--l7=off", 1/0.95, Lower, k.note)
		if err != nil {
			return rows, fmt.Errorf("l7 hook: %w\n%s", err, tailStr(out, 2000))
		}
		rows = append(rows, r)
	}
	return rows, nil
}

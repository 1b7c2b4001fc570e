package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// testBinary compiles the tests of pkg (run from dir) into the out dir, so
// that a benchmark's timing never includes a build.
func testBinary(ctx context.Context, cfg *Config, dir, pkg, name string) (string, error) {
	bin := filepath.Join(cfg.OutDir, "bin", name)
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	// The flags of make build, so these share its compiled packages.
	cmd := []string{"test", "-c", "-trimpath", "-o", bin, pkg}
	if _, err := runIn(ctx, dir, "env", append([]string{"CGO_ENABLED=0", "go"}, cmd...)...); err != nil {
		return "", fmt.Errorf("build %s tests: %w", pkg, err)
	}
	return bin, nil
}

// runDecode runs loupe's decode + enrich + filter and Hubble's threefour
// parser on equivalent events (bench/hubble), one core, round after round.
func runDecode(ctx context.Context, cfg *Config) ([]Row, error) {
	dir := filepath.Join(cfg.Root, "bench", "hubble")
	bin, err := testBinary(ctx, cfg, dir, ".", "hubble.test")
	if err != nil {
		return nil, err
	}
	benchtime := pick(cfg, "1s", "300ms", "50ms")
	const loupe, hubble = "BenchmarkLoupeDecodeEnrichFilter", "BenchmarkHubbleThreefourDecode"
	out, err := runIn(ctx, dir, bin, "-test.run=^$", "-test.bench=^("+loupe+"|"+hubble+")$",
		"-test.count="+strconv.Itoa(cfg.rounds()), "-test.benchtime="+benchtime, "-test.benchmem", "-test.cpu=1")
	if err != nil {
		return nil, err
	}
	rs := ParseBench(out)
	rate, err := NewRow("decode_rate", "flows/s/core", Samples(rs, loupe, "flows/s"), Samples(rs, hubble, "flows/s"),
		"hubble threefour", 3, Higher, "decode + enrich + filter, in process, one core, vs Hubble's threefour parser on equivalent events")
	if err != nil {
		return nil, fmt.Errorf("decode: %w\n%s", err, tailStr(out, 2000))
	}
	rows := []Row{rate}
	// Allocations: lower is better; fewer than threefour's is the bar.
	allocs, err := NewRow("decode_allocs_per_flow", "allocs/flow", Samples(rs, loupe, "allocs/op"), Samples(rs, hubble, "allocs/op"),
		"hubble threefour", 1, Lower, "")
	if err == nil {
		rows = append(rows, allocs)
	}
	return rows, nil
}

// Command loupebench runs loupe's performance harness: every benchmark for
// several rounds against a baseline measured in the same run, a table on
// stdout, and summary.json in the out directory. Run it as root from the
// repository root, after `make build` (see `make bench`).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/loupe-project/loupe/bench"
)

func main() {
	if os.Getenv(bench.ReceiverChildEnv) != "" {
		if err := bench.RunReceiverChild(); err != nil {
			fmt.Fprintln(os.Stderr, "loupebench:", err)
			os.Exit(1)
		}
		return
	}
	var cfg bench.Config
	var suites string
	flag.BoolVar(&cfg.Quick, "quick", false, "fewer and shorter rounds (make bench-quick)")
	flag.BoolVar(&cfg.Smoke, "smoke", false, "the briefest run that still produces every row (the harness's own test)")
	flag.BoolVar(&cfg.Profile, "profile", false, "take a CPU profile of the events suite's agent (agent.pprof, top entries in agent-profile.txt)")
	flag.StringVar(&cfg.CompareAgent, "compare-agent", "", "another loupe-agent binary (e.g. built from main) the events suite compares events per agent CPU-second against")
	flag.StringVar(&cfg.Root, "root", ".", "repository root")
	flag.StringVar(&cfg.BinDir, "bin", "bin", "directory with loupe, loupe-agent, loupe-cni")
	flag.StringVar(&cfg.PlugDir, "plugins", "bench/out/plugins", "directory with the reference ptp and host-local plugins")
	flag.StringVar(&cfg.OutDir, "out", "bench/out", "where summary.json, logs and test binaries go")
	flag.StringVar(&cfg.LabDir, "lab-dir", "/run/loupe-bench", "the harness's own lab directory")
	flag.StringVar(&cfg.LabName, "name", "lbench", "the harness's own lab name (netns and link prefix)")
	flag.StringVar(&suites, "suites", "", "comma-separated subset of "+strings.Join(bench.Suites, ","))
	flag.Parse()
	if suites != "" {
		cfg.Suites = strings.Split(suites, ",")
	}
	for _, p := range []*string{&cfg.Root, &cfg.BinDir, &cfg.PlugDir, &cfg.OutDir, &cfg.LabDir} {
		if a, err := filepath.Abs(*p); err == nil {
			*p = a
		}
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rows, err := bench.Run(ctx, &cfg)
	bench.PrintTable(os.Stdout, rows)
	if path, werr := bench.WriteSummary(cfg.OutDir, rows); werr != nil {
		fmt.Fprintln(os.Stderr, "loupebench:", werr)
		os.Exit(1)
	} else {
		fmt.Printf("\nwrote %s (%d rows) in %s\n", path, len(rows), time.Since(start).Round(time.Second))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loupebench: some benchmarks failed:", err)
		os.Exit(1)
	}
}

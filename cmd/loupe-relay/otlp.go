package main

import (
	"context"
	"log/slog"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/loupe-project/loupe/internal/version"
	"github.com/loupe-project/loupe/otlp"
)

// startOTLP exports every peer's flows, read from the relay's own
// in-process Observer API from start-up (so without any client), and the
// relay's metrics to the collector of cfg.
func startOTLP(ctx context.Context, g *errgroup.Group, cfg otlp.Config, obs observerpb.ObserverClient, log *slog.Logger) error {
	cfg.ServiceName, cfg.ServiceVersion, cfg.Log = "loupe-relay", version.Version, log
	exp, err := otlp.New(cfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(exp.Collectors()...)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g.Go(func() error { return exp.Run(ctx, reg) })
	if cfg.Flows != otlp.FlowsOff {
		g.Go(func() error { return exp.Follow(ctx, obs) })
	}
	return nil
}

package daemon

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/loupe-project/loupe/internal/version"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/otlp"
)

// The exporter queues flows, so the observer must know it keeps them (its
// slabs would otherwise stay alive for one queued flow each).
var _ observer.FlowKeeper = (*otlp.Exporter)(nil)

// startOTLP exports the observer's flows and everything /metrics serves
// to the collector of cfg.OTLP, when one is set. The exporter's own
// counters join dpReg, so /metrics shows its drops.
func startOTLP(ctx context.Context, g *errgroup.Group, cfg *Config, obs Observer, dpReg *prometheus.Registry) error {
	if !cfg.OTLP.Enabled() {
		return nil
	}
	sinker, ok := obs.(interface{ AddSink(observer.FlowSink) })
	if !ok {
		return fmt.Errorf("otlp: the observer takes no flow sink")
	}
	c := cfg.OTLP
	c.ServiceName, c.ServiceVersion, c.NodeName, c.Log = "loupe-agent", version.Version, cfg.NodeName, cfg.Log
	exp, err := otlp.New(c)
	if err != nil {
		return err
	}
	if err := registerAll(dpReg, exp.Collectors()); err != nil {
		return err
	}
	gatherers := prometheus.Gatherers{dpReg}
	if o, ok := obs.(gathererObserver); ok {
		gatherers = append(gatherers, o.Gatherer())
	}
	sinker.AddSink(exp)
	g.Go(func() error { return exp.Run(ctx, gatherers) })
	return nil
}

func registerAll(reg *prometheus.Registry, cs []prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("otlp metrics: %w", err)
		}
	}
	return nil
}

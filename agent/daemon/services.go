package daemon

import (
	"context"
	"log/slog"

	"golang.org/x/sync/errgroup"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/service"
)

// startServiceTranslation programs the datapath's ClusterIP frontends
// from src's Services and EndpointSlices until ctx ends, and returns how
// to name an event's ServiceID. Off, it empties the maps a previous agent
// may have filled, so kube-proxy alone handles Services.
func startServiceTranslation(ctx context.Context, g *errgroup.Group, cfg *Config, dp *datapath.Datapath, src metadata.Source, log *slog.Logger) (func(uint32) (string, string, bool), error) {
	w, err := dp.Services()
	if err != nil {
		return nil, err
	}
	if cfg.NoServiceTranslation {
		return nil, w.Sync()
	}
	s, err := service.NewSyncer(w)
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return s.Run(ctx, src, log) })
	return func(id uint32) (string, string, bool) {
		r, ok := s.Lookup(id)
		return r.Namespace, r.Name, ok
	}, nil
}

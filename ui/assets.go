package ui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"maps"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// dist holds the built frontend (make ui).
//
//go:embed dist
var dist embed.FS

// Assets returns the built frontend.
func Assets() (fs.FS, error) {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		return nil, fmt.Errorf("ui: assets: %w", err)
	}
	if _, err := fs.Stat(sub, "index.html"); err != nil {
		return nil, fmt.Errorf("ui: assets: %w (run make ui)", err)
	}
	return sub, nil
}

func timestampOf(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func mapsKeys[K comparable, V any](m map[K]V) iter.Seq[K] { return maps.Keys(m) }

// RelayFlows opens follow streams on an Observer client: the relay's own
// gRPC API. Each stream decodes its flows with an endpointCodec.
func RelayFlows(c observerpb.ObserverClient) func(context.Context, *observerpb.GetFlowsRequest) (observerpb.Observer_GetFlowsClient, error) {
	return func(ctx context.Context, req *observerpb.GetFlowsRequest) (observerpb.Observer_GetFlowsClient, error) {
		if c == nil {
			return nil, errors.New("ui: no relay client")
		}
		st, err := c.GetFlows(ctx, req, grpc.ForceCodecV2(newEndpointCodec()))
		if err != nil {
			return nil, fmt.Errorf("ui: get flows: %w", err)
		}
		return st, nil
	}
}

package bench

import (
	"context"
	"errors"
)

// runEvents measures the agent's end-to-end event rate in the lab.
func runEvents(ctx context.Context, cfg *Config, bl *benchLab) ([]Row, error) {
	return nil, errors.New("not yet")
}

func runRelayRows(ctx context.Context, cfg *Config) ([]Row, error) {
	_, m, err := runRelay(ctx, cfg)
	if err != nil {
		return nil, err
	}
	cfg.Log.Info("relay", "flows/s", m["flows/s"], "peak-heap-MB", m["peak-heap-MB"])
	return nil, nil
}

// Package pprofhttp serves Go's profiler (/debug/pprof/) for the agent's
// and the relay's --pprof-listen: the bench profiles a real process under
// load through it. It is off unless asked for, and plain, unauthenticated
// HTTP, meant for loopback or a lab bridge.
package pprofhttp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/loupe-project/loupe/internal/httpserve"
)

// Listen listens on addr and returns the function that serves the
// profiler there until ctx ends.
func Listen(ctx context.Context, addr string, log *slog.Logger) (serve func() error, err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("pprof listening", "addr", l.Addr().String())
	return func() error { return httpserve.Serve(ctx, srv, l) }, nil
}

// Package httpserve serves an HTTP server on a listener until a context
// ends, then shuts it down gracefully: the agent's metrics and the
// profilers of the agent and the relay.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// shutdownGrace is how long requests in flight get once ctx ends.
const shutdownGrace = 5 * time.Second

// Serve serves srv on l until ctx ends.
func Serve(ctx context.Context, srv *http.Server, l net.Listener) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

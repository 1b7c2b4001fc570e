package lab

import (
	"context"
	"fmt"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/observer"
)

// ObserverSocket is node n's Observer API unix socket (the agent puts it
// next to its endpoint socket).
func (l *Lab) ObserverSocket(n string) string { return l.path("nodes", n, "observer.sock") }

// checkFlowBufferSize validates `lab up --flow-buffer-size` (0: the agent's
// default).
func checkFlowBufferSize(n int) error {
	if n == 0 {
		return nil
	}
	if err := observer.ValidateBufferSize(n); err != nil {
		return fmt.Errorf("--flow-buffer-size: %w", err)
	}
	return nil
}

// flowBufferSize is the ring size node n's agent reports (ServerStatus
// max_flows): what it runs with, not what was asked for.
func (l *Lab) flowBufferSize(ctx context.Context, n Node) (int, error) {
	conn, err := grpc.NewClient("unix://"+l.ObserverSocket(n.Name), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	st, err := observerpb.NewObserverClient(conn).ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	if err != nil {
		return 0, err
	}
	return int(st.GetMaxFlows()), nil
}

// configuredFlowBufferSize is the size the lab starts agents with.
func (l *Lab) configuredFlowBufferSize() int {
	if l.FlowBufferSize != 0 {
		return l.FlowBufferSize
	}
	return observer.DefaultBufferSize
}

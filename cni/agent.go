package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// agent is a connection to the node's loupe-agent endpoint API.
type agent struct {
	socket string
	conn   *grpc.ClientConn
	api    endpointv1.EndpointsClient
}

// dialAgent connects lazily; an absent socket is reported at once as
// "try again later", because the agent may simply not have started yet.
func dialAgent(socket string) (*agent, error) {
	if _, err := os.Stat(socket); err != nil {
		return nil, tryAgain(socket, err)
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, tryAgain(socket, err)
	}
	return &agent{socket: socket, conn: conn, api: endpointv1.NewEndpointsClient(conn)}, nil
}

func (a *agent) Close() error { return a.conn.Close() }

// agentPoll is how often waitAgent asks again.
const agentPoll = 250 * time.Millisecond

// waitAgent connects to the agent and makes ADD's first call, retrying it
// for up to wait while the answer is "try again later" (no socket, no
// listener, or Unavailable because the agent is not ready): an ADD that
// comes while the agent starts (the conflist is written before it runs)
// then succeeds instead of failing into the runtime's backoff. There is no
// Status call first: the agent's Allocate refuses while it is not ready,
// which saves ADD a round trip. It returns the last "try again later"
// error when wait passes.
func waitAgent(socket string, wait time.Duration, log *slog.Logger, first func(*agentSession) error) (*agentSession, error) {
	end := time.Now().Add(wait)
	for attempt := 1; ; attempt++ {
		ag, err := newSession(socket)
		if err == nil {
			if err = first(ag); err != nil {
				ag.Close()
				ag = nil
			}
		}
		if err == nil || !isTryAgain(err) || !time.Now().Add(agentPoll).Before(end) {
			return ag, err
		}
		if attempt == 1 {
			log.Info("waiting for the agent", "socket", socket, "wait", wait, logKeyErr, err)
		}
		time.Sleep(agentPoll)
	}
}

// rpcErr turns an RPC failure into a CNI error: a transport failure means
// the agent is unreachable (11, try again later); anything else is the
// agent's own answer (999, with its message).
func (a *agent) rpcErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if isUnreachable(err) {
		return tryAgain(a.socket, fmt.Errorf("%s: %w", op, err))
	}
	st, _ := status.FromError(err)
	return types.NewError(types.ErrInternal, fmt.Sprintf("loupe-agent %s: %s", op, st.Message()), "socket "+a.socket)
}

func isUnreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

func tryAgain(socket string, err error) *types.Error {
	return types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("loupe-agent unreachable at %s, try again later", socket), err.Error())
}

// isTryAgain reports whether err is the CNI "try again later" error.
func isTryAgain(err error) bool {
	var te *types.Error
	return errors.As(err, &te) && te.Code == types.ErrTryAgainLater
}

package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// agent is a connection to the node's loupe-agent endpoint API.
type agent struct {
	socket string
	api    *agentClient
}

// dialAgent connects lazily; an absent socket is reported at once as
// "try again later", because the agent may simply not have started yet.
func dialAgent(socket string) (*agent, error) {
	if _, err := os.Stat(socket); err != nil {
		return nil, tryAgain(socket, err)
	}
	return &agent{socket: socket, api: newAgentClient(socket)}, nil
}

func (a *agent) Close() error {
	a.api.close()
	return nil
}

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
	return types.NewError(types.ErrInternal, fmt.Sprintf("loupe-agent %s: %s", op, rpcMessage(err)), "socket "+a.socket)
}

func isUnreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch rpcCode(err) {
	case codeUnavailable, codeDeadlineExceeded, codeCanceled:
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

package cni

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// The Plugin type and what its commands (cmd_*.go) share: start reads the
// netconf and CNI_ARGS and opens the log, then openAgent connects to the
// agent and asks its Status.

// Plugin implements the CNI commands.
type Plugin struct {
	// Stdout receives the result of ADD; nil means os.Stdout.
	Stdout io.Writer
}

// Funcs returns the commands for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC}
}

const (
	// rpcTimeout bounds each command's conversation with the agent; a live
	// agent answers in milliseconds, a wedged one must not hang kubelet.
	rpcTimeout = 30 * time.Second
	// rollbackTimeout is a fresh budget for undoing a failed ADD, which may
	// have failed because the first budget ran out.
	rollbackTimeout = 10 * time.Second
)

// invocation is what start read for one command.
type invocation struct {
	conf *NetConf
	k8s  K8sArgs
	log  *slog.Logger
}

// start parses the netconf and CNI_ARGS and opens the command's logger,
// tagged with the command, attachment and pod; the returned func closes the
// log file.
func (p *Plugin) start(cmd string, args *skel.CmdArgs) (*invocation, func(), error) {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	k8s, err := ParseK8sArgs(args.Args)
	if err != nil {
		return nil, nil, err
	}
	log, closeLog := newLogger(conf)
	log = log.With(logKeyCmd, cmd)
	if args.ContainerID != "" {
		log = log.With(logKeyContainer, args.ContainerID, logKeyIfname, args.IfName)
	}
	if k8s.K8S_POD_NAME != "" {
		log = log.With(logKeyPod, string(k8s.K8S_POD_NAMESPACE)+"/"+string(k8s.K8S_POD_NAME))
	}
	return &invocation{conf: conf, k8s: k8s, log: log}, closeLog, nil
}

// agentSession is one command's conversation with the agent: the
// connection, the rpcTimeout budget all of its calls share, and the
// agent's Status (which names the bpf root; nil for ADD, which asks none).
type agentSession struct {
	*agent
	ctx    context.Context
	cancel context.CancelFunc
	status *endpointv1.StatusResponse
}

// openAgent is the second half of the start-up, for the commands that need
// the agent's Status (CHECK, GC): dial, start the
// rpcTimeout budget and ask Status. Its error is a CNI error, 11 when the
// agent is unreachable; STATUS maps its own failures to 50 instead.
func openAgent(socket string) (*agentSession, error) {
	ag, err := newSession(socket)
	if err != nil {
		return nil, err
	}
	ag.status, err = ag.api.Status(ag.ctx, &endpointv1.StatusRequest{})
	if err != nil {
		ag.Close()
		return nil, ag.rpcErr("status", err)
	}
	return ag, nil
}

// newSession dials and starts the rpcTimeout budget, without a call.
func newSession(socket string) (*agentSession, error) {
	ag, err := dialAgent(socket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	return &agentSession{agent: ag, ctx: ctx, cancel: cancel}, nil
}

// Close ends the budget and the connection.
func (s *agentSession) Close() error {
	s.cancel()
	return s.agent.Close()
}

// firstCNIError keeps a CNI error code (such as 11) visible when several
// steps failed: skel only passes a *types.Error through unchanged.
func firstCNIError(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	joined := errors.Join(errs...)
	for _, e := range errs {
		var te *types.Error
		if errors.As(e, &te) {
			return types.NewError(te.Code, te.Msg, joined.Error())
		}
	}
	return joined
}

func firstCNIErrorOrNil(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return firstCNIError(errs)
}

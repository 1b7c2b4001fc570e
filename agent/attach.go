package agent

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loupe-project/loupe/agent/ipam"
	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// The agent attaches the datapath programs to pod veths itself, on the
// plugin's Register: it holds the pinned programs already, so an ADD costs
// a few link syscalls here instead of the plugin loading the eBPF library
// and the pins in a fresh process (issue #25). Unregister and Release take
// the link pins away again.

// xdpModeOr validates an XDP mode, empty meaning the agent's default.
func (a *Agent) xdpModeOr(mode string) (string, error) {
	if mode == "" {
		mode = a.cfg.XDPMode
	}
	switch mode {
	case "native", "generic", "off":
		return mode, nil
	}
	return "", &FieldError{"xdp_mode", fmt.Sprintf("%q is not native, generic or off", mode)}
}

// attachRegistered attaches e's host veth after Register recorded e. On
// failure it takes the registration back, unless a later call replaced it.
func (a *Agent) attachRegistered(e *Endpoint, mode string) error {
	err := a.cfg.AttachHostLink(e.HostIfname, mode)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("attach %s (xdp %s): %w", e.HostIfname, mode, err)
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur := a.endpoints[e.key()]; cur == e {
		derr, uerr := a.detachAndUnregisterLocked(e.key(), e.HostIfname)
		if uerr = errors.Join(derr, uerr); uerr != nil {
			a.log.Error("rollback after a failed attach", "container_id", e.ContainerID,
				"ifname", e.Ifname, "err", uerr)
		}
	}
	return err
}

// detachAndUnregisterLocked removes the link pins of key's host veth (and
// of hostIfname, when given and different), then the endpoint. As DEL did
// when the plugin detached, a failed detach does not stop the rest: the
// endpoint and the addresses go, and the error makes the runtime retry the
// DEL, which retries the named pins. The caller holds mu.
func (a *Agent) detachAndUnregisterLocked(key ipam.Key, hostIfname string) (detachErr, err error) {
	if a.cfg.DetachHostLink != nil {
		names := []string{hostIfname}
		if e, ok := a.endpoints[key]; ok && e.HostIfname != hostIfname {
			names = append(names, e.HostIfname)
		}
		var errs []error
		for _, n := range names {
			if n == "" {
				continue
			}
			if err := a.cfg.DetachHostLink(n); err != nil {
				errs = append(errs, fmt.Errorf("detach %s: %w", n, err))
			}
		}
		detachErr = errors.Join(errs...)
	}
	return detachErr, a.unregisterLocked(key)
}

// CheckAttached reports whether the programs run on a host veth.
func (s *Server) CheckAttached(_ context.Context, req *endpointv1.CheckAttachedRequest) (*endpointv1.CheckAttachedResponse, error) {
	if err := validateIfname("host_ifname", req.GetHostIfname()); err != nil {
		return nil, invalid(err)
	}
	mode, err := s.a.xdpModeOr(req.GetXdpMode())
	if err != nil {
		return nil, invalid(err)
	}
	if s.a.cfg.CheckHostLink == nil {
		return nil, status.Error(codes.FailedPrecondition, "this agent attaches no programs")
	}
	if err := s.a.cfg.CheckHostLink(req.GetHostIfname(), mode); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &endpointv1.CheckAttachedResponse{}, nil
}

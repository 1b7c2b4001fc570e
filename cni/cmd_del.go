package cni

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// Del removes one attachment. It needs neither the pod netns nor the
// prevResult: the host veth's name follows from the container id and
// ifname. Everything missing counts as already removed.
//
// With the agent unreachable, DEL deletes the veth pair (which also takes
// the programs off the wire) and succeeds: the agent releases endpoints
// whose veth is gone, their address and link pins included, when it starts
// and periodically (agent/sweep.go). So deleting a pod never waits for the
// agent, and an uninstalled agent never strands a pod in Terminating.
func (p *Plugin) Del(args *skel.CmdArgs) (err error) {
	ph := startPhases()
	inv, done, err := p.start("DEL", args)
	if err != nil {
		return err
	}
	defer done()
	log := inv.log
	hostIf := HostIfname(args.ContainerID, args.IfName)
	log = log.With(logKeyHostIfname, hostIf)

	ph.mark("start")
	ag, agentErr := openAgent(inv.conf.AgentSocket)
	if agentErr == nil {
		defer ag.Close()
	}
	ph.mark("agent")

	var errs []error
	if agentErr == nil && ag.status.GetBpfRoot() != "" {
		if err := p.Datapath.Detach(ag.status.GetBpfRoot(), hostIf); err != nil {
			errs = append(errs, fmt.Errorf("detach datapath from %s: %w", hostIf, err))
		}
	}
	ph.mark("detach")
	if err := deleteHostLink(hostIf); err != nil {
		errs = append(errs, err)
	}
	ph.mark("netlink")
	if agentErr != nil {
		if len(errs) > 0 {
			return firstCNIError(append(errs, agentErr))
		}
		log.Warn("agent unreachable: removed the veth; the agent releases the rest when it sees the veth gone", logKeyErr, agentErr)
		return nil
	}
	if _, err := ag.api.Unregister(ag.ctx, &endpointv1.UnregisterRequest{ContainerId: args.ContainerID, Ifname: args.IfName}); err != nil {
		errs = append(errs, ag.rpcErr("unregister", err))
	}
	ph.mark("unregister")
	if _, err := ag.api.Release(ag.ctx, &endpointv1.ReleaseRequest{ContainerId: args.ContainerID, Ifname: args.IfName}); err != nil {
		errs = append(errs, ag.rpcErr("release", err))
	}
	ph.mark("release")
	if len(errs) > 0 {
		err := firstCNIError(errs)
		log.Error("del failed", logKeyErr, err)
		return err
	}
	log.Info("deleted", ph.group())
	return nil
}

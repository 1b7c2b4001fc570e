package cni

import (
	"context"

	"github.com/containernetworking/cni/pkg/skel"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// Del removes one attachment. It needs neither the pod netns nor the
// prevResult: the host veth's name follows from the container id and
// ifname. Everything missing counts as already removed.
//
// It deletes the veth pair first, which takes the programs off the wire at
// once, then makes one call: Release, with which the agent removes the
// link pins, the endpoint and the addresses.
//
// With the agent unreachable, DEL still deletes the veth pair and succeeds:
// the agent releases endpoints whose veth is gone, their address and link
// pins included, when it starts and periodically (agent/sweep.go). So
// deleting a pod never waits for the agent, and an uninstalled agent never
// strands a pod in Terminating.
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

	var errs []error
	if err := deleteHostLink(hostIf); err != nil {
		errs = append(errs, err)
	}
	ph.mark("netlink")
	ag, agentErr := dialAgent(inv.conf.AgentSocket)
	if agentErr == nil {
		defer ag.Close()
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		_, err := ag.api.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: args.ContainerID, Ifname: args.IfName, HostIfname: hostIf})
		if isUnreachable(err) {
			agentErr = ag.rpcErr("release", err)
		} else if err != nil {
			errs = append(errs, ag.rpcErr("release", err))
		}
	}
	ph.mark("release")
	if agentErr != nil {
		if len(errs) > 0 {
			return firstCNIError(append(errs, agentErr))
		}
		log.Warn("agent unreachable: removed the veth; the agent releases the rest when it sees the veth gone", logKeyErr, agentErr)
		return nil
	}
	if len(errs) > 0 {
		err := firstCNIError(errs)
		log.Error("del failed", logKeyErr, err)
		return err
	}
	log.Info("deleted", ph.group())
	return nil
}

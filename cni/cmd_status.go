package cni

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// Status reports 50 (plugin not available) until the agent answers ready.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	inv, done, err := p.start("STATUS", args)
	if err != nil {
		return err
	}
	defer done()
	ag, err := dialAgent(inv.conf.AgentSocket)
	if err != nil {
		return notAvailable(inv.conf.AgentSocket, err.Error())
	}
	defer ag.Close()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	st, err := ag.api.Status(ctx, &endpointv1.StatusRequest{})
	if err != nil {
		return notAvailable(inv.conf.AgentSocket, err.Error())
	}
	if !st.GetReady() {
		return notAvailable(inv.conf.AgentSocket, "agent not ready: "+st.GetMessage())
	}
	return nil
}

func notAvailable(socket, details string) error {
	return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("loupe-agent at %s is not ready", socket), details)
}

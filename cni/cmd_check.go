package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// Check verifies an attachment against prevResult: links, addresses and
// routes on both sides, the agent's record of it, and the attachments the
// kernel reports on the host veth.
func (p *Plugin) Check(args *skel.CmdArgs) (err error) {
	inv, done, err := p.start("CHECK", args)
	if err != nil {
		return err
	}
	defer done()
	defer func() {
		if err != nil {
			inv.log.Error("check failed", logKeyErr, err)
		}
	}()
	prev, err := parsePrevResult(inv.conf)
	if err != nil {
		return err
	}

	hostIf := HostIfname(args.ContainerID, args.IfName)
	var hostItf, podItf *current.Interface
	for i, itf := range prev.Interfaces {
		switch {
		case itf.Name == args.IfName && itf.Sandbox == args.Netns:
			podItf = prev.Interfaces[i]
		case itf.Name == hostIf && itf.Sandbox == "":
			hostItf = prev.Interfaces[i]
		}
	}
	if podItf == nil {
		return fmt.Errorf("check: prevResult has no interface %s in sandbox %s", args.IfName, args.Netns)
	}
	if hostItf == nil {
		return fmt.Errorf("check: prevResult has no host interface %s", hostIf)
	}

	pl := plumbing{HostIfname: hostIf, PodIfname: args.IfName, MTU: inv.conf.MTU}
	for _, ipc := range prev.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return fmt.Errorf("check: prevResult address %s", ipc.Address.String())
		}
		a = a.Unmap()
		if a.Is4() {
			pl.IPv4 = a
			gw, _ := netip.AddrFromSlice(ipc.Gateway)
			pl.GatewayV4 = gw.Unmap()
		} else {
			pl.IPv6 = a
		}
	}
	if !pl.IPv4.IsValid() && !pl.IPv6.IsValid() {
		return errors.New("check: prevResult has no addresses")
	}
	if err := checkResultRoutes(prev.Routes, pl); err != nil {
		return err
	}
	want := plumbed{}
	if want.HostMAC, err = parseMAC(hostItf.Mac); err != nil {
		return fmt.Errorf("check: prevResult host interface: %w", err)
	}
	if want.PodMAC, err = parseMAC(podItf.Mac); err != nil {
		return fmt.Errorf("check: prevResult pod interface: %w", err)
	}

	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open pod netns %q: %v", args.Netns, err), "")
	}
	defer podNS.Close()
	if err := checkPlumbing(podNS, pl, want); err != nil {
		return fmt.Errorf("check: %w", err)
	}

	ag, err := openAgent(inv.conf.AgentSocket)
	if err != nil {
		return err
	}
	defer ag.Close()
	ctx := ag.ctx
	list, err := ag.api.List(ctx, &endpointv1.ListRequest{})
	if err != nil {
		return ag.rpcErr("list", err)
	}
	var ep *endpointv1.Endpoint
	for _, e := range list.GetEndpoints() {
		if e.GetContainerId() == args.ContainerID && e.GetIfname() == args.IfName {
			ep = e
		}
	}
	if ep == nil {
		return fmt.Errorf("check: the agent has no endpoint for %s/%s", args.ContainerID, args.IfName)
	}
	host, err := linkByName(hostIf)
	if err != nil {
		return fmt.Errorf("check: host veth %s: %w", hostIf, err)
	}
	if ep.GetHostIfname() != hostIf || int(ep.GetHostIfindex()) != host.Attrs().Index {
		return fmt.Errorf("check: the agent's endpoint is on %s (index %d), the host veth is %s (index %d)", ep.GetHostIfname(), ep.GetHostIfindex(), hostIf, host.Attrs().Index)
	}
	if !sameAddrString(ep.GetIpv4(), pl.IPv4) || !sameAddrString(ep.GetIpv6(), pl.IPv6) {
		return fmt.Errorf("check: the agent's endpoint has %q/%q, prevResult %v/%v", ep.GetIpv4(), ep.GetIpv6(), pl.IPv4, pl.IPv6)
	}

	mode := inv.conf.XDP
	if mode == "" {
		// The agent's default mode is only in AllocateResponse. Allocate of
		// a pair the agent already holds (just confirmed by List) returns
		// the existing allocation and changes nothing.
		alloc, err := ag.api.Allocate(ctx, &endpointv1.AllocateRequest{ContainerId: args.ContainerID, Ifname: args.IfName,
			PodNamespace: ep.GetPodNamespace(), PodName: ep.GetPodName()})
		if err != nil {
			return ag.rpcErr("allocate (read xdp mode)", err)
		}
		if !sameAddrString(alloc.GetIpv4(), pl.IPv4) || !sameAddrString(alloc.GetIpv6(), pl.IPv6) {
			return fmt.Errorf("check: the agent's allocation is %q/%q, prevResult %v/%v", alloc.GetIpv4(), alloc.GetIpv6(), pl.IPv4, pl.IPv6)
		}
		mode = alloc.GetXdpMode()
	}
	if _, err := ag.api.CheckAttached(ctx, &endpointv1.CheckAttachedRequest{HostIfname: hostIf, XdpMode: mode}); err != nil {
		if isUnreachable(err) {
			return ag.rpcErr("check attached", err)
		}
		return fmt.Errorf("check: datapath on %s: %s", hostIf, rpcMessage(err))
	}
	return nil
}

func parsePrevResult(conf *NetConf) (*current.Result, error) {
	if conf.RawPrevResult == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "prevResult: required by CHECK", "")
	}
	pc := conf.PluginConf
	if err := version.ParsePrevResult(&pc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
	}
	res, err := current.NewResultFromResult(pc.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
	}
	return res, nil
}

// checkResultRoutes requires prevResult to hold the default routes ADD
// returns, so a CHECK against an edited result fails.
func checkResultRoutes(routes []*types.Route, pl plumbing) error {
	has := func(dst string, gw netip.Addr) bool {
		for _, r := range routes {
			if r.Dst.String() == dst && r.GW.Equal(gw.AsSlice()) {
				return true
			}
		}
		return false
	}
	if pl.IPv4.IsValid() && !has("0.0.0.0/0", pl.GatewayV4) {
		return fmt.Errorf("check: prevResult lacks the route 0.0.0.0/0 via %s", pl.GatewayV4)
	}
	if pl.IPv6.IsValid() && !has("::/0", GatewayIPv6) {
		return fmt.Errorf("check: prevResult lacks the route ::/0 via %s", GatewayIPv6)
	}
	return nil
}

func parseMAC(s string) (net.HardwareAddr, error) {
	if s == "" {
		return nil, nil
	}
	m, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("mac %q: %w", s, err)
	}
	return m, nil
}

func sameAddrString(s string, a netip.Addr) bool {
	if s == "" {
		return !a.IsValid()
	}
	b, err := netip.ParseAddr(s)
	return err == nil && b == a
}

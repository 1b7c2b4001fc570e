package cni

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// Add plumbs one attachment. Order matters: the endpoint is registered
// before the programs are attached (both by the agent, in Register), so
// anti-spoofing holds from the first packet; every step is undone, in
// reverse, if a later one fails.
func (p *Plugin) Add(args *skel.CmdArgs) (err error) {
	ph := startPhases()
	inv, done, err := p.start("ADD", args)
	if err != nil {
		return err
	}
	defer done()
	log := inv.log
	defer func() {
		if err != nil {
			log.Error("add failed", logKeyErr, err)
		}
	}()

	if err := validIfname(args.IfName); err != nil {
		return err
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open pod netns %q: %v", args.Netns, err), "")
	}
	defer podNS.Close()
	ph.mark("start")

	// 1. Addresses from the agent, the first call (see waitAgent).
	var alloc *endpointv1.AllocateResponse
	ag, err := waitAgent(inv.conf.AgentSocket, time.Duration(inv.conf.AgentWaitSeconds)*time.Second, log, func(ag *agentSession) error {
		var err error
		alloc, err = ag.api.Allocate(ag.ctx, &endpointv1.AllocateRequest{
			ContainerId:  args.ContainerID,
			Ifname:       args.IfName,
			PodNamespace: string(inv.k8s.K8S_POD_NAMESPACE),
			PodName:      string(inv.k8s.K8S_POD_NAME),
		})
		return ag.rpcErr("allocate", err)
	})
	if err != nil {
		return err
	}
	defer ag.Close()
	ctx := ag.ctx
	ph.mark("allocate")
	hostIf := HostIfname(args.ContainerID, args.IfName)
	defer func() {
		if err != nil {
			// Release also unregisters and takes the link pins away.
			rctx, rcancel := context.WithTimeout(context.Background(), rollbackTimeout)
			defer rcancel()
			if _, rerr := ag.api.Release(rctx, &endpointv1.ReleaseRequest{ContainerId: args.ContainerID, Ifname: args.IfName, HostIfname: hostIf}); rerr != nil {
				log.Error("rollback: release", logKeyErr, rerr)
			}
		}
	}()
	pl, err := plumbingFor(args, inv.conf, alloc)
	if err != nil {
		return err
	}
	mode := inv.conf.XDP
	if mode == "" {
		mode = alloc.GetXdpMode()
	}
	if mode != "native" && mode != "generic" && mode != "off" {
		return fmt.Errorf("add: the agent's default xdp mode %q is not native, generic or off", mode)
	}
	log = log.With(logKeyHostIfname, pl.HostIfname, logKeyIPv4, alloc.GetIpv4(), logKeyIPv6, alloc.GetIpv6())

	// 2. The veth pair; deleting the host end later removes the pod end too.
	host, err := createVeth(podNS, pl)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if derr := deleteHostLink(pl.HostIfname); derr != nil {
				log.Error("rollback: delete veth", logKeyErr, derr)
			}
		}
	}()
	if err := setupHost(host, pl); err != nil {
		return err
	}
	// 3. Pod side: addresses and the default routes onlink via the gateway.
	podIndex, podMAC, err := setupPod(podNS, pl)
	if err != nil {
		return fmt.Errorf("pod netns %s: %w", args.Netns, err)
	}
	// 4. Node side: /32 and /128 to the pod.
	if err := addHostRoutes(host.Attrs().Index, pl); err != nil {
		return err
	}
	ph.mark("netlink")

	// 5. Register, and the agent attaches the pinned XDP and TCX programs
	// to the host veth after it wrote the endpoint entry: the programs find
	// it for the very first packet, so anti-spoofing has no gap. The agent
	// holds the programs, so this costs no eBPF loading here.
	reg, err := ag.api.Register(ctx, &endpointv1.RegisterRequest{Endpoint: &endpointv1.Endpoint{
		ContainerId:  args.ContainerID,
		Ifname:       args.IfName,
		Netns:        args.Netns,
		PodNamespace: string(inv.k8s.K8S_POD_NAMESPACE),
		PodName:      string(inv.k8s.K8S_POD_NAME),
		HostIfname:   pl.HostIfname,
		HostIfindex:  uint32(host.Attrs().Index),
		Ipv4:         alloc.GetIpv4(),
		Ipv6:         alloc.GetIpv6(),
		Mac:          podMAC.String(),
	}, Attach: true, XdpMode: mode})
	if err != nil {
		return ag.rpcErr("register", err)
	}
	if !reg.GetAttached() {
		return types.NewError(types.ErrInternal, "loupe-agent register: the agent did not attach the datapath (an agent older than the plugin?)", "socket "+ag.socket)
	}
	ph.mark("register_attach")

	// 7. The result.
	res := buildResult(args, inv.conf, pl, plumbed{HostIndex: host.Attrs().Index, HostMAC: host.Attrs().HardwareAddr, PodIndex: podIndex, PodMAC: podMAC})
	out, err := res.GetAsVersion(inv.conf.CNIVersion)
	if err != nil {
		return fmt.Errorf("add: convert result to %s: %w", inv.conf.CNIVersion, err)
	}
	w := p.Stdout
	if w == nil {
		w = os.Stdout
	}
	if err := out.PrintTo(w); err != nil {
		return fmt.Errorf("add: print result: %w", err)
	}
	ph.mark("result")
	log.Info("added", "xdp", mode, ph.group())
	return nil
}

func validIfname(name string) error {
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n:") || name == "." || name == ".." {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME: %q is not a valid interface name", name), "")
	}
	return nil
}

// plumbingFor reads the agent's answer into what ADD will build.
func plumbingFor(args *skel.CmdArgs, conf *NetConf, alloc *endpointv1.AllocateResponse) (plumbing, error) {
	pl := plumbing{HostIfname: HostIfname(args.ContainerID, args.IfName), PodIfname: args.IfName, MTU: conf.MTU}
	var err error
	if s := alloc.GetIpv4(); s != "" {
		if pl.IPv4, err = netip.ParseAddr(s); err != nil || !pl.IPv4.Is4() {
			return pl, fmt.Errorf("agent allocated an invalid ipv4 %q", s)
		}
		if pl.GatewayV4, err = netip.ParseAddr(alloc.GetGatewayIpv4()); err != nil || !pl.GatewayV4.Is4() {
			return pl, fmt.Errorf("agent gave an invalid ipv4 gateway %q", alloc.GetGatewayIpv4())
		}
	}
	if s := alloc.GetIpv6(); s != "" {
		if pl.IPv6, err = netip.ParseAddr(s); err != nil || !pl.IPv6.Is6() || pl.IPv6.Is4In6() {
			return pl, fmt.Errorf("agent allocated an invalid ipv6 %q", s)
		}
	}
	if !pl.IPv4.IsValid() && !pl.IPv6.IsValid() {
		return pl, errors.New("agent allocated no address")
	}
	if alloc.GetBpfRoot() == "" {
		return pl, errors.New("agent gave no bpf root")
	}
	return pl, nil
}

// buildResult is the 1.1.0 result: interface 0 is the host veth, 1 the pod
// end (with its sandbox); every address belongs to interface 1.
func buildResult(args *skel.CmdArgs, conf *NetConf, pl plumbing, pd plumbed) *current.Result {
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: pl.HostIfname, Mac: pd.HostMAC.String(), Mtu: pl.MTU},
			{Name: pl.PodIfname, Mac: pd.PodMAC.String(), Mtu: pl.MTU, Sandbox: args.Netns},
		},
		DNS: conf.DNS,
	}
	if pl.IPv4.IsValid() {
		res.IPs = append(res.IPs, &current.IPConfig{Interface: current.Int(1), Address: *prefixNet(netip.PrefixFrom(pl.IPv4, 32)), Gateway: pl.GatewayV4.AsSlice()})
		res.Routes = append(res.Routes, &types.Route{Dst: *prefixNet(netip.MustParsePrefix("0.0.0.0/0")), GW: pl.GatewayV4.AsSlice()})
	}
	if pl.IPv6.IsValid() {
		res.IPs = append(res.IPs, &current.IPConfig{Interface: current.Int(1), Address: *prefixNet(netip.PrefixFrom(pl.IPv6, 128)), Gateway: GatewayIPv6.AsSlice()})
		res.Routes = append(res.Routes, &types.Route{Dst: *prefixNet(netip.MustParsePrefix("::/0")), GW: GatewayIPv6.AsSlice()})
	}
	return res
}

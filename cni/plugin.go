package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// Datapath is the part of the datapath package the plugin drives. The
// binary wires it to datapath.Attach, Detach and CheckAttached; modes are
// "native", "generic" or "off".
type Datapath struct {
	Attach        func(bpfRoot, hostIfname, xdpMode string) error
	Detach        func(bpfRoot, hostIfname string) error
	CheckAttached func(bpfRoot, hostIfname, xdpMode string) error
}

// Plugin implements the CNI commands.
type Plugin struct {
	Datapath Datapath
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

type invocation struct {
	conf *NetConf
	k8s  K8sArgs
	log  *slog.Logger
}

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

// Add plumbs one attachment. Order matters: the endpoint is registered
// before the programs are attached, so anti-spoofing holds from the first
// packet; every step is undone, in reverse, if a later one fails.
func (p *Plugin) Add(args *skel.CmdArgs) (err error) {
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

	ag, err := waitAgent(inv.conf.AgentSocket, time.Duration(inv.conf.AgentWaitSeconds)*time.Second, log)
	if err != nil {
		return err
	}
	defer ag.Close()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()

	// 1. Addresses from the agent.
	alloc, err := ag.api.Allocate(ctx, &endpointv1.AllocateRequest{
		ContainerId:  args.ContainerID,
		Ifname:       args.IfName,
		PodNamespace: string(inv.k8s.K8S_POD_NAMESPACE),
		PodName:      string(inv.k8s.K8S_POD_NAME),
	})
	if err != nil {
		return ag.rpcErr("allocate", err)
	}
	defer func() {
		if err != nil {
			rctx, rcancel := context.WithTimeout(context.Background(), rollbackTimeout)
			defer rcancel()
			if _, rerr := ag.api.Release(rctx, &endpointv1.ReleaseRequest{ContainerId: args.ContainerID, Ifname: args.IfName}); rerr != nil {
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

	// 5. Register before attaching: the programs find the endpoint entry
	// for the very first packet, so anti-spoofing has no gap.
	_, err = ag.api.Register(ctx, &endpointv1.RegisterRequest{Endpoint: &endpointv1.Endpoint{
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
	}})
	if err != nil {
		return ag.rpcErr("register", err)
	}
	defer func() {
		if err != nil {
			rctx, rcancel := context.WithTimeout(context.Background(), rollbackTimeout)
			defer rcancel()
			if _, rerr := ag.api.Unregister(rctx, &endpointv1.UnregisterRequest{ContainerId: args.ContainerID, Ifname: args.IfName}); rerr != nil {
				log.Error("rollback: unregister", logKeyErr, rerr)
			}
		}
	}()

	// 6. The pinned XDP and TCX programs on the host veth.
	if err := p.Datapath.Attach(alloc.GetBpfRoot(), pl.HostIfname, mode); err != nil {
		return fmt.Errorf("attach datapath to %s: %w", pl.HostIfname, err)
	}
	defer func() {
		if err != nil {
			if derr := p.Datapath.Detach(alloc.GetBpfRoot(), pl.HostIfname); derr != nil {
				log.Error("rollback: detach", logKeyErr, derr)
			}
		}
	}()

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
	log.Info("added", "xdp", mode)
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
	inv, done, err := p.start("DEL", args)
	if err != nil {
		return err
	}
	defer done()
	log := inv.log
	hostIf := HostIfname(args.ContainerID, args.IfName)
	log = log.With(logKeyHostIfname, hostIf)

	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	ag, agentErr := dialAgent(inv.conf.AgentSocket)
	var st *endpointv1.StatusResponse
	if agentErr == nil {
		defer ag.Close()
		st, err = ag.api.Status(ctx, &endpointv1.StatusRequest{})
		agentErr = ag.rpcErr("status", err)
	}

	var errs []error
	if agentErr == nil && st.GetBpfRoot() != "" {
		if err := p.Datapath.Detach(st.GetBpfRoot(), hostIf); err != nil {
			errs = append(errs, fmt.Errorf("detach datapath from %s: %w", hostIf, err))
		}
	}
	if err := deleteHostLink(hostIf); err != nil {
		errs = append(errs, err)
	}
	if agentErr != nil {
		if len(errs) > 0 {
			return firstCNIError(append(errs, agentErr))
		}
		log.Warn("agent unreachable: removed the veth; the agent releases the rest when it sees the veth gone", logKeyErr, agentErr)
		return nil
	}
	if _, err := ag.api.Unregister(ctx, &endpointv1.UnregisterRequest{ContainerId: args.ContainerID, Ifname: args.IfName}); err != nil {
		errs = append(errs, ag.rpcErr("unregister", err))
	}
	if _, err := ag.api.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: args.ContainerID, Ifname: args.IfName}); err != nil {
		errs = append(errs, ag.rpcErr("release", err))
	}
	if len(errs) > 0 {
		err := firstCNIError(errs)
		log.Error("del failed", logKeyErr, err)
		return err
	}
	log.Info("deleted")
	return nil
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

	ag, err := dialAgent(inv.conf.AgentSocket)
	if err != nil {
		return err
	}
	defer ag.Close()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	st, err := ag.api.Status(ctx, &endpointv1.StatusRequest{})
	if err != nil {
		return ag.rpcErr("status", err)
	}
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
	if err := p.Datapath.CheckAttached(st.GetBpfRoot(), hostIf, mode); err != nil {
		return fmt.Errorf("check: datapath on %s: %w", hostIf, err)
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

// GC removes every attachment the runtime did not list as valid: agent
// endpoints and allocations, their host veths and link pins, and stray
// lxc* veths and link pins that no valid attachment owns. It assumes one
// loupe network per node, since the agent's records are per node.
func (p *Plugin) GC(args *skel.CmdArgs) (err error) {
	inv, done, err := p.start("GC", args)
	if err != nil {
		return err
	}
	defer done()
	log := inv.log.With(logKeyAttachments, len(inv.conf.ValidAttachments))
	valid := map[types.GCAttachment]bool{}
	validHost := map[string]bool{}
	for _, a := range inv.conf.ValidAttachments {
		valid[a] = true
		validHost[HostIfname(a.ContainerID, a.IfName)] = true
	}

	ag, err := dialAgent(inv.conf.AgentSocket)
	if err != nil {
		return err
	}
	defer ag.Close()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	st, err := ag.api.Status(ctx, &endpointv1.StatusRequest{})
	if err != nil {
		return ag.rpcErr("status", err)
	}
	bpfRoot := st.GetBpfRoot()
	list, err := ag.api.List(ctx, &endpointv1.ListRequest{})
	if err != nil {
		return ag.rpcErr("list", err)
	}

	var errs []error
	removeWire := func(hostIf string) {
		if bpfRoot != "" {
			if err := p.Datapath.Detach(bpfRoot, hostIf); err != nil {
				errs = append(errs, fmt.Errorf("detach %s: %w", hostIf, err))
			}
		}
		if err := deleteHostLink(hostIf); err != nil {
			errs = append(errs, err)
		}
	}
	removed := 0
	for _, e := range list.GetEndpoints() {
		key := types.GCAttachment{ContainerID: e.GetContainerId(), IfName: e.GetIfname()}
		if valid[key] {
			continue
		}
		hostIf := e.GetHostIfname()
		if hostIf == "" {
			hostIf = HostIfname(key.ContainerID, key.IfName)
		}
		removeWire(hostIf)
		if _, err := ag.api.Unregister(ctx, &endpointv1.UnregisterRequest{ContainerId: key.ContainerID, Ifname: key.IfName}); err != nil {
			errs = append(errs, ag.rpcErr("unregister", err))
		}
		if _, err := ag.api.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: key.ContainerID, Ifname: key.IfName}); err != nil {
			errs = append(errs, ag.rpcErr("release", err))
		}
		removed++
	}
	for _, a := range list.GetAllocations() {
		key := types.GCAttachment{ContainerID: a.GetContainerId(), IfName: a.GetIfname()}
		if valid[key] {
			continue
		}
		// An allocation without an endpoint is an ADD that died midway;
		// its veth may exist.
		removeWire(HostIfname(key.ContainerID, key.IfName))
		if _, err := ag.api.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: key.ContainerID, Ifname: key.IfName}); err != nil {
			errs = append(errs, ag.rpcErr("release", err))
		}
		removed++
	}

	// Leftovers no record points to any more.
	stray := map[string]bool{}
	if bpfRoot != "" {
		if ents, err := os.ReadDir(filepath.Join(bpfRoot, "links")); err == nil {
			for _, d := range ents {
				if d.IsDir() && isLoupeHostIfname(d.Name()) && !validHost[d.Name()] {
					stray[d.Name()] = true
				}
			}
		}
	}
	links, err := linkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		if _, isVeth := l.(*netlink.Veth); isVeth && isLoupeHostIfname(name) && !validHost[name] {
			stray[name] = true
		}
	}
	for name := range stray {
		removeWire(name)
	}
	log.Info("gc done", "removed_records", removed, "removed_stray", len(stray))
	return firstCNIErrorOrNil(errs)
}

func firstCNIErrorOrNil(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return firstCNIError(errs)
}

// isLoupeHostIfname matches names HostIfname produces.
func isLoupeHostIfname(name string) bool {
	if len(name) != len(HostIfnamePrefix)+11 || !strings.HasPrefix(name, HostIfnamePrefix) {
		return false
	}
	for _, c := range name[len(HostIfnamePrefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

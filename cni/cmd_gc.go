package cni

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

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

	ag, err := openAgent(inv.conf.AgentSocket)
	if err != nil {
		return err
	}
	defer ag.Close()
	ctx := ag.ctx
	bpfRoot := ag.status.GetBpfRoot()
	list, err := ag.api.List(ctx, &endpointv1.ListRequest{})
	if err != nil {
		return ag.rpcErr("list", err)
	}

	var errs []error
	// removeWire deletes a host veth, which takes the programs off the
	// wire; the agent removes the link pins of what it has records of
	// (Release), and pins left without a record are plain files to unlink.
	removeWire := func(hostIf string, pins bool) {
		if err := deleteHostLink(hostIf); err != nil {
			errs = append(errs, err)
			return
		}
		if pins && bpfRoot != "" {
			if err := os.RemoveAll(filepath.Join(bpfRoot, "links", hostIf)); err != nil {
				errs = append(errs, fmt.Errorf("remove link pins of %s: %w", hostIf, err))
			}
		}
	}
	removed := 0
	for _, e := range list.GetEndpoints() {
		key := types.GCAttachment{ContainerID: e.GetContainerId(), IfName: e.GetIfname()}
		// An endpoint the agent rebuilt after losing its state file may
		// carry a placeholder key; its host veth name still says which
		// valid attachment owns it, and that pod must keep its veth.
		if valid[key] || validHost[e.GetHostIfname()] {
			continue
		}
		hostIf := e.GetHostIfname()
		if hostIf == "" {
			hostIf = HostIfname(key.ContainerID, key.IfName)
		}
		removeWire(hostIf, false)
		if _, err := ag.api.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: key.ContainerID, Ifname: key.IfName, HostIfname: hostIf}); err != nil {
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
		hostIf := HostIfname(key.ContainerID, key.IfName)
		removeWire(hostIf, false)
		if _, err := ag.api.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: key.ContainerID, Ifname: key.IfName, HostIfname: hostIf}); err != nil {
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
		removeWire(name, true)
	}
	log.Info("gc done", "removed_records", removed, "removed_stray", len(stray))
	return firstCNIErrorOrNil(errs)
}

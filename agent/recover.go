package agent

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/loupe-project/loupe/agent/ipam"
)

// A state file that does not parse must not cost the node's running pods.
// Stopping the agent on it crash-loops the pod in Kubernetes, and deleting
// it by hand used to drop every endpoint: the pods lost their datapath
// entries and their addresses could be handed out again. Instead the file
// is moved aside (kept for a post-mortem, logged, counted) and the state is
// rebuilt from what outlives it:
//
//   - ipam.json lost, endpoints.json good: every endpoint's addresses are
//     reserved again under its own key. Allocations that had no endpoint
//     (an ADD between Allocate and Register) are lost; their Register
//     fails and the runtime retries the ADD.
//   - endpoints.json lost: the pinned endpoint map holds, per host ifindex,
//     the addresses, endpoint id, identity and policy flags. Entries whose
//     host veth still exists are live pods. Each gets the key and pod name
//     of the allocation that holds its addresses, when ipam.json is good.
//     Otherwise the container id is lost (the veth name is a hash of it),
//     and the endpoint gets a placeholder key (RecoveredContainerPrefix +
//     host veth name) with its addresses reserved under it. Its MACs come
//     back from the local delivery map; its netns is lost, and kernel-event
//     attribution finds it again through the host veth's peer
//     (daemon/netns_recover.go).
//
// A recovered pod keeps its datapath entry, ipcache entry and addresses.
// Its DEL removes the veth, and the sweep (sweep.go) then releases the
// placeholder. What a placeholder loses: CNI CHECK of that pod fails (the
// agent has no endpoint under its real key), and without its pod name the
// policy engine cannot select it by labels. Entries of the map whose veth
// is gone are dropped by reconcile, as at every start.

// RecoveredContainerPrefix starts the container id of an endpoint rebuilt
// from the datapath without a surviving allocation; the host veth name
// follows. RecoveredIfname is its ifname.
const (
	RecoveredContainerPrefix = "loupe-recovered-"
	RecoveredIfname          = "recovered"
)

// StateRecovery records one state file that did not parse and was moved
// aside.
type StateRecovery struct {
	File      string // IPAMStateFile or EndpointsStateFile
	MovedTo   string
	Err       error
	Recovered int // endpoints or allocations rebuilt
}

// StateRecoveries returns the state files recovered at start, for the
// daemon's metric.
func (a *Agent) StateRecoveries() []StateRecovery { return slices.Clone(a.recoveries) }

// moveAside renames a corrupt state file to <path>.corrupt-<time> so the
// agent can start without it, and keeps it for whoever investigates.
func moveAside(path string, now time.Time) (string, error) {
	to := fmt.Sprintf("%s.corrupt-%s", path, now.UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("move corrupt state file %s aside: %w", path, err)
	}
	return to, nil
}

// reserveEndpoints rebuilds the allocations from a good endpoints table,
// after ipam.json was lost. An endpoint whose addresses cannot be reserved
// (outside the pod cidrs, held twice) is left out and dropped by restore.
func (a *Agent) reserveEndpoints(eps []Endpoint) int {
	n := 0
	for _, e := range eps {
		err := a.ipam.Reserve(ipam.Allocation{Key: e.key(), IPv4: e.IPv4, IPv6: e.IPv6,
			PodNamespace: e.PodNamespace, PodName: e.PodName})
		if err != nil {
			a.log.Warn("state recovery: cannot reserve the addresses of an endpoint", "container_id", e.ContainerID,
				"ifname", e.Ifname, "ipv4", e.IPv4, "ipv6", e.IPv6, "err", err)
			continue
		}
		n++
	}
	return n
}

// rebuildEndpoints rebuilds the endpoint table from the pinned endpoint map
// and the host veths, after endpoints.json was lost, and reserves every
// rebuilt endpoint's addresses.
func (a *Agent) rebuildEndpoints() (map[ipam.Key]*Endpoint, uint32, error) {
	out := map[ipam.Key]*Endpoint{}
	if a.cfg.HostLinkName == nil {
		a.log.Error("state recovery: no host link lookup configured; endpoints cannot be rebuilt from the datapath")
		return out, 1, nil
	}
	have, err := a.dp.Endpoints()
	if err != nil {
		return nil, 0, fmt.Errorf("read datapath endpoints: %w", err)
	}
	byAddr := map[netip.Addr]ipam.Allocation{}
	for _, al := range a.ipam.List() {
		for _, ip := range []netip.Addr{al.IPv4, al.IPv6} {
			if ip.IsValid() {
				byAddr[ip] = al
			}
		}
	}
	ids := map[uint32]bool{}
	maxID := uint32(0)
	for _, idx := range slices.Sorted(maps.Keys(have)) {
		info := have[idx]
		name, ok := a.cfg.HostLinkName(idx)
		if !ok || !strings.HasPrefix(name, "lxc") {
			continue // not a live pod: reconcile removes the entry
		}
		if info.ID == 0 || info.ID > maxEndpointID || ids[info.ID] {
			a.log.Warn("state recovery: datapath entry with a bad or duplicate endpoint id", "host_ifindex", idx, "id", info.ID)
			continue
		}
		e := &Endpoint{HostIfname: name, HostIfindex: idx, IPv4: info.IPv4, IPv6: info.IPv6, ID: info.ID,
			Identity: info.Identity, PolicyIngress: info.PolicyIngress, PolicyEgress: info.PolicyEgress,
			MAC: macString(info.PodMAC), HostMAC: macString(info.HostMAC)}
		al, found := byAddr[info.IPv4]
		if !info.IPv4.IsValid() {
			al, found = byAddr[info.IPv6]
		}
		if found && al.IPv4 == e.IPv4 && al.IPv6 == e.IPv6 {
			e.ContainerID, e.Ifname, e.PodNamespace, e.PodName = al.ContainerID, al.Ifname, al.PodNamespace, al.PodName
		} else {
			e.ContainerID, e.Ifname = RecoveredContainerPrefix+name, RecoveredIfname
		}
		if _, dup := out[e.key()]; dup {
			e.ContainerID, e.Ifname = RecoveredContainerPrefix+name, RecoveredIfname
		}
		if err := validateEndpoint(e); err != nil {
			a.log.Warn("state recovery: datapath entry is not a valid endpoint", "host_ifindex", idx, "err", err)
			continue
		}
		// Reserve before keeping: an endpoint must never hold an address
		// the allocator could hand out.
		if err := a.ipam.Reserve(ipam.Allocation{Key: e.key(), IPv4: e.IPv4, IPv6: e.IPv6,
			PodNamespace: e.PodNamespace, PodName: e.PodName}); err != nil {
			a.log.Warn("state recovery: cannot reserve the addresses of a datapath entry", "host_ifindex", idx,
				"host_ifname", name, "ipv4", e.IPv4, "ipv6", e.IPv6, "err", err)
			continue
		}
		ids[e.ID] = true
		maxID = max(maxID, e.ID)
		out[e.key()] = e
		a.log.Info("state recovery: endpoint rebuilt from the datapath", "container_id", e.ContainerID, "ifname", e.Ifname,
			"pod", e.PodNamespace+"/"+e.PodName, "id", e.ID, "host_ifname", name, "host_ifindex", idx, "ipv4", e.IPv4, "ipv6", e.IPv6)
	}
	next := maxID + 1
	if next > maxEndpointID {
		next = 1
	}
	return out, next, nil
}

// recordRecovery logs and records one recovered state file.
func (a *Agent) recordRecovery(r StateRecovery) {
	a.recoveries = append(a.recoveries, r)
	a.log.Error("state file was corrupt: moved aside and rebuilt from the datapath and the host veths",
		"file", r.File, "moved_to", r.MovedTo, "rebuilt", r.Recovered, "err", r.Err)
}

var errCorruptEndpoints = errors.New("corrupt endpoints state file")

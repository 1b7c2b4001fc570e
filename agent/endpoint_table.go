package agent

import (
	"fmt"
	"maps"

	"github.com/loupe-project/loupe/agent/ipam"
)

// Changes to the endpoint table (Agent.endpoints): each goes to the
// datapath's endpoint map, then the ipcache and the state file, and is
// undone if a later step fails. The caller holds a.mu.

// registerLocked stores e (assigning its id), updates the datapath and the
// state file; on failure it undoes what it did. The caller holds mu.
func (a *Agent) registerLocked(e *Endpoint) error {
	old := a.endpoints[e.key()]
	if old != nil {
		e.ID = old.ID
		// Same attachment, same id: its policy entries still apply.
		e.PolicyIngress, e.PolicyEgress = old.PolicyIngress, old.PolicyEgress
	} else {
		id, err := a.allocateIDLocked()
		if err != nil {
			return err
		}
		e.ID = id
	}
	next := maps.Clone(a.endpoints)
	next[e.key()] = e
	// An endpoint of another attachment on the same ifindex is stale: its
	// veth is gone and the kernel reused the index.
	for k, o := range a.endpoints {
		if k != e.key() && o.HostIfindex == e.HostIfindex {
			delete(next, k)
			a.log.Warn("replacing stale endpoint on a reused host ifindex",
				"host_ifindex", e.HostIfindex, "stale_container_id", o.ContainerID, "stale_ifname", o.Ifname)
		}
	}
	if err := a.dp.UpsertEndpoint(e.HostIfindex, e.info()); err != nil {
		return fmt.Errorf("write endpoint map: %w", err)
	}
	movedFrom := uint32(0)
	if old != nil && old.HostIfindex != e.HostIfindex {
		movedFrom = old.HostIfindex
		if err := a.dp.DeleteEndpoint(movedFrom); err != nil {
			a.undoUpsert(e.HostIfindex)
			return fmt.Errorf("remove endpoint from old ifindex %d: %w", movedFrom, err)
		}
	}
	undo := func() {
		a.undoUpsert(e.HostIfindex)
		if movedFrom != 0 {
			a.restoreEntry(old)
		}
		if old == nil {
			a.nextID = e.ID
		}
		if err := a.syncIPCache(a.endpoints); err != nil {
			a.log.Error("rollback: ipcache", "err", err)
		}
	}
	if err := a.commitLocked(next, undo); err != nil {
		return err
	}
	a.log.Info("endpoint registered", "container_id", e.ContainerID, "ifname", e.Ifname,
		"pod", e.PodNamespace+"/"+e.PodName, "id", e.ID, "identity", e.Identity,
		"host_ifname", e.HostIfname, "host_ifindex", e.HostIfindex, "ipv4", e.IPv4, "ipv6", e.IPv6)
	return nil
}

// commitLocked makes next the endpoint table: the ipcache first, then the
// state file. On failure undo puts the datapath back, and the table stays
// as it was. The caller holds mu.
func (a *Agent) commitLocked(next map[ipam.Key]*Endpoint, undo func()) error {
	if err := a.updateIPCache(a.endpoints, next); err != nil {
		undo()
		return err
	}
	if err := a.persistLocked(next); err != nil {
		undo()
		return err
	}
	a.endpoints = next
	a.notifyChanged()
	return nil
}

// undoUpsert puts back what was on ifindex before a failed registration:
// the table (a.endpoints) is still the one from before it.
func (a *Agent) undoUpsert(ifindex uint32) {
	for _, o := range a.endpoints {
		if o.HostIfindex == ifindex {
			a.restoreEntry(o)
			return
		}
	}
	if err := a.dp.DeleteEndpoint(ifindex); err != nil {
		a.log.Error("rollback: remove endpoint", "host_ifindex", ifindex, "err", err)
	}
}

func (a *Agent) restoreEntry(e *Endpoint) {
	if err := a.dp.UpsertEndpoint(e.HostIfindex, e.info()); err != nil {
		a.log.Error("rollback: restore endpoint", "host_ifindex", e.HostIfindex, "err", err)
	}
}

// unregisterLocked removes key's endpoint from the datapath and the state
// file; the caller holds mu.
func (a *Agent) unregisterLocked(key ipam.Key) error {
	e, ok := a.endpoints[key]
	if !ok {
		return nil
	}
	if err := a.dp.DeleteEndpoint(e.HostIfindex); err != nil {
		return fmt.Errorf("remove from endpoint map: %w", err)
	}
	next := maps.Clone(a.endpoints)
	delete(next, key)
	undo := func() {
		a.restoreEntry(e)
		if err := a.syncIPCache(a.endpoints); err != nil {
			a.log.Error("rollback: ipcache", "err", err)
		}
	}
	if err := a.commitLocked(next, undo); err != nil {
		return err
	}
	a.log.Info("endpoint unregistered", "container_id", e.ContainerID, "ifname", e.Ifname,
		"id", e.ID, "host_ifname", e.HostIfname, "host_ifindex", e.HostIfindex)
	return nil
}

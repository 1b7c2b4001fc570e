package agent

import (
	"fmt"
	"maps"
	"net/netip"
)

// EndpointPolicy is what the policy engine sets on an endpoint: its
// security identity and whether policy is enforced in each direction.
type EndpointPolicy struct {
	Identity        uint32
	Ingress, Egress bool
}

// SetIdentityFunc installs the function that gives a registering pod its
// identity (the policy engine's, from namespace and labels). Without one,
// PodIdentity is used.
func (a *Agent) SetIdentityFunc(f func(namespace, name string) uint32) { a.identityFn.Store(&f) }

func (a *Agent) identityOf(namespace, name string) uint32 {
	if f := a.identityFn.Load(); f != nil {
		return (*f)(namespace, name)
	}
	return PodIdentity(namespace, name)
}

// EndpointsChanged signals (coalesced) after every register or unregister,
// so the policy engine recompiles for the new endpoint set.
func (a *Agent) EndpointsChanged() <-chan struct{} { return a.changed }

func (a *Agent) notifyChanged() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// OwnsPrefix reports whether the agent writes this ipcache prefix itself
// (its pods' addresses and its gateways, inside its pod CIDRs).
func (a *Agent) OwnsPrefix(p netip.Prefix) bool { return a.ownsPrefix(p) }

// SetEndpointPolicy sets identity and enforcement of the endpoints given by
// id (others are left alone; unknown ids are ignored): endpoint map first,
// then the ipcache entries of their addresses, then the state file. On
// failure the previous table is written back.
func (a *Agent) SetEndpointPolicy(want map[uint32]EndpointPolicy) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	next := maps.Clone(a.endpoints)
	var written []*Endpoint
	undo := func() {
		for _, e := range written {
			a.restoreEntry(e)
		}
		if err := a.syncIPCache(a.endpoints); err != nil {
			a.log.Error("rollback: ipcache", "err", err)
		}
	}
	for k, e := range a.endpoints {
		p, ok := want[e.ID]
		if !ok || (p == EndpointPolicy{Identity: e.Identity, Ingress: e.PolicyIngress, Egress: e.PolicyEgress}) {
			continue
		}
		ne := *e
		ne.Identity, ne.PolicyIngress, ne.PolicyEgress = p.Identity, p.Ingress, p.Egress
		if err := a.dp.UpsertEndpoint(ne.HostIfindex, ne.info()); err != nil {
			undo()
			return fmt.Errorf("set endpoint policy of %d: %w", e.ID, err)
		}
		written = append(written, e)
		next[k] = &ne
	}
	if len(written) == 0 {
		return nil
	}
	if err := a.syncIPCache(next); err != nil {
		undo()
		return err
	}
	if err := a.persistLocked(next); err != nil {
		undo()
		return err
	}
	a.endpoints = next
	return nil
}

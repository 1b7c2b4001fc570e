package agent

import (
	"errors"
	"fmt"
	"slices"
)

// A pod's host veth goes away with its DEL, and with its netns when a
// runtime loses a pod without calling DEL. An endpoint whose host veth is
// gone is dead, and the agent releases it itself: its endpoint entry, its
// addresses and its link pins. That is what lets loupe-cni's DEL succeed
// while the agent is away (it deletes the veth and returns), so deleting a
// pod never waits on the agent, and nothing leaks either. Cilium's CNI
// queues such deletions in a file; deriving them from the links needs no
// queue and also covers pods the runtime forgot.

// SweepDead releases every endpoint whose host veth is gone (per
// Config.HostLinkAlive) and returns how many it released. New runs it on
// the restored table; the daemon runs it periodically.
func (a *Agent) SweepDead() (int, error) {
	if a.cfg.HostLinkAlive == nil {
		return 0, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var dead []*Endpoint
	for _, e := range a.endpoints {
		if !a.cfg.HostLinkAlive(e.HostIfindex, e.HostIfname) {
			dead = append(dead, e)
		}
	}
	slices.SortFunc(dead, func(x, y *Endpoint) int { return int(x.ID) - int(y.ID) })
	var errs []error
	released := 0
	for _, e := range dead {
		if err := a.releaseDeadLocked(e); err != nil {
			errs = append(errs, fmt.Errorf("release dead endpoint %s/%s: %w", e.ContainerID, e.Ifname, err))
			continue
		}
		released++
	}
	return released, errors.Join(errs...)
}

// releaseDeadLocked is DEL on the agent's side for an endpoint whose veth
// is already gone. The caller holds mu.
func (a *Agent) releaseDeadLocked(e *Endpoint) error {
	// Pins first: if that fails, the endpoint stays for the next sweep.
	if a.cfg.DetachHostLink != nil {
		if err := a.cfg.DetachHostLink(e.HostIfname); err != nil {
			return err
		}
	}
	if err := a.unregisterLocked(e.key()); err != nil {
		return err
	}
	if err := a.ipam.Release(e.key()); err != nil {
		return err
	}
	a.log.Info("released the endpoint of a gone host veth", "container_id", e.ContainerID, "ifname", e.Ifname,
		"pod", e.PodNamespace+"/"+e.PodName, "host_ifname", e.HostIfname, "ipv4", e.IPv4, "ipv6", e.IPv6)
	return nil
}

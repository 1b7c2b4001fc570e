package agent

import (
	"errors"
	"fmt"
	"slices"

	"github.com/loupe-project/loupe/agent/ipam"
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
// Config.HostLinkAlive), and every allocation that has had no endpoint in
// two sweeps in a row, and returns how many it released. New runs it on
// the restored table; the daemon runs it periodically.
//
// An allocation without an endpoint is an ADD between Allocate and
// Register, which takes milliseconds, or an ADD that died there (loupe-cni
// killed on a timeout, the agent restarting under it). Nothing else frees
// those: containerd 1.6 never calls CNI GC. Two sweeps apart (30 s or
// more) tells the two apart; an ADD slower than that fails its Register
// and rolls back, and the runtime retries it.
func (a *Agent) SweepDead() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	orphans, err := a.sweepOrphansLocked()
	if a.cfg.HostLinkAlive == nil {
		return orphans, err
	}
	errs := []error{err}
	var dead []*Endpoint
	for _, e := range a.endpoints {
		if !a.cfg.HostLinkAlive(e.HostIfindex, e.HostIfname) {
			dead = append(dead, e)
		}
	}
	slices.SortFunc(dead, func(x, y *Endpoint) int { return int(x.ID) - int(y.ID) })
	released := orphans
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

// sweepOrphansLocked releases allocations that had no endpoint at this
// sweep and the previous one. The caller holds mu.
func (a *Agent) sweepOrphansLocked() (int, error) {
	seen := map[ipam.Key]bool{}
	var errs []error
	released := 0
	for _, al := range a.ipam.List() {
		if _, ok := a.endpoints[al.Key]; ok {
			continue
		}
		if !a.orphans[al.Key] {
			seen[al.Key] = true
			continue
		}
		if err := a.ipam.Release(al.Key); err != nil {
			errs = append(errs, fmt.Errorf("release orphaned allocation %s/%s: %w", al.ContainerID, al.Ifname, err))
			seen[al.Key] = true
			continue
		}
		released++
		a.log.Info("released an allocation no endpoint registered in two sweeps (its ADD died)",
			"container_id", al.ContainerID, "ifname", al.Ifname, "pod", al.PodNamespace+"/"+al.PodName,
			"ipv4", al.IPv4, "ipv6", al.IPv6)
	}
	a.orphans = seen
	return released, errors.Join(errs...)
}

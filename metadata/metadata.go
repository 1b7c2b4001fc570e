// Package metadata provides the Kubernetes objects the agent needs (pods,
// namespaces, services, endpoint slices, network policies, nodes) behind one
// interface, whether they come from the API server or from a folder of
// manifests (the lab's "API server").
package metadata

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Snapshot is one consistent view of the cluster's objects. A Snapshot is
// immutable once published: readers must not modify it or the objects in it.
type Snapshot struct {
	// Generation is the content of the source's GENERATION marker at the time
	// the snapshot was read ("" when the source has none). Every object of
	// that generation is in the snapshot (possibly newer ones too).
	Generation      string
	Namespaces      []*corev1.Namespace
	Pods            []*corev1.Pod
	Services        []*corev1.Service
	EndpointSlices  []*discoveryv1.EndpointSlice
	NetworkPolicies []*networkingv1.NetworkPolicy
	Nodes           []*corev1.Node
}

// Source hands out snapshots and signals changes.
type Source interface {
	// Current returns the latest snapshot; never nil; treat as read-only.
	Current() *Snapshot
	// Subscribe returns a channel that receives a (coalesced) signal after
	// every change. It is closed when ctx is done.
	Subscribe(ctx context.Context) <-chan struct{}
}

// Static is a Source that never changes; useful for tools and tests that
// already hold the objects.
type Static struct{ Snap *Snapshot }

// Current implements Source.
func (s Static) Current() *Snapshot {
	if s.Snap == nil {
		return &Snapshot{}
	}
	return s.Snap
}

// Subscribe implements Source: the channel only closes with ctx.
func (s Static) Subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{})
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// Package k8s is the metadata source backed by a Kubernetes API server:
// client-go informers for the six kinds loupe reads, published as
// metadata.Snapshot values with coalesced change signals.
package k8s

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/loupe-project/loupe/metadata"
)

// debounce coalesces a burst of watch events (a rollout touches pods,
// endpoint slices and services together) into one snapshot.
const debounce = 20 * time.Millisecond

// DefaultSyncTimeout bounds the initial list of every informer.
const DefaultSyncTimeout = 2 * time.Minute

// Resource is one API resource the source watches: what RBAC must grant
// get, list and watch on.
type Resource struct {
	Group    string // "" for the core group
	Resource string // plural, lowercase
}

// Resources lists exactly what the informers of a Source read. The
// install manifests' ClusterRole is checked against it.
var Resources = []Resource{
	{Group: "", Resource: "namespaces"},
	{Group: "", Resource: "pods"},
	{Group: "", Resource: "services"},
	{Group: "", Resource: "nodes"},
	{Group: "discovery.k8s.io", Resource: "endpointslices"},
	{Group: "networking.k8s.io", Resource: "networkpolicies"},
}

// Source implements metadata.Source from informer caches.
type Source struct {
	log *slog.Logger

	namespaces, pods, services, slices, policies, nodes cache.SharedIndexInformer

	cur atomic.Pointer[metadata.Snapshot]
	gen uint64 // only the publish goroutine touches it

	mu   sync.Mutex
	subs map[chan struct{}]struct{}

	dirty chan struct{}
}

// Options tunes a Source.
type Options struct {
	Log *slog.Logger
	// SyncTimeout bounds the wait for the first complete list
	// (0 = DefaultSyncTimeout).
	SyncTimeout time.Duration
}

// New starts informers on client, waits until each has listed its kind
// once and returns a Source that follows the API server until ctx ends.
func New(ctx context.Context, client kubernetes.Interface, opts Options) (*Source, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.SyncTimeout
	if timeout <= 0 {
		timeout = DefaultSyncTimeout
	}
	// No resync: a relist of the cache changes nothing loupe reads.
	f := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTransform(stripManagedFields))
	s := &Source{
		log:        log,
		namespaces: f.Core().V1().Namespaces().Informer(),
		pods:       f.Core().V1().Pods().Informer(),
		services:   f.Core().V1().Services().Informer(),
		nodes:      f.Core().V1().Nodes().Informer(),
		slices:     f.Discovery().V1().EndpointSlices().Informer(),
		policies:   f.Networking().V1().NetworkPolicies().Informer(),
		subs:       map[chan struct{}]struct{}{},
		dirty:      make(chan struct{}, 1),
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.markDirty() },
		UpdateFunc: func(oldObj, newObj any) {
			if sameVersion(oldObj, newObj) {
				return
			}
			s.markDirty()
		},
		DeleteFunc: func(any) { s.markDirty() },
	}
	for _, inf := range s.all() {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, fmt.Errorf("k8s metadata: add handler: %w", err)
		}
	}
	// The informers stop with ctx, or when the initial sync fails.
	ictx, stop := context.WithCancel(ctx)
	f.Start(ictx.Done())
	sctx, cancel := context.WithTimeout(ictx, timeout)
	defer cancel()
	for i, inf := range s.all() {
		if !cache.WaitForCacheSync(sctx.Done(), inf.HasSynced) {
			stop()
			f.Shutdown()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("k8s metadata: initial sync: %w", ctx.Err())
			}
			return nil, fmt.Errorf("k8s metadata: could not list %s within %s (is the API server reachable and get/list/watch granted?)",
				Resources[i].Resource, timeout)
		}
	}
	// The handlers fired for the initial list; drop that pending signal
	// and publish the synced state directly.
	select {
	case <-s.dirty:
	default:
	}
	s.publish()
	go func() {
		defer stop()
		s.run(ictx, f)
	}()
	return s, nil
}

// stripManagedFields drops server-side-apply bookkeeping, often the
// largest part of an object, which loupe never reads.
func stripManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}

// all lists the informers in the order of Resources.
func (s *Source) all() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{s.namespaces, s.pods, s.services, s.nodes, s.slices, s.policies}
}

// sameVersion is true for the periodic no-op updates of a relist.
func sameVersion(a, b any) bool {
	type rv interface{ GetResourceVersion() string }
	ra, ok1 := a.(rv)
	rb, ok2 := b.(rv)
	return ok1 && ok2 && ra.GetResourceVersion() != "" && ra.GetResourceVersion() == rb.GetResourceVersion()
}

func (s *Source) markDirty() {
	select {
	case s.dirty <- struct{}{}:
	default: // already pending
	}
}

func (s *Source) run(ctx context.Context, f informers.SharedInformerFactory) {
	defer f.Shutdown()
	t := time.NewTimer(0)
	if !t.Stop() {
		<-t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.dirty:
			t.Reset(debounce)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			s.publish()
		}
	}
}

// publish builds a snapshot from the caches and signals subscribers.
func (s *Source) publish() {
	s.gen++
	snap := &metadata.Snapshot{
		Generation:      strconv.FormatUint(s.gen, 10),
		Namespaces:      list[*corev1.Namespace](s.namespaces),
		Pods:            list[*corev1.Pod](s.pods),
		Services:        list[*corev1.Service](s.services),
		EndpointSlices:  list[*discoveryv1.EndpointSlice](s.slices),
		NetworkPolicies: list[*networkingv1.NetworkPolicy](s.policies),
		Nodes:           list[*corev1.Node](s.nodes),
	}
	s.cur.Store(snap)
	s.log.Debug("kubernetes metadata changed", "generation", snap.Generation, "pods", len(snap.Pods),
		"policies", len(snap.NetworkPolicies), "nodes", len(snap.Nodes))
	s.mu.Lock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending: coalesce
		}
	}
	s.mu.Unlock()
}

type nsNamed interface {
	GetNamespace() string
	GetName() string
}

// list copies an informer's cache, sorted by namespace/name like the
// folder source, so snapshots compare stably.
func list[T nsNamed](inf cache.SharedIndexInformer) []T {
	items := inf.GetStore().List()
	out := make([]T, 0, len(items))
	for _, it := range items {
		if o, ok := it.(T); ok {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b T) int {
		if c := strings.Compare(a.GetNamespace(), b.GetNamespace()); c != 0 {
			return c
		}
		return strings.Compare(a.GetName(), b.GetName())
	})
	return out
}

// Current implements metadata.Source.
func (s *Source) Current() *metadata.Snapshot { return s.cur.Load() }

// Subscribe implements metadata.Source.
func (s *Source) Subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		delete(s.subs, ch)
		close(ch)
		s.mu.Unlock()
	}()
	return ch
}

var _ metadata.Source = (*Source)(nil)

package k8s

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/relay"
)

// PeerResources is what NodePeers reads: the relay's RBAC grants exactly
// get, list and watch on these.
var PeerResources = []Resource{{Group: "", Resource: "nodes"}}

// NodePeers is a relay.PeerSource that finds agents from the Node list:
// every node is a peer at its observer-address annotation, else at its
// InternalIP on the agent's port. Agents run with hostNetwork, so this
// needs neither DNS nor the agent's own peer service.
type NodePeers struct {
	Client kubernetes.Interface
	// Port is the agent's Observer port used with the InternalIP
	// (default relay.DefaultAgentPort).
	Port string
	// TLSServerName, when set, names the server certificate each node's
	// agent presents (mTLS).
	TLSServerName func(node string) string
	Log           *slog.Logger
}

// Address is a node's agent address, or "" when it has none.
func (np *NodePeers) Address(n *corev1.Node) string {
	port := np.Port
	if port == "" {
		port = relay.DefaultAgentPort
	}
	return contract.ObserverAddress(n, port)
}

// Run keeps sink equal to the Node list until ctx ends.
func (np *NodePeers) Run(ctx context.Context, sink relay.PeerSink) error {
	log := np.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := informers.NewSharedInformerFactoryWithOptions(np.Client, 0,
		informers.WithTransform(stripManagedFields))
	inf := f.Core().V1().Nodes().Informer()
	upsert := func(obj any) {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return
		}
		addr := np.Address(n)
		if addr == "" {
			log.Warn("node has no InternalIP or observer address, not a peer yet", "node", n.Name)
			sink.Remove(n.Name)
			return
		}
		sn := ""
		if np.TLSServerName != nil {
			sn = np.TLSServerName(n.Name)
		}
		if err := sink.Upsert(n.Name, n.Name, addr, sn); err != nil {
			log.Warn("add peer", "node", n.Name, "address", addr, "error", err)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    upsert,
		UpdateFunc: func(_, n any) { upsert(n) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				sink.Remove(n.Name)
			}
		},
	}); err != nil {
		return fmt.Errorf("k8s peers: add handler: %w", err)
	}
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
	return nil
}

var _ relay.PeerSource = (*NodePeers)(nil)

package k8s

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// serviceAccountToken is where the kubelet mounts a pod's token.
const serviceAccountToken = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// InCluster reports whether the process runs in a pod with a service
// account token and the API server's address in its environment.
func InCluster() bool {
	if os.Getenv("KUBERNETES_SERVICE_HOST") == "" || os.Getenv("KUBERNETES_SERVICE_PORT") == "" {
		return false
	}
	_, err := os.Stat(serviceAccountToken)
	return err == nil
}

// ErrNoCluster is returned by Config when there is neither a kubeconfig
// nor an in-cluster environment.
var ErrNoCluster = errors.New("k8s: no kubeconfig given and not running in a cluster")

// Config returns the client configuration from kubeconfig when it is set,
// else from the in-cluster environment.
func Config(kubeconfig, userAgent string) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("k8s: kubeconfig %s: %w", kubeconfig, err)
		}
	case InCluster():
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("k8s: in-cluster config: %w", err)
		}
	default:
		return nil, ErrNoCluster
	}
	if userAgent != "" {
		cfg.UserAgent = userAgent
	}
	// Informers of a whole cluster: JSON is fine, protobuf is smaller.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return cfg, nil
}

// NewClient is Config followed by kubernetes.NewForConfig.
func NewClient(kubeconfig, userAgent string) (kubernetes.Interface, error) {
	cfg, err := Config(kubeconfig, userAgent)
	if err != nil {
		return nil, err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("k8s: client: %w", err)
	}
	return c, nil
}

// NodePodCIDRs reads a node's spec.podCIDRs (or spec.podCIDR). It fails
// when the node has none yet: the agent cannot allocate without one.
func NodePodCIDRs(ctx context.Context, client kubernetes.Interface, nodeName string) ([]netip.Prefix, error) {
	n, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("k8s: get node %s: %w", nodeName, err)
	}
	raw := n.Spec.PodCIDRs
	if len(raw) == 0 && n.Spec.PodCIDR != "" {
		raw = []string{n.Spec.PodCIDR}
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("k8s: node %s has no spec.podCIDR (is the controller-manager allocating node CIDRs?)", nodeName)
	}
	out := make([]netip.Prefix, 0, len(raw))
	for _, s := range raw {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("k8s: node %s podCIDR %q: %w", nodeName, s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

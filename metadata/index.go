package metadata

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// Index answers the lookups flow enrichment needs. It is built once per
// snapshot and is read-only afterwards, so any number of goroutines may use
// it without locks.
type Index struct {
	snap       *Snapshot
	podsByIP   map[netip.Addr]*corev1.Pod
	namespaces map[string]*corev1.Namespace
	services   map[netip.AddrPort]*corev1.Service
	nodesByIP  map[netip.Addr]*corev1.Node
	nodes      map[string]*corev1.Node
}

// NewIndex indexes s. A nil snapshot gives an empty index.
func NewIndex(s *Snapshot) *Index {
	if s == nil {
		s = &Snapshot{}
	}
	ix := &Index{
		snap:       s,
		podsByIP:   make(map[netip.Addr]*corev1.Pod, len(s.Pods)),
		namespaces: make(map[string]*corev1.Namespace, len(s.Namespaces)),
		services:   make(map[netip.AddrPort]*corev1.Service, len(s.Services)),
		nodesByIP:  make(map[netip.Addr]*corev1.Node, len(s.Nodes)),
		nodes:      make(map[string]*corev1.Node, len(s.Nodes)),
	}
	for _, ns := range s.Namespaces {
		ix.namespaces[ns.Name] = ns
	}
	for _, p := range s.Pods {
		// Host-network pods share their node's address, and finished pods
		// may have handed their IP to a new pod.
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, a := range PodIPs(p) {
			ix.podsByIP[a] = p
		}
	}
	for _, svc := range s.Services {
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ipStr := range ips {
			a, err := netip.ParseAddr(ipStr)
			if err != nil {
				continue // "None" for headless services
			}
			for _, sp := range svc.Spec.Ports {
				if sp.Port > 0 && sp.Port < 65536 {
					ix.services[netip.AddrPortFrom(a.Unmap(), uint16(sp.Port))] = svc
				}
			}
		}
	}
	for _, n := range s.Nodes {
		ix.nodes[n.Name] = n
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				ix.nodesByIP[ip.Unmap()] = n
			}
		}
	}
	return ix
}

// PodIPs returns the parsed addresses of a pod (status.podIPs, or podIP).
func PodIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil {
			a = a.Unmap()
			for _, o := range out {
				if o == a {
					return
				}
			}
			out = append(out, a)
		}
	}
	for _, pip := range p.Status.PodIPs {
		add(pip.IP)
	}
	add(p.Status.PodIP)
	return out
}

// Snapshot returns the indexed snapshot.
func (ix *Index) Snapshot() *Snapshot { return ix.snap }

// PodByIP returns the running pod with address a, or nil.
func (ix *Index) PodByIP(a netip.Addr) *corev1.Pod { return ix.podsByIP[a.Unmap()] }

// Namespace returns the namespace object, or nil.
func (ix *Index) Namespace(name string) *corev1.Namespace { return ix.namespaces[name] }

// NamespaceLabels returns the labels of a namespace (nil if unknown).
func (ix *Index) NamespaceLabels(name string) map[string]string {
	if ns := ix.namespaces[name]; ns != nil {
		return ns.Labels
	}
	return nil
}

// ServiceByAddr returns the service whose ClusterIP:port is a:port, or nil.
func (ix *Index) ServiceByAddr(a netip.Addr, port uint16) *corev1.Service {
	return ix.services[netip.AddrPortFrom(a.Unmap(), port)]
}

// NodeByIP returns the node with internal or external address a, or nil.
func (ix *Index) NodeByIP(a netip.Addr) *corev1.Node { return ix.nodesByIP[a.Unmap()] }

// Node returns the node named name, or nil.
func (ix *Index) Node(name string) *corev1.Node { return ix.nodes[name] }

// Nodes returns every node, sorted by name.
func (ix *Index) Nodes() []*corev1.Node { return ix.snap.Nodes }

package observer

import (
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	corev1 "k8s.io/api/core/v1"

	"github.com/loupe-project/loupe/metadata"
)

// Labels that change with every rollout and that Cilium leaves out of
// identities; showing them would split one workload into many.
var ignoredPodLabels = map[string]bool{
	"pod-template-hash":        true,
	"controller-revision-hash": true,
	"pod-template-generation":  true,
}

// podInfo is everything a flow needs about one pod, computed once per
// metadata change. It is shared by all flows of the pod and never mutated,
// except for the endpoint cache.
type podInfo struct {
	namespace string
	name      string
	labels    []string
	workloads []*flowpb.Workload
	// eps caches the endpoints built for this pod, one per endpoint ID and
	// identity the datapath reported lately: a local pod comes with its ID
	// in events seen at its own veth and without it in those seen at its
	// peer's, and a single slot made a new endpoint for every other flow.
	eps     [4]atomic.Pointer[flowpb.Endpoint]
	epsNext atomic.Uint32
}

func (p *podInfo) endpoint(id, identity uint32) *flowpb.Endpoint {
	for i := range p.eps {
		if ep := p.eps[i].Load(); ep != nil && ep.ID == id && ep.Identity == identity {
			return ep
		}
	}
	ep := &flowpb.Endpoint{
		ID:        id,
		Identity:  identity,
		Namespace: p.namespace,
		PodName:   p.name,
		Labels:    p.labels,
		Workloads: p.workloads,
	}
	p.eps[p.epsNext.Add(1)%uint32(len(p.eps))].Store(ep)
	return ep
}

// enrichIndex is an immutable view of the metadata, swapped atomically on
// every change so the decoder reads it without locks.
type enrichIndex struct {
	generation string
	pods       map[netip.Addr]*podInfo
	services   map[netip.AddrPort]*flowpb.Service
	nodeIPs    map[netip.Addr]string // node address -> node name
	meta       *metadata.Index
}

func newEnrichIndex(snap *metadata.Snapshot) *enrichIndex {
	ix := metadata.NewIndex(snap)
	e := &enrichIndex{
		generation: snap.Generation,
		pods:       make(map[netip.Addr]*podInfo, len(snap.Pods)),
		services:   make(map[netip.AddrPort]*flowpb.Service),
		nodeIPs:    make(map[netip.Addr]string, len(snap.Nodes)),
		meta:       ix,
	}
	for _, p := range snap.Pods {
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		ips := metadata.PodIPs(p)
		if len(ips) == 0 {
			continue
		}
		pi := &podInfo{
			namespace: p.Namespace,
			name:      p.Name,
			labels:    podLabels(p, ix.NamespaceLabels(p.Namespace)),
			workloads: podWorkloads(p),
		}
		for _, a := range ips {
			e.pods[a] = pi
		}
	}
	for _, svc := range snap.Services {
		s := &flowpb.Service{Name: svc.Name, Namespace: svc.Namespace}
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ipStr := range ips {
			a, err := netip.ParseAddr(ipStr)
			if err != nil {
				continue
			}
			for _, sp := range svc.Spec.Ports {
				if sp.Port > 0 && sp.Port < 65536 {
					e.services[netip.AddrPortFrom(a.Unmap(), uint16(sp.Port))] = s
				}
			}
		}
	}
	for _, n := range snap.Nodes {
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				e.nodeIPs[ip.Unmap()] = n.Name
			}
		}
	}
	return e
}

// podLabels renders a pod's labels the way Hubble shows Cilium's identity
// labels: sorted "k8s:key=value", plus the namespace, the namespace's labels
// and the service account.
func podLabels(p *corev1.Pod, nsLabels map[string]string) []string {
	out := make([]string, 0, len(p.Labels)+len(nsLabels)+3)
	for k, v := range p.Labels {
		if ignoredPodLabels[k] {
			continue
		}
		out = append(out, "k8s:"+k+"="+v)
	}
	for k, v := range nsLabels {
		out = append(out, "k8s:io.cilium.k8s.namespace.labels."+k+"="+v)
	}
	out = append(out, "k8s:io.kubernetes.pod.namespace="+p.Namespace)
	if sa := p.Spec.ServiceAccountName; sa != "" {
		out = append(out, "k8s:io.cilium.k8s.policy.serviceaccount="+sa)
	}
	slices.Sort(out)
	return out
}

// PodWorkload is the name of the workload that owns p, as flows name it
// ("" for none).
func PodWorkload(p *corev1.Pod) string {
	if w := podWorkloads(p); len(w) > 0 {
		return w[0].GetName()
	}
	return ""
}

// podWorkloads finds the workload that owns a pod: the Deployment behind a
// ReplicaSet (its name minus the pod-template-hash), a StatefulSet,
// DaemonSet or Job, or, for bare pods, the Deployment named by the "app"
// label (how the lab labels its pods).
func podWorkloads(p *corev1.Pod) []*flowpb.Workload {
	hash := p.Labels["pod-template-hash"]
	for _, ref := range p.OwnerReferences {
		if ref.Controller != nil && !*ref.Controller {
			continue
		}
		switch ref.Kind {
		case "ReplicaSet":
			if hash != "" && strings.HasSuffix(ref.Name, "-"+hash) {
				return []*flowpb.Workload{{Name: strings.TrimSuffix(ref.Name, "-"+hash), Kind: "Deployment"}}
			}
			return []*flowpb.Workload{{Name: ref.Name, Kind: "ReplicaSet"}}
		case "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController", "Deployment":
			return []*flowpb.Workload{{Name: ref.Name, Kind: ref.Kind}}
		}
	}
	if hash != "" {
		if i := strings.Index(p.Name, "-"+hash+"-"); i > 0 {
			return []*flowpb.Workload{{Name: p.Name[:i], Kind: "Deployment"}}
		}
	}
	if app := p.Labels["app"]; app != "" {
		return []*flowpb.Workload{{Name: app, Kind: "Deployment"}}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

package service

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// DefaultAffinityTimeout is sessionAffinityConfig.clientIP.timeoutSeconds'
// default (Kubernetes: 3 hours).
const DefaultAffinityTimeout = 10800 * time.Second

// Ref names the Service port a frontend comes from.
type Ref struct {
	Namespace, Name string
	Port            string // the Service port's name ("" for a single unnamed port)
}

// Frontend is one translated ClusterIP, port and protocol.
type Frontend struct {
	Ref
	datapath.ServiceFrontend
}

func protoNumber(p corev1.Protocol) (uint8, bool) {
	switch p {
	case corev1.ProtocolTCP, "":
		return 6, true
	case corev1.ProtocolUDP:
		return 17, true
	}
	return 0, false
}

// ClusterIPs returns the Service's ClusterIPs; none for headless and
// ExternalName Services.
func ClusterIPs(s *corev1.Service) []netip.Addr {
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// slicesByService groups EndpointSlices by namespace/service name.
func slicesByService(eps []*discoveryv1.EndpointSlice) map[[2]string][]*discoveryv1.EndpointSlice {
	out := map[[2]string][]*discoveryv1.EndpointSlice{}
	for _, es := range eps {
		name := es.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		k := [2]string{es.Namespace, name}
		out[k] = append(out[k], es)
	}
	return out
}

// Frontends computes every frontend of snap, sorted by Ref and address.
func Frontends(snap *metadata.Snapshot) []Frontend {
	bySvc := slicesByService(snap.EndpointSlices)
	var out []Frontend
	for _, s := range snap.Services {
		out = append(out, serviceFrontends(s, bySvc[[2]string{s.Namespace, s.Name}])...)
	}
	slicesSort(out)
	return out
}

// serviceFrontends computes the frontends of one Service from its slices.
func serviceFrontends(s *corev1.Service, eps []*discoveryv1.EndpointSlice) []Frontend {
	ips := ClusterIPs(s)
	if len(ips) == 0 {
		return nil
	}
	var affinity time.Duration
	if s.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = DefaultAffinityTimeout
		if c := s.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	var out []Frontend
	for _, sp := range s.Spec.Ports {
		proto, ok := protoNumber(sp.Protocol)
		if !ok {
			continue
		}
		for _, ip := range ips {
			out = append(out, Frontend{
				Ref: Ref{Namespace: s.Namespace, Name: s.Name, Port: sp.Name},
				ServiceFrontend: datapath.ServiceFrontend{
					Frontend: datapath.Frontend{Addr: ip, Port: uint16(sp.Port), Proto: proto},
					Backends: backendsOf(eps, sp, ip.Is4()),
					Affinity: affinity,
				},
			})
		}
	}
	return out
}

func slicesSort(fs []Frontend) {
	slices.SortFunc(fs, func(a, b Frontend) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Ref.Port, b.Ref.Port), a.Frontend.Addr.Compare(b.Frontend.Addr))
	})
}

// backendsOf lists the endpoints of one Service port and family, sorted:
// ready ones and terminating ones (which keep their connections).
func backendsOf(eps []*discoveryv1.EndpointSlice, sp corev1.ServicePort, v4 bool) []datapath.Backend {
	want := corev1.ProtocolTCP
	if sp.Protocol != "" {
		want = sp.Protocol
	}
	seen := map[netip.AddrPort]bool{}
	var out []datapath.Backend
	for _, es := range eps {
		if (es.AddressType == discoveryv1.AddressTypeIPv4) != v4 {
			continue
		}
		for _, p := range es.Ports {
			if p.Port == nil || (p.Name != nil && *p.Name != sp.Name) || (p.Name == nil && sp.Name != "") {
				continue
			}
			if p.Protocol != nil && *p.Protocol != want {
				continue
			}
			for _, e := range es.Endpoints {
				ready := e.Conditions.Ready == nil || *e.Conditions.Ready
				terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
				if !ready && !terminating {
					continue
				}
				for _, a := range e.Addresses {
					ip, err := netip.ParseAddr(a)
					if err != nil {
						continue
					}
					ap := netip.AddrPortFrom(ip.Unmap(), uint16(*p.Port))
					if seen[ap] {
						continue
					}
					seen[ap] = true
					out = append(out, datapath.Backend{Addr: ap.Addr(), Port: ap.Port(), Terminating: !ready})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b datapath.Backend) int {
		return netip.AddrPortFrom(a.Addr, a.Port).Compare(netip.AddrPortFrom(b.Addr, b.Port))
	})
	return out
}

package service

import (
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// EndpointSlicesFor derives the EndpointSlices of svc from pods, as the
// endpoints controller does: pods of its namespace that its selector
// matches, one slice per address family, a port per Service port with the
// targetPort resolved against each pod's named container ports (a pod
// without that name is left out of that port). A pod is ready when its
// Ready condition is true, terminating when it has a deletion timestamp.
// A Service without a selector gets none.
func EndpointSlicesFor(svc *corev1.Service, pods []*corev1.Pod) []*discoveryv1.EndpointSlice {
	if len(svc.Spec.Selector) == 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	type portKey struct {
		name  string
		proto corev1.Protocol
		num   int32
	}
	// By family, then by resolved port set: pods whose named ports resolve
	// differently get their own slice, as the controller does.
	groups := map[discoveryv1.AddressType]map[string]*discoveryv1.EndpointSlice{}
	for _, p := range pods {
		if p.Namespace != svc.Namespace || !sel.Matches(labels.Set(p.Labels)) || p.Status.PodIP == "" {
			continue
		}
		var ports []discoveryv1.EndpointPort
		sig := ""
		for _, sp := range svc.Spec.Ports {
			num, ok := resolveTargetPort(sp, p)
			if !ok {
				continue
			}
			proto := sp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			ports = append(ports, discoveryv1.EndpointPort{Name: ptr(sp.Name), Protocol: ptr(proto), Port: ptr(num)})
			sig += portKeyString(portKey{sp.Name, proto, num})
		}
		ready := podReady(p)
		terminating := p.DeletionTimestamp != nil
		ips := p.Status.PodIPs
		if len(ips) == 0 {
			ips = []corev1.PodIP{{IP: p.Status.PodIP}}
		}
		for _, ip := range ips {
			a, err := netip.ParseAddr(ip.IP)
			if err != nil {
				continue
			}
			fam := discoveryv1.AddressTypeIPv6
			if a.Unmap().Is4() {
				fam = discoveryv1.AddressTypeIPv4
			}
			if groups[fam] == nil {
				groups[fam] = map[string]*discoveryv1.EndpointSlice{}
			}
			es := groups[fam][sig]
			if es == nil {
				es = &discoveryv1.EndpointSlice{
					TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
					ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace,
						Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "loupe-lab"}},
					AddressType: fam,
					Ports:       ports,
				}
				groups[fam][sig] = es
			}
			e := discoveryv1.Endpoint{
				Addresses: []string{a.Unmap().String()},
				Conditions: discoveryv1.EndpointConditions{
					Ready: ptr(ready && !terminating), Serving: ptr(ready), Terminating: ptr(terminating),
				},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name},
			}
			if p.Spec.NodeName != "" {
				e.NodeName = ptr(p.Spec.NodeName)
			}
			es.Endpoints = append(es.Endpoints, e)
		}
	}
	var out []*discoveryv1.EndpointSlice
	for _, fam := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		for _, es := range sortedSlices(groups[fam]) {
			es.Name = svc.Name + "-" + string(fam[len(fam)-1:]) + "-" + strconv.Itoa(len(out))
			out = append(out, es)
		}
	}
	return out
}

func portKeyString(k struct {
	name  string
	proto corev1.Protocol
	num   int32
}) string {
	return k.name + "/" + string(k.proto) + "/" + strconv.Itoa(int(k.num)) + ";"
}

func sortedSlices(m map[string]*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*discoveryv1.EndpointSlice, 0, len(keys))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// resolveTargetPort gives the pod port a Service port sends to: a number,
// the container port of that name, or the Service port itself when unset.
func resolveTargetPort(sp corev1.ServicePort, p *corev1.Pod) (int32, bool) {
	tp := sp.TargetPort
	switch {
	case tp.Type == intstr.Int && tp.IntVal == 0:
		return sp.Port, true
	case tp.Type == intstr.Int:
		return tp.IntVal, true
	}
	proto := sp.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			cpProto := cp.Protocol
			if cpProto == "" {
				cpProto = corev1.ProtocolTCP
			}
			if cp.Name == tp.StrVal && cpProto == proto {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

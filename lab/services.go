package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/yaml"

	"github.com/loupe-project/loupe/service"
)

// KindEndpointSlice names the EndpointSlice files the lab writes for its
// Services (the lab plays the endpoints controller); manifests cannot
// declare them.
const KindEndpointSlice = "EndpointSlice"

// ServiceCIDR is the lab's Service CIDR: ClusterIPs of lab Services come
// from 10.96.<lab index>.0/24. Its first address is never handed out.
func (l *Lab) ServiceCIDR() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 96, byte(l.Index), 0}), 24)
}

// ServiceStatus is one Service in Status.
type ServiceStatus struct {
	Namespace string              `json:"namespace"`
	Name      string              `json:"name"`
	ClusterIP string              `json:"clusterIP"`
	Ports     []ServicePortStatus `json:"ports"`
}

// ServicePortStatus is one Service port.
type ServicePortStatus struct {
	Name       string `json:"name"`
	Port       int    `json:"port"`
	TargetPort string `json:"targetPort"` // a number or a container port name
	Protocol   string `json:"protocol"`
}

func storedServices(objs map[string]Object) []*corev1.Service {
	var out []*corev1.Service
	for _, o := range objs {
		if s, ok := o.Obj.(*corev1.Service); ok {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name
	})
	return out
}

// assignClusterIPs gives each new Service of objs a ClusterIP from the
// lab's Service CIDR; a stored Service keeps its own, and an explicit one
// must be in the CIDR and free.
func (l *Lab) assignClusterIPs(objs []Object, stored map[string]Object) error {
	cidr := l.ServiceCIDR()
	used := map[netip.Addr]string{}
	for k, o := range stored {
		if s, ok := o.Obj.(*corev1.Service); ok {
			if a, err := netip.ParseAddr(s.Spec.ClusterIP); err == nil {
				used[a] = k
			}
		}
	}
	for _, o := range objs {
		s, ok := o.Obj.(*corev1.Service)
		if !ok || s.Spec.Type == corev1.ServiceTypeExternalName || s.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		old := ""
		if so, ok := stored[o.Key()]; ok {
			old = so.Obj.(*corev1.Service).Spec.ClusterIP
		}
		switch {
		case s.Spec.ClusterIP == "" && old != "":
			s.Spec.ClusterIP = old
		case s.Spec.ClusterIP == "":
			a := cidr.Addr().Next()
			for ; cidr.Contains(a) && used[a] != ""; a = a.Next() {
			}
			if !cidr.Contains(a) || a == netip.AddrFrom4([4]byte{10, 96, byte(l.Index), 255}) {
				return fmt.Errorf("%s: the lab's Service CIDR %s is full", o.where(), cidr)
			}
			s.Spec.ClusterIP = a.String()
		default:
			a, err := netip.ParseAddr(s.Spec.ClusterIP)
			if err != nil || !cidr.Contains(a) {
				return fmt.Errorf("%s: spec.clusterIP %s is not in the lab's Service CIDR %s", o.where(), s.Spec.ClusterIP, cidr)
			}
			if old != "" && old != s.Spec.ClusterIP {
				return fmt.Errorf("%s: spec.clusterIP is immutable (%s)", o.where(), old)
			}
			if by := used[a]; by != "" && by != o.Key() {
				return fmt.Errorf("%s: spec.clusterIP %s is taken by %s", o.where(), a, by)
			}
		}
		s.Spec.ClusterIPs = []string{s.Spec.ClusterIP}
		a, _ := netip.ParseAddr(s.Spec.ClusterIP)
		used[a] = o.Key()
	}
	return nil
}

func endpointSliceFile(namespace, svc string) string {
	return objectFile(KindEndpointSlice, namespace, svc)
}

// syncEndpointSlices rewrites the EndpointSlices of every stored Service
// from the stored pods (one file per Service) and removes the files of
// Services that are gone. Called before a commit.
func (l *Lab) syncEndpointSlices() error {
	stored, err := l.storedObjects()
	if err != nil {
		return err
	}
	pods := storedPods(stored)
	want := map[string]bool{}
	var errs []error
	for _, s := range storedServices(stored) {
		name := endpointSliceFile(s.Namespace, s.Name)
		want[name] = true
		var docs []string
		for _, es := range service.EndpointSlicesFor(s, pods) {
			b, err := yaml.Marshal(es)
			if err != nil {
				return fmt.Errorf("encode endpoint slice of %s/%s: %w", s.Namespace, s.Name, err)
			}
			docs = append(docs, string(b))
		}
		path := filepath.Join(l.ManifestsDir(), name)
		body := []byte(strings.Join(docs, "---\n"))
		if old, err := os.ReadFile(path); err == nil && string(old) == string(body) {
			continue
		}
		errs = append(errs, writeFileAtomic(path, body, 0o644))
	}
	entries, err := os.ReadDir(l.ManifestsDir())
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	prefix := strings.ToLower(KindEndpointSlice) + "."
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, prefix) && !want[n] {
			if err := os.Remove(filepath.Join(l.ManifestsDir(), n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// storedEndpointSlices reads the EndpointSlices the lab wrote for svc.
func (l *Lab) storedEndpointSlices(namespace, svc string) ([]*discoveryv1.EndpointSlice, error) {
	b, err := os.ReadFile(filepath.Join(l.ManifestsDir(), endpointSliceFile(namespace, svc)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*discoveryv1.EndpointSlice
	for _, doc := range strings.Split(string(b), "---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		es := &discoveryv1.EndpointSlice{}
		if err := yaml.Unmarshal([]byte(doc), es); err != nil {
			return nil, fmt.Errorf("endpoint slices of %s/%s: %w", namespace, svc, err)
		}
		out = append(out, es)
	}
	return out, nil
}

func serviceStatuses(objs map[string]Object) []ServiceStatus {
	out := []ServiceStatus{}
	for _, s := range storedServices(objs) {
		ss := ServiceStatus{Namespace: s.Namespace, Name: s.Name, ClusterIP: s.Spec.ClusterIP, Ports: []ServicePortStatus{}}
		for _, p := range s.Spec.Ports {
			tp := p.TargetPort.String()
			if p.TargetPort.IntValue() == 0 && p.TargetPort.StrVal == "" {
				tp = fmt.Sprint(p.Port)
			}
			ss.Ports = append(ss.Ports, ServicePortStatus{Name: p.Name, Port: int(p.Port), TargetPort: tp, Protocol: string(p.Protocol)})
		}
		out = append(out, ss)
	}
	return out
}

// serviceTarget resolves "svc/NS/NAME" and a Service port and protocol to
// the ClusterIP and the port the ready backends listen on (which tells the
// probe whether to speak HTTP, DNS or raw bytes).
func (l *Lab) serviceTarget(to string, port int, proto string) (ip string, backend portSpec, err error) {
	id := strings.TrimPrefix(to, "svc/")
	namespace, name, ok := strings.Cut(id, "/")
	if !ok {
		namespace, name = "default", id
	}
	stored, err := l.storedObjects()
	if err != nil {
		return "", portSpec{}, err
	}
	o, ok := stored[KindService+" "+namespace+"/"+name]
	if !ok {
		return "", portSpec{}, fmt.Errorf("service %s/%s not found in the lab", namespace, name)
	}
	s := o.Obj.(*corev1.Service)
	if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone {
		return "", portSpec{}, fmt.Errorf("service %s/%s has no ClusterIP", namespace, name)
	}
	for _, sp := range s.Spec.Ports {
		if int(sp.Port) != port || !strings.EqualFold(string(sp.Protocol), proto) {
			continue
		}
		backendPort := int(sp.TargetPort.IntVal)
		if sp.TargetPort.StrVal != "" || backendPort == 0 {
			backendPort = port
			eps, err := l.storedEndpointSlices(namespace, name)
			if err != nil {
				return "", portSpec{}, err
			}
			for _, es := range eps {
				for _, ep := range es.Ports {
					if ep.Name != nil && *ep.Name == sp.Name && ep.Port != nil {
						backendPort = int(*ep.Port)
					}
				}
			}
		}
		// A named targetPort is the backends' declared port name, which
		// picks the protocol they serve on it.
		return s.Spec.ClusterIP, portSpec{Port: backendPort, Proto: proto, Name: sp.TargetPort.StrVal}, nil
	}
	return "", portSpec{}, fmt.Errorf("service %s/%s has no %s port %d", namespace, name, proto, port)
}

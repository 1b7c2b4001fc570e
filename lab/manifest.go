package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/loupe-project/loupe/internal/yaml12"
	"github.com/loupe-project/loupe/policy"
)

// Kinds the lab accepts.
const (
	KindNamespace     = "Namespace"
	KindPod           = "Pod"
	KindService       = "Service"
	KindNetworkPolicy = "NetworkPolicy"
)

var apiVersions = map[string]string{
	KindNamespace:     "v1",
	KindPod:           "v1",
	KindService:       "v1",
	KindNetworkPolicy: "networking.k8s.io/v1",
}

// Object is one decoded manifest document.
type Object struct {
	Kind      string
	Namespace string // "" for Namespace objects
	Name      string
	// Obj is *corev1.Namespace, *corev1.Pod, *corev1.Service or *networkingv1.NetworkPolicy.
	Obj any
	// Where it came from, for error messages.
	Source string
	Doc    int
}

// Key identifies an object: kind, namespace, name.
func (o Object) Key() string { return o.Kind + " " + o.ID() }

// ID is namespace/name, or name for cluster-scoped objects.
func (o Object) ID() string {
	if o.Namespace == "" {
		return o.Name
	}
	return o.Namespace + "/" + o.Name
}

func (o Object) where() string {
	return fmt.Sprintf("%s: document %d (%s %s)", o.Source, o.Doc, o.Kind, o.ID())
}

// Pod returns the object as a Pod, or nil.
func (o Object) Pod() *corev1.Pod { p, _ := o.Obj.(*corev1.Pod); return p }

// ParseManifests decodes multi-document YAML (or JSON) holding Namespace, Pod,
// Service and NetworkPolicy objects, and List objects of them. It fills in
// defaults (namespace "default", protocol TCP, the namespace name label) and
// validates every object on its own; ValidateSet checks the set as a whole.
func ParseManifests(r io.Reader, source string) ([]Object, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	var objs []Object
	for d, err := range yaml12.Documents(data) {
		doc := d.Index + 1
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, doc, err)
		}
		got, err := parseDocument(d.JSON, source, doc)
		if err != nil {
			return nil, err
		}
		objs = append(objs, got...)
	}
	return objs, nil
}

// parseDocument decodes one document, or the items of a List, from JSON.
func parseDocument(raw []byte, source string, doc int) ([]Object, error) {
	var tm struct {
		metav1.TypeMeta `json:",inline"`
		Items           []yamlRaw `json:"items"`
	}
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return nil, fmt.Errorf("%s: document %d: %w", source, doc, err)
	}
	if tm.Kind == "List" {
		var out []Object
		for _, item := range tm.Items {
			got, err := parseDocument(item, source, doc)
			if err != nil {
				return nil, err
			}
			out = append(out, got...)
		}
		return out, nil
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%s: document %d: %s", source, doc, fmt.Sprintf(format, a...))
	}
	if tm.Kind == "" {
		return nil, fail("missing kind")
	}
	want, ok := apiVersions[tm.Kind]
	if !ok {
		return nil, fail("unknown kind %q (the lab accepts Namespace, Pod, Service and NetworkPolicy)", tm.Kind)
	}
	if tm.APIVersion != want {
		return nil, fail("%s must have apiVersion %q, not %q", tm.Kind, want, tm.APIVersion)
	}
	var obj any
	var meta *metav1.ObjectMeta
	switch tm.Kind {
	case KindNamespace:
		o := &corev1.Namespace{}
		obj, meta = o, &o.ObjectMeta
	case KindPod:
		o := &corev1.Pod{}
		obj, meta = o, &o.ObjectMeta
	case KindService:
		o := &corev1.Service{}
		obj, meta = o, &o.ObjectMeta
	case KindNetworkPolicy:
		o := &networkingv1.NetworkPolicy{}
		obj, meta = o, &o.ObjectMeta
	}
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		return nil, fail("%s: %v", tm.Kind, err)
	}
	o := Object{Kind: tm.Kind, Name: meta.Name, Obj: obj, Source: source, Doc: doc}
	if meta.Name == "" {
		return nil, fail("%s without metadata.name", tm.Kind)
	}
	if tm.Kind == KindNamespace {
		if meta.Namespace != "" {
			return nil, fail("Namespace %s: metadata.namespace must be empty", meta.Name)
		}
		if msgs := validation.IsDNS1123Label(meta.Name); len(msgs) > 0 {
			return nil, fail("Namespace name %q: %s", meta.Name, strings.Join(msgs, "; "))
		}
		if meta.Labels == nil {
			meta.Labels = map[string]string{}
		}
		// The API server adds this label to every namespace.
		meta.Labels[corev1.LabelMetadataName] = meta.Name
	} else {
		if meta.Namespace == "" {
			meta.Namespace = metav1.NamespaceDefault
		}
		o.Namespace = meta.Namespace
		if msgs := validation.IsDNS1123Label(meta.Namespace); len(msgs) > 0 {
			return nil, fail("%s %s: namespace %q: %s", tm.Kind, meta.Name, meta.Namespace, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsDNS1123Subdomain(meta.Name); len(msgs) > 0 {
			return nil, fail("%s name %q: %s", tm.Kind, meta.Name, strings.Join(msgs, "; "))
		}
	}
	for k, v := range meta.Labels {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			return nil, fail("%s: label key %q: %s", o.ID(), k, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
			return nil, fail("%s: label %s value %q: %s", o.ID(), k, v, strings.Join(msgs, "; "))
		}
	}
	var err error
	switch x := obj.(type) {
	case *corev1.Pod:
		err = validatePod(x)
	case *corev1.Service:
		err = validateService(x)
	case *networkingv1.NetworkPolicy:
		err = validateNetworkPolicy(x)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.where(), err)
	}
	meta.ResourceVersion, meta.UID = "", ""
	return []Object{o}, nil
}

// yamlRaw keeps a List item as its raw bytes.
type yamlRaw []byte

func (r *yamlRaw) UnmarshalJSON(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}

func checkPort(p int32) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("port %d outside 1-65535", p)
	}
	return nil
}

func validatePod(p *corev1.Pod) error {
	if p.Spec.HostNetwork {
		return errors.New("hostNetwork pods are not supported by the lab")
	}
	if len(p.Spec.Containers) == 0 {
		return errors.New("spec.containers is empty")
	}
	seen := map[string]bool{}
	names := map[string]bool{}
	for i := range p.Spec.Containers {
		c := &p.Spec.Containers[i]
		if c.Name == "" {
			return fmt.Errorf("container %d without a name", i)
		}
		if names[c.Name] {
			return fmt.Errorf("duplicate container name %q", c.Name)
		}
		names[c.Name] = true
		for j := range c.Ports {
			port := &c.Ports[j]
			if err := checkPort(port.ContainerPort); err != nil {
				return fmt.Errorf("container %s: %w", c.Name, err)
			}
			if port.Protocol == "" {
				port.Protocol = corev1.ProtocolTCP
			}
			switch port.Protocol {
			case corev1.ProtocolTCP, corev1.ProtocolUDP:
			case corev1.ProtocolSCTP:
				return fmt.Errorf("container %s: port %d/SCTP: the lab serves only TCP and UDP", c.Name, port.ContainerPort)
			default:
				return fmt.Errorf("container %s: port %d: unknown protocol %q", c.Name, port.ContainerPort, port.Protocol)
			}
			k := fmt.Sprintf("%d/%s", port.ContainerPort, port.Protocol)
			if seen[k] {
				return fmt.Errorf("port %s declared twice", k)
			}
			seen[k] = true
		}
	}
	return nil
}

func validateService(s *corev1.Service) error {
	if ip := s.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		if _, err := netip.ParseAddr(ip); err != nil {
			return fmt.Errorf("spec.clusterIP %q: %w", ip, err)
		}
	}
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		if err := checkPort(p.Port); err != nil {
			return fmt.Errorf("spec.ports[%d]: %w", i, err)
		}
		if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal != 0 {
			if err := checkPort(p.TargetPort.IntVal); err != nil {
				return fmt.Errorf("spec.ports[%d].targetPort: %w", i, err)
			}
		}
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
	}
	return nil
}

// validateNetworkPolicy refuses what the API server refuses, with the
// validator the agent and `loupe policy` use, so the lab never holds a
// policy the agent would have to enforce fail-closed.
func validateNetworkPolicy(np *networkingv1.NetworkPolicy) error {
	if errs := policy.ValidateNetworkPolicy(np); len(errs) > 0 {
		return fmt.Errorf("NetworkPolicy is invalid: %w", errs.ToAggregate())
	}
	return nil
}

// ValidateSet checks a set of objects that will be applied together: no
// object appears twice.
func ValidateSet(objs []Object) error {
	first := map[string]Object{}
	for _, o := range objs {
		if prev, ok := first[o.Key()]; ok {
			return fmt.Errorf("duplicate %s %s: %s document %d and %s document %d", o.Kind, o.ID(), prev.Source, prev.Doc, o.Source, o.Doc)
		}
		first[o.Key()] = o
	}
	return nil
}

// podPorts lists a pod's declared ports as "80/TCP" or, when named,
// "8000/TCP/http-api", sorted by port then protocol.
func podPorts(p *corev1.Pod) []string {
	type pp struct {
		port        int32
		proto, name string
	}
	var ps []pp
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			proto := string(port.Protocol)
			if proto == "" {
				proto = "TCP"
			}
			name := port.Name
			if !validPortName(name) {
				name = "" // the serve side would refuse it; unnamed, it still serves
			}
			ps = append(ps, pp{port.ContainerPort, proto, name})
		}
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].port != ps[j].port {
			return ps[i].port < ps[j].port
		}
		return ps[i].proto < ps[j].proto
	})
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = portSpec{int(p.port), p.proto, p.name}.String()
	}
	return out
}

// readManifestFiles parses and validates every file ("-" is stdin).
func readManifestFiles(files []string, stdin io.Reader) ([]Object, error) {
	var all []Object
	for _, f := range files {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, err
		}
		objs, err := ParseManifests(bytes.NewReader(data), f)
		if err != nil {
			return nil, err
		}
		all = append(all, objs...)
	}
	if err := ValidateSet(all); err != nil {
		return nil, err
	}
	return all, nil
}

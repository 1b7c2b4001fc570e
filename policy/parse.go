package policy

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Parsing: a NetworkPolicy object, validated, becomes a Policy, whose
// selectors and rules the model (model.go) holds and decide.go evaluates.

// FieldError is a validation failure naming the object and its field.
type FieldError struct {
	Object string // "NetworkPolicy ns/name"
	Field  string // "spec.ingress[0].ports[1].protocol"
	Msg    string
}

func (e *FieldError) Error() string { return e.Object + ": " + e.Field + ": " + e.Msg }

// ParsePolicy validates np and prepares its selectors.
func ParsePolicy(np *networkingv1.NetworkPolicy) (*Policy, error) {
	obj := "NetworkPolicy " + np.Namespace + "/" + np.Name
	fail := func(field, format string, args ...any) error {
		return &FieldError{Object: obj, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if np.Name == "" {
		return nil, fail("metadata.name", "required")
	}
	if np.Namespace == "" {
		return nil, fail("metadata.namespace", "required")
	}
	p := &Policy{Ref: Ref{Namespace: np.Namespace, Name: np.Name, Kind: KindNetworkPolicy}, Source: np}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, fail("spec.podSelector", "%v", err)
	}
	p.selector = sel
	if len(np.Spec.PolicyTypes) == 0 {
		p.ingress = true
		p.egress = len(np.Spec.Egress) > 0
	}
	for i, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			p.ingress = true
		case networkingv1.PolicyTypeEgress:
			p.egress = true
		default:
			return nil, fail(fmt.Sprintf("spec.policyTypes[%d]", i), "unknown policy type %q (want Ingress or Egress)", t)
		}
	}
	for i, r := range np.Spec.Ingress {
		pr, err := parseRule(np.Namespace, fmt.Sprintf("spec.ingress[%d]", i), "from", i, r.From, r.Ports)
		if err != nil {
			return nil, &FieldError{Object: obj, Field: err.Field, Msg: err.Msg}
		}
		p.inRules = append(p.inRules, pr)
	}
	for i, r := range np.Spec.Egress {
		pr, err := parseRule(np.Namespace, fmt.Sprintf("spec.egress[%d]", i), "to", i, r.To, r.Ports)
		if err != nil {
			return nil, &FieldError{Object: obj, Field: err.Field, Msg: err.Msg}
		}
		p.egRules = append(p.egRules, pr)
	}
	return p, nil
}

func parseRule(ns, where, peerField string, index int, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) (rule, *FieldError) {
	r := rule{index: index, anyPeer: len(peers) == 0, anyPorts: len(ports) == 0}
	for i, pp := range ports {
		f := fmt.Sprintf("%s.ports[%d]", where, i)
		proto, err := protoOf(pp.Protocol)
		if err != nil {
			return r, &FieldError{Field: f + ".protocol", Msg: err.Error()}
		}
		pr := portRule{proto: proto}
		if pp.Port != nil {
			if pp.Port.Type == intstr.String {
				if pp.Port.StrVal == "" {
					return r, &FieldError{Field: f + ".port", Msg: "empty port name"}
				}
				pr.name = pp.Port.StrVal
			} else {
				if pp.Port.IntVal < 1 || pp.Port.IntVal > 65535 {
					return r, &FieldError{Field: f + ".port", Msg: fmt.Sprintf("%d outside 1-65535", pp.Port.IntVal)}
				}
				pr.port = uint16(pp.Port.IntVal)
			}
		}
		if pp.EndPort != nil {
			switch {
			case pp.Port == nil:
				return r, &FieldError{Field: f + ".endPort", Msg: "endPort requires port"}
			case pr.name != "":
				return r, &FieldError{Field: f + ".endPort", Msg: "endPort requires a numeric port, not a named one"}
			case *pp.EndPort < int32(pr.port) || *pp.EndPort > 65535:
				return r, &FieldError{Field: f + ".endPort", Msg: fmt.Sprintf("%d must be between port %d and 65535", *pp.EndPort, pr.port)}
			}
			pr.endPort = uint16(*pp.EndPort)
		}
		r.ports = append(r.ports, pr)
	}
	for i, peer := range peers {
		f := fmt.Sprintf("%s.%s[%d]", where, peerField, i)
		pr := peerRule{policy: ns}
		if peer.IPBlock != nil {
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				return r, &FieldError{Field: f, Msg: "ipBlock cannot be combined with podSelector or namespaceSelector"}
			}
			cidr, err := netip.ParsePrefix(peer.IPBlock.CIDR)
			if err != nil {
				return r, &FieldError{Field: f + ".ipBlock.cidr", Msg: fmt.Sprintf("%q is not a CIDR", peer.IPBlock.CIDR)}
			}
			b := &ipBlock{cidr: cidr.Masked()}
			for j, e := range peer.IPBlock.Except {
				ex, err := netip.ParsePrefix(e)
				if err != nil {
					return r, &FieldError{Field: fmt.Sprintf("%s.ipBlock.except[%d]", f, j), Msg: fmt.Sprintf("%q is not a CIDR", e)}
				}
				if ex.Addr().Is4() != cidr.Addr().Is4() || ex.Bits() < cidr.Bits() || !b.cidr.Contains(ex.Addr()) {
					return r, &FieldError{Field: fmt.Sprintf("%s.ipBlock.except[%d]", f, j), Msg: fmt.Sprintf("%s is not inside cidr %s", e, peer.IPBlock.CIDR)}
				}
				b.except = append(b.except, ex.Masked())
			}
			pr.block = b
			r.peers = append(r.peers, pr)
			continue
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			return r, &FieldError{Field: f, Msg: "a peer needs podSelector, namespaceSelector or ipBlock"}
		}
		if peer.PodSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
			if err != nil {
				return r, &FieldError{Field: f + ".podSelector", Msg: err.Error()}
			}
			pr.pods = s
		}
		if peer.NamespaceSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
			if err != nil {
				return r, &FieldError{Field: f + ".namespaceSelector", Msg: err.Error()}
			}
			pr.nsSel = s
		}
		r.peers = append(r.peers, pr)
	}
	return r, nil
}

func protoOf(p *corev1.Protocol) (Proto, error) {
	if p == nil || *p == "" {
		return TCP, nil
	}
	switch *p {
	case corev1.ProtocolTCP:
		return TCP, nil
	case corev1.ProtocolUDP:
		return UDP, nil
	case corev1.ProtocolSCTP:
		return SCTP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want TCP, UDP or SCTP)", *p)
}

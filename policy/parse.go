package policy

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Parsing: a NetworkPolicy object, validated, becomes a Policy, whose
// selectors and rules the model (model.go) holds and decide.go evaluates.

// ParsePolicy validates np as the API server does (validate.go) and
// prepares its selectors. A policy the API server would refuse returns an
// *InvalidPolicyError.
func ParsePolicy(np *networkingv1.NetworkPolicy) (*Policy, error) {
	ref := Ref{Namespace: np.Namespace, Name: np.Name, Kind: KindNetworkPolicy}
	if errs := ValidateNetworkPolicy(np); len(errs) > 0 {
		return nil, &InvalidPolicyError{Ref: ref, Errors: errs}
	}
	p := &Policy{Ref: ref, Source: np}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, fmt.Errorf("NetworkPolicy %s/%s: spec.podSelector: %w", np.Namespace, np.Name, err)
	}
	p.selector = sel
	p.ingress, p.egress = policyTypes(&np.Spec)
	for i, r := range np.Spec.Ingress {
		pr, err := parseRule(np.Namespace, i, r.From, r.Ports)
		if err != nil {
			return nil, fmt.Errorf("NetworkPolicy %s/%s: spec.ingress[%d]: %w", np.Namespace, np.Name, i, err)
		}
		p.inRules = append(p.inRules, pr)
	}
	for i, r := range np.Spec.Egress {
		pr, err := parseRule(np.Namespace, i, r.To, r.Ports)
		if err != nil {
			return nil, fmt.Errorf("NetworkPolicy %s/%s: spec.egress[%d]: %w", np.Namespace, np.Name, i, err)
		}
		p.egRules = append(p.egRules, pr)
	}
	return p, nil
}

// policyTypes: the directions a policy isolates; without policyTypes,
// Ingress, plus Egress when it has egress rules (the API server's default).
func policyTypes(spec *networkingv1.NetworkPolicySpec) (ingress, egress bool) {
	if len(spec.PolicyTypes) == 0 {
		return true, len(spec.Egress) > 0
	}
	for _, t := range spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		default:
			// An unknown type: the author's intent is unknown, so both.
			return true, true
		}
	}
	return ingress, egress
}

// failClosed is what an invalid policy becomes: it isolates the pods it
// selects in the directions it declares and allows nothing. The API server
// never admits such a policy, but a folder source can hold one, and
// ignoring it would leave the pods it was written to protect fully open.
// A selector that cannot be read selects every pod of the namespace, the
// widest the author can have meant.
func failClosed(np *networkingv1.NetworkPolicy, err error) *Policy {
	p := &Policy{Ref: Ref{Namespace: np.Namespace, Name: np.Name, Kind: KindNetworkPolicy}, Source: np, Invalid: err}
	p.selector = labels.Everything()
	if sel, serr := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); serr == nil {
		p.selector = sel
	}
	p.ingress, p.egress = policyTypes(&np.Spec)
	return p
}

func parseRule(ns string, index int, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) (rule, error) {
	r := rule{index: index, anyPeer: len(peers) == 0, anyPorts: len(ports) == 0}
	for _, pp := range ports {
		proto, err := protoOf(pp.Protocol)
		if err != nil {
			return r, err
		}
		pr := portRule{proto: proto}
		if pp.Port != nil {
			if pp.Port.Type == intstr.String {
				pr.name = pp.Port.StrVal
			} else {
				pr.port = uint16(pp.Port.IntVal)
			}
		}
		if pp.EndPort != nil {
			pr.endPort = uint16(*pp.EndPort)
		}
		r.ports = append(r.ports, pr)
	}
	for _, peer := range peers {
		pr := peerRule{policy: ns}
		if peer.IPBlock != nil {
			cidr, err := parseCIDR(peer.IPBlock.CIDR)
			if err != nil {
				return r, err
			}
			b := &ipBlock{cidr: cidr}
			for _, e := range peer.IPBlock.Except {
				ex, err := parseCIDR(e)
				if err != nil {
					return r, err
				}
				b.except = append(b.except, ex)
			}
			pr.block = b
			r.peers = append(r.peers, pr)
			continue
		}
		if peer.PodSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
			if err != nil {
				return r, fmt.Errorf("podSelector: %w", err)
			}
			pr.pods = s
		}
		if peer.NamespaceSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
			if err != nil {
				return r, fmt.Errorf("namespaceSelector: %w", err)
			}
			pr.nsSel = s
		}
		r.peers = append(r.peers, pr)
	}
	return r, nil
}

// protoOf reads a protocol; unset is TCP, the API server's default (a
// policy's protocol is validated first; a pod's container port may come
// from a folder without defaults).
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

// AsInvalid returns the validation failure of err, if it is one.
func AsInvalid(err error) (*InvalidPolicyError, bool) {
	var ie *InvalidPolicyError
	ok := errors.As(err, &ie)
	return ie, ok
}

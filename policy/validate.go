package policy

import (
	"fmt"
	"net"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"
)

// Validation: the rules kube-apiserver v1.34 applies when a NetworkPolicy
// is created (ValidateNetworkPolicy in k8s.io/kubernetes/pkg/apis/networking/
// validation, which cannot be imported), rebuilt on the apimachinery
// helpers the API server itself calls. A policy the API server would admit
// passes; one it would refuse fails with the same field paths and messages.
// The cases of testdata/validation are checked against a real kube-apiserver
// in test/k8s.

// InvalidPolicyError is a NetworkPolicy that fails validation.
type InvalidPolicyError struct {
	Ref    Ref
	Errors field.ErrorList
}

func (e *InvalidPolicyError) Error() string {
	return fmt.Sprintf("NetworkPolicy %s/%s is invalid: %v", e.Ref.Namespace, e.Ref.Name, e.Errors.ToAggregate())
}

// ValidateNetworkPolicy returns every reason the API server would refuse
// to create np; nil when it would admit it. np is taken as it reaches
// validation: defaults applied only where they do not matter (a nil
// protocol is TCP, and is valid either way).
func ValidateNetworkPolicy(np *networkingv1.NetworkPolicy) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMeta(&np.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	return append(errs, validateSpec(&np.Spec, field.NewPath("spec"))...)
}

// selectorOpts: on create the API server refuses invalid label values in
// selectors (it tolerates them only in objects stored before the check).
var selectorOpts = metav1validation.LabelSelectorValidationOptions{}

func validateSpec(spec *networkingv1.NetworkPolicySpec, path *field.Path) field.ErrorList {
	errs := metav1validation.ValidateLabelSelector(&spec.PodSelector, selectorOpts, path.Child("podSelector"))
	for i, r := range spec.Ingress {
		rp := path.Child("ingress").Index(i)
		for j := range r.Ports {
			errs = append(errs, validatePort(&r.Ports[j], rp.Child("ports").Index(j))...)
		}
		for j := range r.From {
			errs = append(errs, validatePeer(&r.From[j], rp.Child("from").Index(j))...)
		}
	}
	for i, r := range spec.Egress {
		rp := path.Child("egress").Index(i)
		for j := range r.Ports {
			errs = append(errs, validatePort(&r.Ports[j], rp.Child("ports").Index(j))...)
		}
		for j := range r.To {
			errs = append(errs, validatePeer(&r.To[j], rp.Child("to").Index(j))...)
		}
	}
	types := []string{string(networkingv1.PolicyTypeIngress), string(networkingv1.PolicyTypeEgress)}
	// The API server counts policy types but does not refuse a repeated
	// one: [Ingress, Ingress] is admitted, three entries are not.
	if len(spec.PolicyTypes) > len(types) {
		return append(errs, field.Invalid(path.Child("policyTypes"), &spec.PolicyTypes, "may not specify more than two policyTypes"))
	}
	for i, t := range spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			errs = append(errs, field.NotSupported(path.Child("policyTypes").Index(i), t, types))
		}
	}
	return errs
}

func validatePort(p *networkingv1.NetworkPolicyPort, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	// Case-sensitive, as the API server: "tcp" is refused.
	if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP && *p.Protocol != corev1.ProtocolUDP && *p.Protocol != corev1.ProtocolSCTP {
		errs = append(errs, field.NotSupported(path.Child("protocol"), *p.Protocol,
			[]string{string(corev1.ProtocolTCP), string(corev1.ProtocolUDP), string(corev1.ProtocolSCTP)}))
	}
	switch {
	case p.Port == nil:
		if p.EndPort != nil {
			errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, "may not be specified when `port` is not specified"))
		}
	case p.Port.Type == intstr.Int:
		for _, msg := range validation.IsValidPortNum(int(p.Port.IntVal)) {
			errs = append(errs, field.Invalid(path.Child("port"), p.Port.IntVal, msg))
		}
		if p.EndPort != nil {
			if *p.EndPort < p.Port.IntVal {
				errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, "must be greater than or equal to `port`"))
			}
			for _, msg := range validation.IsValidPortNum(int(*p.EndPort)) {
				errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, msg))
			}
		}
	default:
		if p.EndPort != nil {
			errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, "may not be specified when `port` is non-numeric"))
		}
		for _, msg := range validation.IsValidPortName(p.Port.StrVal) {
			errs = append(errs, field.Invalid(path.Child("port"), p.Port.StrVal, msg))
		}
	}
	return errs
}

func validatePeer(p *networkingv1.NetworkPolicyPeer, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	n := 0
	if p.PodSelector != nil {
		n++
		errs = append(errs, metav1validation.ValidateLabelSelector(p.PodSelector, selectorOpts, path.Child("podSelector"))...)
	}
	if p.NamespaceSelector != nil {
		n++
		errs = append(errs, metav1validation.ValidateLabelSelector(p.NamespaceSelector, selectorOpts, path.Child("namespaceSelector"))...)
	}
	if p.IPBlock != nil {
		n++
		errs = append(errs, validateIPBlock(p.IPBlock, path.Child("ipBlock"))...)
	}
	switch {
	case n == 0:
		errs = append(errs, field.Required(path, "must specify a peer"))
	case n > 1 && p.IPBlock != nil:
		errs = append(errs, field.Forbidden(path, "may not specify both ipBlock and another peer"))
	}
	return errs
}

// strictCIDRs is the StrictIPCIDRValidation feature gate, alpha and off in
// Kubernetes 1.34: the API server admits legacy forms such as 010.0.0.0/8
// (leading zeros, read as decimal) and 10.0.0.1/8 (host bits set), so they
// are valid policies that must be enforced, not refused.
const strictCIDRs = false

func validateIPBlock(b *networkingv1.IPBlock, path *field.Path) field.ErrorList {
	if b.CIDR == "" {
		return field.ErrorList{field.Required(path.Child("cidr"), "")}
	}
	errs := validation.IsValidCIDRForLegacyField(path.Child("cidr"), b.CIDR, strictCIDRs, nil)
	_, cidr, err := netutils.ParseCIDRSloppy(b.CIDR)
	if err != nil {
		return errs // already reported
	}
	cidrBits, _ := cidr.Mask.Size()
	for i, e := range b.Except {
		ep := path.Child("except").Index(i)
		errs = append(errs, validation.IsValidCIDRForLegacyField(ep, e, strictCIDRs, nil)...)
		_, ex, err := netutils.ParseCIDRSloppy(e)
		if err != nil {
			continue
		}
		// Contains is false across families, so that case is refused too.
		exBits, _ := ex.Mask.Size()
		if !cidr.Contains(ex.IP) || cidrBits >= exBits {
			errs = append(errs, field.Invalid(ep, e, "must be a strict subset of `cidr`"))
		}
	}
	return errs
}

// parseCIDR reads a CIDR the way Kubernetes components read the legacy
// forms the API server admits: leading zeros are decimal and host bits are
// masked off. An IPv4-mapped IPv6 prefix of /96 or longer is the IPv4
// prefix it maps, as net.IPNet.Contains treats it.
func parseCIDR(s string) (netip.Prefix, error) {
	_, n, err := netutils.ParseCIDRSloppy(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr %q: %w", s, err)
	}
	return prefixOf(n)
}

func prefixOf(n *net.IPNet) (netip.Prefix, error) {
	a, ok := netip.AddrFromSlice(n.IP)
	bits, _ := n.Mask.Size()
	if !ok {
		return netip.Prefix{}, fmt.Errorf("cidr %v: bad address", n)
	}
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

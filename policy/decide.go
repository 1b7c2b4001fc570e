package policy

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/loupe-project/loupe/metadata"
)

// Deciding: would a new connection be allowed, and by which policies and
// rules (Model.Allowed). The matching helpers here serve the compiler too.

func (m *Model) selects(p *Policy, pod *corev1.Pod) bool {
	return pod.Namespace == p.Ref.Namespace && p.selector.Matches(labels.Set(pod.Labels))
}

// peerMatches reports whether a rule peer matches endpoint e.
func (m *Model) peerMatches(pr *peerRule, e Endpoint) bool {
	if pr.block != nil {
		return e.IP.IsValid() && pr.block.contains(e.IP)
	}
	if e.Pod == nil {
		return false
	}
	if pr.nsSel == nil {
		if e.Pod.Namespace != pr.policy {
			return false
		}
	} else if !pr.nsSel.Matches(m.nsLabels[e.Pod.Namespace]) {
		return false
	}
	return pr.pods == nil || pr.pods.Matches(labels.Set(e.Pod.Labels))
}

// portMatches reports whether a rule port matches port/proto on the
// destination dst (for named ports).
func portMatches(pr *portRule, dst Endpoint, port uint16, proto Proto) bool {
	if pr.proto != proto {
		return false
	}
	if pr.name != "" {
		if dst.Pod == nil {
			return false
		}
		for _, p := range namedPorts(dst.Pod, pr.name, proto) {
			if p == port {
				return true
			}
		}
		return false
	}
	if pr.port == 0 {
		return true
	}
	if pr.endPort != 0 {
		return port >= pr.port && port <= pr.endPort
	}
	return port == pr.port
}

// namedPorts resolves a port name on a pod's containers.
func namedPorts(pod *corev1.Pod, name string, proto Proto) []uint16 {
	var out []uint16
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name != name {
				continue
			}
			pp, err := protoOf(&cp.Protocol)
			if err == nil && pp == proto && cp.ContainerPort > 0 && cp.ContainerPort < 65536 {
				out = append(out, uint16(cp.ContainerPort))
			}
		}
	}
	return out
}

func (r *rule) matches(m *Model, peer, dst Endpoint, port uint16, proto Proto) bool {
	if !r.anyPorts {
		ok := false
		for i := range r.ports {
			if portMatches(&r.ports[i], dst, port, proto) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if r.anyPeer {
		return true
	}
	for i := range r.peers {
		if m.peerMatches(&r.peers[i], peer) {
			return true
		}
	}
	return false
}

// RuleRef names one rule of a policy.
type RuleRef struct {
	Policy Ref    `json:"policy"`
	Rule   string `json:"rule"` // "spec.ingress[0]"
}

// Side is the verdict of one end of a connection.
type Side struct {
	// Enforced: the pod is isolated for this direction.
	Enforced bool `json:"enforced"`
	Allowed  bool `json:"allowed"`
	// IsolatedBy: the policies selecting the pod for this direction.
	IsolatedBy []Ref `json:"isolatedBy,omitempty"`
	// AllowedBy: the rules that match the connection.
	AllowedBy []RuleRef `json:"allowedBy,omitempty"`
	// Note explains a verdict that no policy made (host, loopback, not a pod).
	Note string `json:"note,omitempty"`
}

// Decision is the model's verdict on one connection.
type Decision struct {
	Allowed bool `json:"allowed"`
	// Policies decided it: the policies whose rules allowed it, or, when
	// denied, the policies that isolate the side that denied it.
	Policies []Ref  `json:"policies,omitempty"`
	Reason   string `json:"reason"`
	Egress   Side   `json:"egress"`
	Ingress  Side   `json:"ingress"`
}

// Allowed evaluates one new connection from -> to on port/proto in snap.
func Allowed(snap *metadata.Snapshot, from, to Endpoint, port uint16, proto Proto) Decision {
	return NewModel(snap).Allowed(from, to, port, proto)
}

// Allowed evaluates one new connection from -> to on port/proto.
func (m *Model) Allowed(from, to Endpoint, port uint16, proto Proto) Decision {
	if !from.IP.IsValid() && from.Pod != nil {
		if ips := metadata.PodIPs(from.Pod); len(ips) > 0 {
			from.IP = ips[0]
		}
	}
	if !to.IP.IsValid() && to.Pod != nil {
		if ips := metadata.PodIPs(to.Pod); len(ips) > 0 {
			to.IP = ips[0]
		}
	}
	var d Decision
	if from.Pod != nil && to.Pod != nil && from.Pod.Namespace == to.Pod.Namespace && from.Pod.Name == to.Pod.Name {
		d.Allowed = true
		d.Reason = "loopback: a pod reaches itself regardless of policy"
		d.Egress = Side{Allowed: true, Note: "loopback"}
		d.Ingress = Side{Allowed: true, Note: "loopback"}
		return d
	}
	d.Egress = m.side(from, to, to, port, proto, true)
	d.Ingress = m.side(to, from, to, port, proto, false)
	d.Allowed = d.Egress.Allowed && d.Ingress.Allowed
	refs := map[Ref]bool{}
	switch {
	case d.Allowed:
		for _, s := range []Side{d.Egress, d.Ingress} {
			for _, r := range s.AllowedBy {
				refs[r.Policy] = true
			}
		}
		d.Reason = "allowed"
		var parts []string
		for _, s := range []struct {
			name string
			side Side
		}{{"egress", d.Egress}, {"ingress", d.Ingress}} {
			if s.side.Enforced {
				parts = append(parts, fmt.Sprintf("%s allowed by %s", s.name, ruleList(s.side.AllowedBy)))
			} else if s.side.Note != "" {
				parts = append(parts, s.name+": "+s.side.Note)
			} else {
				parts = append(parts, s.name+": no policy isolates "+map[bool]string{true: from.String(), false: to.String()}[s.name == "egress"])
			}
		}
		d.Reason = strings.Join(parts, "; ")
	default:
		var parts []string
		if !d.Egress.Allowed {
			for _, r := range d.Egress.IsolatedBy {
				refs[r] = true
			}
			parts = append(parts, fmt.Sprintf("egress of %s: no rule allows it: default deny from %s", from, refList(d.Egress.IsolatedBy)))
		}
		if !d.Ingress.Allowed {
			for _, r := range d.Ingress.IsolatedBy {
				refs[r] = true
			}
			parts = append(parts, fmt.Sprintf("ingress to %s: no rule allows it: default deny from %s", to, refList(d.Ingress.IsolatedBy)))
		}
		d.Reason = strings.Join(parts, "; ")
	}
	for r := range refs {
		d.Policies = append(d.Policies, r)
	}
	slices.SortFunc(d.Policies, compareRefs)
	return d
}

func refList(rs []Ref) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

func ruleList(rs []RuleRef) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.Policy.String() + " " + r.Rule
	}
	return strings.Join(s, ", ")
}

// side evaluates one end: self is the pod whose policies apply, peer the
// other end, dst the destination (for named ports).
func (m *Model) side(self, peer, dst Endpoint, port uint16, proto Proto, egress bool) Side {
	var s Side
	if self.Pod == nil {
		s.Allowed = true
		s.Note = "not a pod: no policy applies"
		return s
	}
	if peer.IP.IsValid() && peer.Pod == nil && slices.Contains(m.nodeIPs[self.Pod.Spec.NodeName], peer.IP) {
		s.Allowed = true
		s.Note = "the pod's own node: always allowed"
		return s
	}
	field := "spec.ingress"
	if egress {
		field = "spec.egress"
	}
	for _, p := range m.byNS[self.Pod.Namespace] {
		if !m.selects(p, self.Pod) {
			continue
		}
		rules := p.inRules
		if egress {
			if !p.egress {
				continue
			}
			rules = p.egRules
		} else if !p.ingress {
			continue
		}
		s.Enforced = true
		s.IsolatedBy = append(s.IsolatedBy, p.Ref)
		for i := range rules {
			if rules[i].matches(m, peer, dst, port, proto) {
				s.AllowedBy = append(s.AllowedBy, RuleRef{Policy: p.Ref, Rule: fmt.Sprintf("%s[%d]", field, rules[i].index)})
			}
		}
	}
	s.Allowed = !s.Enforced || len(s.AllowedBy) > 0
	return s
}

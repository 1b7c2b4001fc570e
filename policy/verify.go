package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/internal/yaml12"
	"github.com/loupe-project/loupe/metadata"
)

// ParsePolicies reads a YAML (or JSON) stream that must hold only
// networking.k8s.io/v1 NetworkPolicy objects, and validates each one. The
// first problem is returned, naming the document, the object and the
// field; a policy without a namespace goes to "default", as kubectl does.
// Scalars are read as YAML 1.2, so `namespace: y` is the namespace y.
func ParsePolicies(data []byte, source string) ([]*networkingv1.NetworkPolicy, error) {
	var out []*networkingv1.NetworkPolicy
	seen := map[string]int{}
	for d, err := range yaml12.Documents(data) {
		doc := d.Index + 1
		where := fmt.Sprintf("%s: document %d", source, doc)
		if err != nil {
			return nil, fmt.Errorf("%s: not YAML: %w", where, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(d.JSON, &tm); err != nil {
			return nil, fmt.Errorf("%s: read kind: %w", where, err)
		}
		if tm.Kind != "NetworkPolicy" {
			kind := tm.Kind
			if kind == "" {
				kind = "(no kind)"
			}
			return nil, fmt.Errorf("%s: kind: %s is not a NetworkPolicy", where, kind)
		}
		if tm.APIVersion != "networking.k8s.io/v1" {
			return nil, fmt.Errorf("%s: apiVersion: NetworkPolicy must be networking.k8s.io/v1, not %q", where, tm.APIVersion)
		}
		np := &networkingv1.NetworkPolicy{}
		if err := yaml.UnmarshalStrict(d.JSON, np); err != nil {
			return nil, fmt.Errorf("%s (NetworkPolicy %s/%s): %w", where, np.Namespace, np.Name, err)
		}
		if np.Namespace == "" {
			np.Namespace = "default"
		}
		if _, err := ParsePolicy(np); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		key := np.Namespace + "/" + np.Name
		if first, dup := seen[key]; dup {
			return nil, fmt.Errorf("%s: NetworkPolicy %s: also in document %d", where, key, first)
		}
		seen[key] = doc
		out = append(out, np)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no NetworkPolicy found", source)
	}
	return out, nil
}

// WithPolicies returns a copy of snap whose policies are snap's plus pols,
// a policy of pols replacing the one with the same namespace and name.
func WithPolicies(snap *metadata.Snapshot, pols []*networkingv1.NetworkPolicy) *metadata.Snapshot {
	cp := *snap
	repl := map[string]bool{}
	for _, p := range pols {
		repl[p.Namespace+"/"+p.Name] = true
	}
	cp.NetworkPolicies = nil
	for _, p := range snap.NetworkPolicies {
		if !repl[p.Namespace+"/"+p.Name] {
			cp.NetworkPolicies = append(cp.NetworkPolicies, p)
		}
	}
	cp.NetworkPolicies = append(cp.NetworkPolicies, pols...)
	return &cp
}

// Conn is a connection as verification sees it: who opened it to which
// port. Source ports are left out: every connection between the same ends
// on the same port gets the same verdict.
type Conn struct {
	Src, Dst netip.Addr
	Port     uint16
	Proto    Proto
}

// ConnCount is a distinct Conn with how often it was seen.
type ConnCount struct {
	Conn
	Connections int // distinct source ports
	Flows       int
}

// flowConn extracts the connection of a flow that is its opening
// direction (not a reply); ok is false for other flows.
func flowConn(f *flowpb.Flow) (c Conn, srcPort uint16, ok bool) {
	if f.GetIsReply().GetValue() {
		return c, 0, false
	}
	ip := f.GetIP()
	src, err1 := netip.ParseAddr(ip.GetSource())
	dst, err2 := netip.ParseAddr(ip.GetDestination())
	if err1 != nil || err2 != nil {
		return c, 0, false
	}
	c.Src, c.Dst = src.Unmap(), dst.Unmap()
	l4 := f.GetL4()
	switch {
	case l4.GetTCP() != nil:
		t := l4.GetTCP()
		// For TCP only the opening SYN counts, so a reply never starts one.
		if fl := t.GetFlags(); fl != nil && (!fl.GetSYN() || fl.GetACK()) {
			return c, 0, false
		}
		c.Proto, c.Port, srcPort = TCP, uint16(t.GetDestinationPort()), uint16(t.GetSourcePort())
	case l4.GetUDP() != nil:
		c.Proto, c.Port, srcPort = UDP, uint16(l4.GetUDP().GetDestinationPort()), uint16(l4.GetUDP().GetSourcePort())
	case l4.GetSCTP() != nil:
		c.Proto, c.Port, srcPort = SCTP, uint16(l4.GetSCTP().GetDestinationPort()), uint16(l4.GetSCTP().GetSourcePort())
	default:
		return c, 0, false
	}
	return c, srcPort, c.Port != 0
}

// Connections reduces flows to distinct connections, in first-seen order.
func Connections(flows []*flowpb.Flow) []ConnCount {
	idx := map[Conn]int{}
	ports := map[Conn]map[uint16]bool{}
	var out []ConnCount
	for _, f := range flows {
		c, sp, ok := flowConn(f)
		if !ok {
			continue
		}
		i, seen := idx[c]
		if !seen {
			i = len(out)
			idx[c] = i
			out = append(out, ConnCount{Conn: c})
			ports[c] = map[uint16]bool{}
		}
		out[i].Flows++
		if !ports[c][sp] {
			ports[c][sp] = true
			out[i].Connections++
		}
	}
	return out
}

// Change is a connection whose verdict the proposed policies change.
type Change struct {
	ConnCount
	From, To   string // pod ns/name or address
	NowAllowed bool
	// DecidedBy: the policies that now allow it, or that now isolate the
	// side that denies it.
	DecidedBy []Ref
	Before    Decision
	After     Decision
}

func (c Change) String() string {
	verb := "newly DENIED"
	if c.NowAllowed {
		verb = "newly allowed"
	}
	return fmt.Sprintf("%s %s -> %s:%d/%s (%d connections, %d flows) by %s", verb, c.From, c.To, c.Port, c.Proto,
		c.Connections, c.Flows, refList(c.DecidedBy))
}

// Verify evaluates each connection under the current policies and under
// the current plus the proposed ones, and returns those that change,
// newly denied first.
func Verify(cur *metadata.Snapshot, proposed []*networkingv1.NetworkPolicy, conns []ConnCount) []Change {
	before, after := NewModel(cur), NewModel(WithPolicies(cur, proposed))
	var out []Change
	for _, cc := range conns {
		b := before.Allowed(before.AddrEndpoint(cc.Src), before.AddrEndpoint(cc.Dst), cc.Port, cc.Proto)
		a := after.Allowed(after.AddrEndpoint(cc.Src), after.AddrEndpoint(cc.Dst), cc.Port, cc.Proto)
		if a.Allowed == b.Allowed {
			continue
		}
		out = append(out, Change{ConnCount: cc, From: after.AddrEndpoint(cc.Src).String(), To: after.AddrEndpoint(cc.Dst).String(),
			NowAllowed: a.Allowed, DecidedBy: a.Policies, Before: b, After: a})
	}
	slices.SortStableFunc(out, func(x, y Change) int {
		if x.NowAllowed != y.NowAllowed {
			if !x.NowAllowed {
				return -1
			}
			return 1
		}
		return strings.Compare(x.From+x.To, y.From+y.To)
	})
	return out
}

// Disagreement is a datapath verdict the model does not share: a loupe bug.
type Disagreement struct {
	Flow    string `json:"flow"`
	Side    string `json:"side"` // egress or ingress
	Problem string `json:"problem"`
}

// Check compares the policy verdicts the datapath reported (policy-verdict
// flows and policy drops) with the model of snap. It returns how many
// flows it checked and where they disagree. Flows from before the last
// policy change may legitimately disagree: check a window after it.
func Check(snap *metadata.Snapshot, flows []*flowpb.Flow) (int, []Disagreement) {
	m := NewModel(snap)
	checked := 0
	var out []Disagreement
	for _, f := range flows {
		verdictEvent := f.GetEventType().GetType() == contract.MessageTypePolicyVerdict && f.GetVerdict() == flowpb.Verdict_FORWARDED
		policyDrop := f.GetVerdict() == flowpb.Verdict_DROPPED && f.GetDropReasonDesc() == flowpb.DropReason_POLICY_DENIED
		if !verdictEvent && !policyDrop {
			continue
		}
		c, _, ok := flowConn(f)
		if !ok {
			// A mid-stream TCP packet without conntrack is judged as new by
			// the datapath; judge it the same way.
			c, ok = anyConn(f)
			if !ok {
				continue
			}
		}
		egress := f.GetTrafficDirection() == flowpb.TrafficDirection_EGRESS
		d := m.Allowed(m.AddrEndpoint(c.Src), m.AddrEndpoint(c.Dst), c.Port, c.Proto)
		side, name := d.Ingress, "ingress"
		if egress {
			side, name = d.Egress, "egress"
		}
		checked++
		desc := fmt.Sprintf("%s -> %s:%d/%s", m.AddrEndpoint(c.Src), m.AddrEndpoint(c.Dst), c.Port, c.Proto)
		switch {
		case !side.Enforced && side.Note == "":
			out = append(out, Disagreement{desc, name, "the datapath enforced policy but no policy isolates this side"})
		case verdictEvent && !side.Allowed:
			out = append(out, Disagreement{desc, name, "the datapath allowed it, the model denies it: " + d.Reason})
		case policyDrop && side.Allowed:
			out = append(out, Disagreement{desc, name, "the datapath dropped it, the model allows it: " + d.Reason})
		case verdictEvent && side.Enforced:
			want := refList(allowedPolicies(side.AllowedBy))
			by := f.GetEgressAllowedBy()
			if !egress {
				by = f.GetIngressAllowedBy()
			}
			var got []string
			for _, p := range by {
				got = append(got, p.GetNamespace()+"/"+p.GetName())
			}
			if len(got) > 0 && strings.Join(got, ", ") != want {
				out = append(out, Disagreement{desc, name, fmt.Sprintf("the flow names %s, the model %s", strings.Join(got, ", "), want)})
			}
		}
	}
	return checked, out
}

func allowedPolicies(rs []RuleRef) []Ref {
	var out []Ref
	for _, r := range rs {
		out = append(out, r.Policy)
	}
	slices.SortFunc(out, compareRefs)
	return slices.Compact(out)
}

// anyConn is flowConn without the opening-packet conditions.
func anyConn(f *flowpb.Flow) (Conn, bool) {
	var c Conn
	src, err1 := netip.ParseAddr(f.GetIP().GetSource())
	dst, err2 := netip.ParseAddr(f.GetIP().GetDestination())
	if err1 != nil || err2 != nil {
		return c, false
	}
	c.Src, c.Dst = src.Unmap(), dst.Unmap()
	l4 := f.GetL4()
	switch {
	case l4.GetTCP() != nil:
		c.Proto, c.Port = TCP, uint16(l4.GetTCP().GetDestinationPort())
	case l4.GetUDP() != nil:
		c.Proto, c.Port = UDP, uint16(l4.GetUDP().GetDestinationPort())
	case l4.GetSCTP() != nil:
		c.Proto, c.Port = SCTP, uint16(l4.GetSCTP().GetDestinationPort())
	default:
		return c, false
	}
	return c, true
}

package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/loupe-project/loupe/contract"
)

// validationCase is one file of testdata/validation: a NetworkPolicy and,
// in "# want:" lines, "valid" or the fields the API server refuses. The
// same files are created on a real kube-apiserver in test/k8s.
type validationCase struct {
	name string
	np   *networkingv1.NetworkPolicy
	want []string // sorted fields; nil when valid
}

func validationCases(t *testing.T) []validationCase {
	t.Helper()
	files, err := filepath.Glob("testdata/validation/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no validation cases: %v", err)
	}
	var out []validationCase
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := validationCase{name: strings.TrimSuffix(filepath.Base(f), ".yaml"), np: &networkingv1.NetworkPolicy{}}
		for _, line := range strings.Split(string(b), "\n") {
			if w, ok := strings.CutPrefix(line, "# want: "); ok && w != "valid" {
				c.want = append(c.want, w)
			}
		}
		slices.Sort(c.want)
		if err := yaml.UnmarshalStrict(b, c.np); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, c)
	}
	return out
}

func TestValidateNetworkPolicyTable(t *testing.T) {
	for _, c := range validationCases(t) {
		var got []string
		for _, e := range ValidateNetworkPolicy(c.np) {
			got = append(got, e.Field)
		}
		slices.Sort(got)
		got = slices.Compact(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: refused fields %q, want %q (%v)", c.name, got, c.want, ValidateNetworkPolicy(c.np).ToAggregate())
		}
		// ParsePolicy agrees with the validator.
		if _, err := ParsePolicy(c.np); (err == nil) != (c.want == nil) {
			t.Errorf("%s: ParsePolicy: %v", c.name, err)
		}
	}
}

// The errors read as the API server's.
func TestValidateNetworkPolicyMessages(t *testing.T) {
	cases := map[string]string{
		"invalid-except-outside":     "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`",
		"invalid-lowercase-protocol": `spec.ingress[0].ports[0].protocol: Unsupported value: "tcp": supported values: "TCP", "UDP", "SCTP"`,
		"invalid-endport-named-port": "spec.ingress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
		"invalid-empty-peer":         "spec.ingress[0].from[0]: Required value: must specify a peer",
		"invalid-name":               `metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain`,
	}
	byName := map[string]validationCase{}
	for _, c := range validationCases(t) {
		byName[c.name] = c
	}
	for name, want := range cases {
		c, ok := byName[name]
		if !ok {
			t.Fatalf("no case %s", name)
		}
		_, err := ParsePolicy(c.np)
		ie, ok := AsInvalid(err)
		if !ok || !strings.Contains(err.Error(), want) || ie.Ref.Name != c.np.Name {
			t.Errorf("%s: error %v\nwant it to contain %s", name, err, want)
		}
	}
	// Objects that only a folder can hold: no name, no namespace.
	np := &networkingv1.NetworkPolicy{}
	errs := ValidateNetworkPolicy(np)
	if s := errs.ToAggregate().Error(); !strings.Contains(s, "metadata.name: Required value") || !strings.Contains(s, "metadata.namespace: Required value") {
		t.Errorf("empty policy: %v", s)
	}
	np.Name, np.Namespace = "a", "Not_A_Label"
	if s := ValidateNetworkPolicy(np).ToAggregate(); s == nil || !strings.Contains(s.Error(), "metadata.namespace: Invalid value") {
		t.Errorf("bad namespace: %v", s)
	}
}

// A legacy CIDR the API server admits is enforced as the API server reads
// it: 010.0.0.0/8 is 10.0.0.0/8 (leading zeros are decimal), 10.0.0.1/8
// the same network.
func TestParseLegacyCIDR(t *testing.T) {
	for in, want := range map[string]string{
		"010.0.0.0/8":             "10.0.0.0/8",
		"10.0.0.1/8":              "10.0.0.0/8",
		"010.001.0.0/016":         "10.1.0.0/16",
		"2001:DB8::1/32":          "2001:db8::/32",
		"::ffff:10.0.0.0/104":     "10.0.0.0/8",
		"192.168.001.010/32":      "192.168.1.10/32",
		"2001:db8:0:0:0:0:0:0/48": "2001:db8::/48",
	} {
		got, err := parseCIDR(in)
		if err != nil || got != netip.MustParsePrefix(want) {
			t.Errorf("parseCIDR(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}

// externalVerdicts: the model's and the compiled datapath's verdict on a
// new connection from an address outside the pods to pod "to".
func externalVerdicts(t *testing.T, m *Model, from string, to string, port uint16) (model, dp bool) {
	t.Helper()
	ns, name, _ := strings.Cut(to, "/")
	dst, err := m.PodEndpoint(ns, name)
	if err != nil {
		t.Fatal(err)
	}
	src := m.AddrEndpoint(netip.MustParseAddr(from))
	model = m.Allowed(src, dst, port, TCP).Allowed
	v := compileNodes(t, m)[dst.Pod.Spec.NodeName]
	ep := v.epOf[to]
	dp = true
	if v.c.Endpoints[ep].Flags.Ingress {
		dp = Lookup(v.c.PolicyMap(), ep, IPCacheLookup(v.c.IPCache, src.IP), port, uint8(TCP), contract.DirectionIngress).Allowed
	}
	return model, dp
}

// Ran (#15): cidr 010.0.0.0/8 was ignored and x/a stayed open. The API
// server admits it, so it is enforced, as 10.0.0.0/8.
func TestLegacyCIDRPolicyEnforced(t *testing.T) {
	c := newTestCluster(t, np("x", "from-10", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - ipBlock: {cidr: 010.0.0.0/8, except: [010.200.0.0/16]}`))
	m := NewModel(c.snap)
	if len(m.Errors) != 0 {
		t.Fatalf("errors: %v", m.Errors)
	}
	for from, want := range map[string]bool{"10.100.0.1": true, "10.200.0.1": false, "192.0.2.1": false} {
		model, dp := externalVerdicts(t, m, from, "x/a", 80)
		if model != want || dp != want {
			t.Errorf("%s -> x/a: model %v, datapath %v, want %v", from, model, dp, want)
		}
	}
}

// Ran (#15): an except outside its cidr, or protocol tcp in lower case,
// made the policy ignored and the pods it selects open. Now the policy is
// reported and isolates its pods without allowing anything, in the model
// and in the compiled datapath alike.
func TestInvalidPolicyFailsClosed(t *testing.T) {
	for name, spec := range map[string]string{
		"except outside": `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - ipBlock: {cidr: 192.0.2.0/24, except: [198.51.100.0/24]}`,
		"lower-case protocol": `podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {protocol: tcp, port: 80}`,
		"bad selector": `podSelector:
  matchExpressions: [{key: pod, operator: In}]
ingress:
- {}`,
	} {
		c := newTestCluster(t, np("x", "bad", spec))
		m := NewModel(c.snap)
		if len(m.Errors) != 1 {
			t.Fatalf("%s: errors %v", name, m.Errors)
		}
		if _, ok := AsInvalid(m.Errors[0]); !ok {
			t.Errorf("%s: error %v is not an InvalidPolicyError", name, m.Errors[0])
		}
		for _, from := range []string{"192.0.2.1", "10.100.0.1"} {
			if model, dp := externalVerdicts(t, m, from, "x/a", 80); model || dp {
				t.Errorf("%s: %s -> x/a:80 model %v, datapath %v; want denied", name, from, model, dp)
			}
		}
		nodes := compileNodes(t, m)
		_, in, _, inOn := datapathVerdict(nodes, m, "y/b", "x/a", 80, TCP)
		d := m.Allowed(mustEndpoint(t, m, "y/b"), mustEndpoint(t, m, "x/a"), 80, TCP)
		if !inOn || in.Allowed || d.Allowed {
			t.Errorf("%s: y/b -> x/a:80 model %v, datapath enforced %v allowed %v; want denied", name, d.Allowed, inOn, in.Allowed)
		}
		// A pod the policy does not select stays as it was (the bad
		// selector selects the whole namespace: the widest it can mean).
		_, in, _, _ = datapathVerdict(nodes, m, "y/b", "x/b", 80, TCP)
		if want := name != "bad selector"; in.Allowed != want {
			t.Errorf("%s: y/b -> x/b:80 datapath %v, want %v", name, in.Allowed, want)
		}
	}
}

func mustEndpoint(t *testing.T, m *Model, pod string) Endpoint {
	t.Helper()
	ns, name, _ := strings.Cut(pod, "/")
	e, err := m.PodEndpoint(ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

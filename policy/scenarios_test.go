package policy

import (
	"fmt"
	"sort"
	"strings"
)

// The Kubernetes e2e netpol model: namespaces x, y, z with label ns=<name>,
// pods a, b, c with label pod=<name>, each serving 80 and 81 over TCP and
// UDP on named ports serve-<port>-<tcp|udp>. The scenarios below follow the
// cases of test/e2e/network/netpol/network_policy.go; their expectations
// are written as whole truth tables, shared by the model tests and the lab
// tests.

var (
	modelNamespaces = []string{"x", "y", "z"}
	modelPodNames   = []string{"a", "b", "c"}
	modelPorts      = []portProto{{80, "TCP"}, {80, "UDP"}, {81, "TCP"}, {81, "UDP"}}
)

type portProto struct {
	port  int
	proto string
}

func (p portProto) String() string { return fmt.Sprintf("%d/%s", p.port, p.proto) }

func modelPods() []string {
	var out []string
	for _, ns := range modelNamespaces {
		for _, p := range modelPodNames {
			out = append(out, ns+"/"+p)
		}
	}
	return out
}

// reach is a truth table: a default, then overrides applied in order (the
// last matching one wins), like the e2e suite's Reachability.
type reach struct {
	def  bool
	over []override
}

type override struct {
	from, to string // "x/a", "x/*", "*/a", "*"
	ports    string // "" every port, else "80/TCP,81/UDP" or "TCP" / "UDP" or "80" / "81"
	allowed  bool
}

func allAllowed() *reach { return &reach{def: true} }

func (r *reach) set(from, to, ports string, allowed bool) *reach {
	r.over = append(r.over, override{from, to, ports, allowed})
	return r
}

// deny / allow are shorthands for set.
func (r *reach) deny(from, to string) *reach  { return r.set(from, to, "", false) }
func (r *reach) allow(from, to string) *reach { return r.set(from, to, "", true) }

func podMatch(pattern, pod string) bool {
	if pattern == "*" {
		return true
	}
	pns, pname, _ := strings.Cut(pattern, "/")
	ns, name, _ := strings.Cut(pod, "/")
	return (pns == "*" || pns == ns) && (pname == "*" || pname == name)
}

func portMatch(pattern string, pp portProto) bool {
	if pattern == "" {
		return true
	}
	for _, p := range strings.Split(pattern, ",") {
		if p == pp.String() || p == pp.proto || p == fmt.Sprint(pp.port) {
			return true
		}
	}
	return false
}

// expected returns the table's verdict; self-traffic is always allowed.
func (r *reach) expected(from, to string, pp portProto) bool {
	if from == to {
		return true
	}
	v := r.def
	for _, o := range r.over {
		if podMatch(o.from, from) && podMatch(o.to, to) && portMatch(o.ports, pp) {
			v = o.allowed
		}
	}
	return v
}

// observed is one probed or evaluated cell.
type cell struct {
	from, to string
	pp       portProto
}

// diffTables compares every cell and renders the mismatches as e2e-style
// matrices ("." reached, "X" not, upper case where it differs).
func diffTables(r *reach, got map[cell]bool) string {
	var b strings.Builder
	pods := modelPods()
	bad := 0
	for _, pp := range modelPorts {
		var rows []string
		wrong := false
		for _, from := range pods {
			row := fmt.Sprintf("%-4s", from)
			for _, to := range pods {
				g, ok := got[cell{from, to, pp}]
				if !ok {
					row += " ?"
					continue
				}
				w := r.expected(from, to, pp)
				switch {
				case g == w && g:
					row += " ."
				case g == w:
					row += " X"
				case g:
					row += " !" // allowed, expected denied
					wrong = true
					bad++
				default:
					row += " #" // denied, expected allowed
					wrong = true
					bad++
				}
			}
			rows = append(rows, row)
		}
		if wrong {
			fmt.Fprintf(&b, "%s (! allowed but expected denied, # denied but expected allowed)\n    %s\n%s\n", pp,
				strings.Join(shortNames(pods), " "), strings.Join(rows, "\n"))
		}
	}
	if bad == 0 {
		return ""
	}
	return fmt.Sprintf("%d cells differ\n%s", bad, b.String())
}

func shortNames(pods []string) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = strings.ReplaceAll(p, "/", "")
	}
	return out
}

// scenario is one upstream-style case: policies (YAML, given pod IPs for
// ipBlock cases), optional label changes, and the expected table.
type scenario struct {
	name string
	// policies returns the NetworkPolicy documents; ip("x/b") is a pod's IP,
	// cidr16 a prefix holding every pod.
	policies func(ip func(string) string, cidr16 string) string
	// mutate: extra documents (Namespace or Pod objects) that change labels.
	mutate string
	expect *reach
}

func np(ns, name, spec string) string {
	return fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: %s\n  namespace: %q\nspec:\n%s\n---\n", name, ns, indent(spec, "  "))
}

func indent(s, pre string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pre + l
	}
	return strings.Join(lines, "\n")
}

func static(docs ...string) func(func(string) string, string) string {
	return func(func(string) string, string) string { return strings.Join(docs, "") }
}

// scenarios are the cases; each expects a whole 9x9x4 table.
var scenarios = []scenario{
	{
		name:     "no-policy-all-allowed",
		policies: static(),
		expect:   allAllowed(),
	},
	{
		name:     "default-deny-ingress",
		policies: static(np("x", "deny-ingress", "podSelector: {}")),
		expect:   allAllowed().deny("*", "x/*"),
	},
	{
		name: "default-deny-all",
		policies: static(np("x", "deny-all", `podSelector: {}
policyTypes: [Ingress, Egress]`)),
		expect: allAllowed().deny("*", "x/*").deny("x/*", "*"),
	},
	{
		name: "allow-from-pod-in-server-namespace",
		policies: static(np("x", "x-a-from-b", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}`)),
		expect: allAllowed().deny("*", "x/a").allow("x/b", "x/a"),
	},
	{
		name: "allow-ingress-for-a-target",
		policies: static(np("x", "deny-ingress", "podSelector: {}"),
			np("x", "allow-all-to-a", `podSelector: {matchLabels: {pod: a}}
ingress:
- {}`)),
		expect: allAllowed().deny("*", "x/b").deny("*", "x/c"),
	},
	{
		name: "allow-ingress-from-all-namespaces",
		policies: static(np("x", "allow-all-ns", `podSelector: {}
ingress:
- from:
  - namespaceSelector: {}`)),
		expect: allAllowed(),
	},
	{
		name: "allow-only-from-other-namespace-by-namespaceSelector",
		policies: static(np("x", "from-y", `podSelector: {}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}`)),
		expect: allAllowed().deny("*", "x/*").allow("y/*", "x/*"),
	},
	{
		name: "podSelector-matchExpressions",
		policies: static(np("x", "x-a-from-b-expr", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector:
      matchExpressions: [{key: pod, operator: In, values: [b]}]`)),
		expect: allAllowed().deny("*", "x/a").allow("x/b", "x/a"),
	},
	{
		name: "namespaceSelector-matchExpressions",
		policies: static(np("x", "x-a-from-y-expr", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: ns, operator: In, values: ["y"]}]`)),
		expect: allAllowed().deny("*", "x/a").allow("y/*", "x/a"),
	},
	{
		name: "podSelector-or-namespaceSelector",
		policies: static(np("x", "or", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: ns, operator: NotIn, values: ["x"]}]
  - podSelector: {matchLabels: {pod: b}}`)),
		expect: allAllowed().deny("x/c", "x/a"),
	},
	{
		name: "podSelector-and-namespaceSelector",
		policies: static(np("x", "and", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: ns, operator: NotIn, values: ["x"]}]
    podSelector: {matchLabels: {pod: b}}`)),
		expect: allAllowed().deny("*", "x/a").allow("y/b", "x/a").allow("z/b", "x/a"),
	},
	{
		name: "multiple-podSelectors-and-namespaceSelectors",
		policies: static(np("x", "multi", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: ns, operator: NotIn, values: ["x"]}]
    podSelector:
      matchExpressions: [{key: pod, operator: In, values: [b, c]}]`)),
		expect: allAllowed().deny("*", "x/a").allow("*/b", "x/a").allow("*/c", "x/a").deny("x/*", "x/a"),
	},
	{
		name: "any-podSelectors",
		policies: static(np("x", "any-of", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
  - podSelector: {matchLabels: {pod: c}}`)),
		expect: allAllowed().deny("*", "x/a").allow("x/b", "x/a").allow("x/c", "x/a"),
	},
	{
		name: "only-from-pod-in-other-namespace",
		policies: static(np("x", "from-y-a", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
    podSelector: {matchLabels: {pod: a}}`)),
		expect: allAllowed().deny("*", "x/a").allow("y/a", "x/a"),
	},
	{
		name: "ports",
		policies: static(np("x", "y-on-81", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: 81, protocol: TCP}`)),
		expect: allAllowed().deny("*", "x/a").set("y/*", "x/a", "81/TCP", true),
	},
	{
		name: "stacked-policies-overlapping-podSelectors",
		policies: static(np("x", "y-on-80", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: 80, protocol: TCP}`), np("x", "y-on-81", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: 81, protocol: TCP}`)),
		expect: allAllowed().deny("*", "x/a").set("y/*", "x/a", "TCP", true),
	},
	{
		name: "allow-all",
		policies: static(np("x", "allow-all", `podSelector: {}
ingress:
- {}`)),
		expect: allAllowed(),
	},
	{
		name: "ingress-one-named-port",
		policies: static(np("x", "named-81", `podSelector: {}
ingress:
- ports:
  - {port: serve-81-tcp}`)),
		expect: allAllowed().deny("*", "x/*").set("*", "x/*", "81/TCP", true),
	},
	{
		name: "ingress-from-namespace-one-named-port",
		policies: static(np("x", "y-named-80", `podSelector: {}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: serve-80-tcp, protocol: TCP}`)),
		expect: allAllowed().deny("*", "x/*").set("y/*", "x/*", "80/TCP", true),
	},
	{
		name: "egress-one-named-port",
		policies: static(np("x", "egress-named-81-udp", `podSelector: {}
policyTypes: [Egress]
egress:
- ports:
  - {port: serve-81-udp, protocol: UDP}`)),
		expect: allAllowed().deny("x/*", "*").set("x/*", "*", "81/UDP", true),
	},
	{
		name: "updated-policy-now-port-80",
		policies: static(np("x", "y-on-81", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: 80, protocol: TCP}`)),
		expect: allAllowed().deny("*", "x/a").set("y/*", "x/a", "80/TCP", true),
	},
	{
		name: "ingress-from-updated-namespace",
		policies: static(np("x", "from-updated-ns", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns2: updated}}`)),
		mutate: "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"y\"\n  labels: {ns: \"y\", ns2: updated}\n---\n",
		expect: allAllowed().deny("*", "x/a").allow("y/*", "x/a"),
	},
	{
		name: "ingress-from-updated-pod",
		policies: static(np("x", "from-updated-pod", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod2: updated}}`)),
		mutate: podDoc("x", "b", "pod: b\n    pod2: updated"),
		expect: allAllowed().deny("*", "x/a").allow("x/b", "x/a"),
	},
	{
		name: "deny-ingress-from-other-namespaces",
		policies: static(np("x", "same-ns-only", `podSelector: {}
ingress:
- from:
  - podSelector: {}`)),
		expect: allAllowed().deny("*", "x/*").allow("x/*", "x/*"),
	},
	{
		name: "deny-ingress-to-updated-pod",
		policies: static(np("x", "isolate-target", `podSelector: {matchLabels: {target: isolated}}
policyTypes: [Ingress]`)),
		mutate: podDoc("x", "a", "pod: a\n    target: isolated"),
		expect: allAllowed().deny("*", "x/a"),
	},
	{
		name: "deny-egress-by-podSelector",
		policies: static(np("x", "a-no-egress", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]`)),
		expect: allAllowed().deny("x/a", "*"),
	},
	{
		name: "deny-egress-whole-namespace",
		policies: static(np("x", "no-egress", `podSelector: {}
policyTypes: [Egress]`)),
		expect: allAllowed().deny("x/*", "*"),
	},
	{
		name: "ingress-and-egress-together",
		policies: static(np("x", "a-only-b", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress, Egress]
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
egress:
- to:
  - podSelector: {matchLabels: {pod: b}}`)),
		expect: allAllowed().deny("*", "x/a").deny("x/a", "*").allow("x/b", "x/a").allow("x/a", "x/b"),
	},
	{
		name: "client-side-egress-deny-beats-server-allow",
		policies: static(np("x", "a-to-y-a", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - namespaceSelector: {matchLabels: {ns: "y"}}
    podSelector: {matchLabels: {pod: a}}`), np("z", "from-x", `podSelector: {}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "x"}}`)),
		expect: allAllowed().deny("x/a", "*").allow("x/a", "y/a").deny("*", "z/*").allow("x/b", "z/*").allow("x/c", "z/*"),
	},
	{
		name: "egress-to-pod-in-other-namespace",
		policies: static(np("x", "a-to-y-b", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - namespaceSelector: {matchLabels: {ns: "y"}}
    podSelector: {matchLabels: {pod: b}}`)),
		expect: allAllowed().deny("x/a", "*").allow("x/a", "y/b"),
	},
	{
		name: "ingress-any-port-one-protocol",
		policies: static(np("x", "tcp-only", `podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {protocol: TCP}`)),
		expect: allAllowed().set("*", "x/a", "UDP", false),
	},
	{
		name: "ingress-allow-all-takes-precedence",
		policies: static(np("x", "only-81", `podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {port: 81}`), np("x", "allow-all-a", `podSelector: {matchLabels: {pod: a}}
ingress:
- {}`)),
		expect: allAllowed(),
	},
	{
		name: "egress-allow-all-takes-precedence",
		policies: static(np("x", "only-80", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- ports:
  - {port: 80}`), np("x", "allow-all-egress", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- {}`)),
		expect: allAllowed(),
	},
	{
		name: "egress-to-cidr-block",
		policies: func(ip func(string) string, _ string) string {
			return np("x", "a-to-yb-cidr", fmt.Sprintf(`podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: %s/32}`, ip("y/b")))
		},
		expect: allAllowed().deny("x/a", "*").allow("x/a", "y/b"),
	},
	{
		name: "egress-cidr-except",
		policies: func(ip func(string) string, cidr16 string) string {
			return np("x", "a-except-xb", fmt.Sprintf(`podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: %s, except: [%s/32]}`, cidr16, ip("x/b")))
		},
		expect: allAllowed().deny("x/a", "x/b"),
	},
	{
		name: "ip-in-cidr-and-except-allowed-by-another-policy",
		policies: func(ip func(string) string, cidr16 string) string {
			return np("x", "a-except-xb", fmt.Sprintf(`podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: %s, except: [%s/32]}`, cidr16, ip("x/b"))) +
				np("x", "a-to-xb", fmt.Sprintf(`podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: %s/32}`, ip("x/b")))
		},
		expect: allAllowed(),
	},
	{
		name: "ingress-cidr-except-on-port",
		policies: func(ip func(string) string, cidr16 string) string {
			return np("y", "b-from-cidr", fmt.Sprintf(`podSelector: {matchLabels: {pod: b}}
ingress:
- from:
  - ipBlock: {cidr: %s, except: [%s/32, %s/32]}
  ports:
  - {port: 80, protocol: TCP}
  - {port: 81, protocol: UDP}`, cidr16, ip("x/a"), ip("z/c")))
		},
		expect: allAllowed().deny("*", "y/b").set("*", "y/b", "80/TCP,81/UDP", true).deny("x/a", "y/b").deny("z/c", "y/b"),
	},
	{
		name: "ingress-and-egress-controlled-independently",
		policies: static(np("x", "a-egress-to-b", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - podSelector: {matchLabels: {pod: b}}`), np("x", "a-ingress-from-c", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress]
ingress:
- from:
  - podSelector: {matchLabels: {pod: c}}`)),
		expect: allAllowed().deny("x/a", "*").allow("x/a", "x/b").deny("*", "x/a").allow("x/c", "x/a"),
	},
	{
		name: "sctp-is-not-tcp",
		policies: static(np("x", "sctp-80", `podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {port: 80, protocol: SCTP}`)),
		expect: allAllowed().deny("*", "x/a"),
	},
	{
		name: "udp-only-policy-denies-tcp",
		policies: static(np("x", "udp-81", `podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {port: 81, protocol: UDP}`)),
		expect: allAllowed().deny("*", "x/a").set("*", "x/a", "81/UDP", true),
	},
	{
		name: "namespaceSelector-default-name-label",
		policies: static(np("x", "from-y-by-name", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}`)),
		expect: allAllowed().deny("*", "x/a").allow("y/*", "x/a"),
	},
	{
		name: "namespaceSelector-default-name-label-expressions",
		policies: static(np("x", "not-from-x-by-name", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ["x"]}]`)),
		expect: allAllowed().deny("x/*", "x/a"),
	},
	{
		name: "endPort-range",
		policies: static(np("x", "range", `podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {port: 80, endPort: 81, protocol: TCP}
  - {port: 81, endPort: 90, protocol: UDP}`)),
		expect: allAllowed().deny("*", "x/a").set("*", "x/a", "80/TCP,81/TCP,81/UDP", true),
	},
	{
		// Ranges far wider than the probed ports: 80 and 81 are outside
		// 1000-65535 and inside 1-65535.
		name: "endPort-wide-ranges",
		policies: static(np("x", "tcp-1000-up-from-b", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
  ports:
  - {port: 1000, endPort: 65535, protocol: TCP}`), np("x", "udp-all-ports", `podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {port: 1, endPort: 65535, protocol: UDP}`)),
		expect: allAllowed().deny("*", "x/a").set("*", "x/a", "UDP", true),
	},
	{
		// A peer's range (or all its ports) holds a port any peer may
		// use: both policies allow the packets of that port.
		name: "peer-range-holds-any-peer-port",
		policies: static(np("x", "tcp-all-from-y", `podSelector: {matchLabels: {pod: b}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: 1, endPort: 65535, protocol: TCP}`), np("x", "tcp-81-from-any", `podSelector: {matchLabels: {pod: b}}
ingress:
- ports:
  - {port: 81, protocol: TCP}`), np("x", "all-from-z", `podSelector: {matchLabels: {pod: c}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "z"}}`), np("x", "udp-80-from-any", `podSelector: {matchLabels: {pod: c}}
ingress:
- ports:
  - {port: 80, protocol: UDP}`)),
		expect: allAllowed().deny("*", "x/b").set("y/*", "x/b", "TCP", true).set("*", "x/b", "81/TCP", true).
			deny("*", "x/c").allow("z/*", "x/c").set("*", "x/c", "80/UDP", true),
	},
	{
		name: "egress-endPort-range-to-namespace",
		policies: static(np("y", "egress-range", `podSelector: {}
policyTypes: [Egress]
egress:
- to:
  - namespaceSelector: {matchLabels: {ns: "z"}}
  ports:
  - {port: 79, endPort: 80, protocol: UDP}`)),
		expect: allAllowed().deny("y/*", "*").set("y/*", "z/*", "80/UDP", true),
	},
	{
		name: "exists-and-notin-expressions",
		policies: static(np("y", "exists", `podSelector:
  matchExpressions: [{key: pod, operator: In, values: [a, b]}]
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: ns, operator: Exists}]
    podSelector:
      matchExpressions: [{key: pod, operator: NotIn, values: [a]}, {key: pod2, operator: DoesNotExist}]`)),
		expect: allAllowed().deny("*", "y/a").deny("*", "y/b").allow("*/b", "y/a").allow("*/c", "y/a").allow("*/b", "y/b").allow("*/c", "y/b"),
	},
	{
		name: "egress-namespace-and-ingress-isolation-elsewhere",
		policies: static(np("x", "egress-to-y", `podSelector: {}
policyTypes: [Egress]
egress:
- to:
  - namespaceSelector: {matchLabels: {ns: "y"}}`), np("y", "b-deny-ingress", `podSelector: {matchLabels: {pod: b}}
policyTypes: [Ingress]`)),
		expect: allAllowed().deny("x/*", "*").allow("x/*", "y/*").deny("*", "y/b"),
	},
	{
		name: "egress-and-ingress-ports-intersect",
		policies: static(np("x", "egress-80", `podSelector: {matchLabels: {pod: b}}
policyTypes: [Egress]
egress:
- ports:
  - {port: 80, protocol: TCP}
  - {port: 80, protocol: UDP}`), np("z", "ingress-tcp", `podSelector: {}
ingress:
- ports:
  - {protocol: TCP}`)),
		expect: allAllowed().set("x/b", "*", "81", false).set("*", "z/*", "UDP", false),
	},
}

// podDoc is a model pod with the given labels (YAML lines at 4 spaces).
func podDoc(ns, name, labels string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %q\n  labels:\n    %s\nspec:\n  containers:\n", name, ns, labels)
	for _, pp := range modelPorts {
		lp := strings.ToLower(pp.proto)
		fmt.Fprintf(&b, "  - name: cont-%d-%s\n    ports:\n    - {containerPort: %d, protocol: %s, name: serve-%d-%s}\n", pp.port, lp, pp.port, pp.proto, pp.port, lp)
	}
	b.WriteString("---\n")
	return b.String()
}

// modelYAML is the namespaces and pods of the model.
func modelYAML() string {
	var b strings.Builder
	for _, ns := range modelNamespaces {
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %q\n  labels: {ns: %q}\n---\n", ns, ns)
	}
	for _, ns := range modelNamespaces {
		for _, p := range modelPodNames {
			b.WriteString(podDoc(ns, p, "pod: "+p))
		}
	}
	return b.String()
}

// sortedCells is for stable failure output.
func sortedCells(m map[cell]bool) []cell {
	out := make([]cell, 0, len(m))
	for c := range m {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		return fmt.Sprint(out[i]) < fmt.Sprint(out[j])
	})
	return out
}

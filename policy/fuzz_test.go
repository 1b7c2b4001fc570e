package policy

import (
	"strings"
	"testing"
)

// ParsePolicies reads user files: it must never panic, and whatever it
// accepts must be valid policies a model can use.
func FuzzParsePolicies(f *testing.F) {
	for _, sc := range scenarios {
		f.Add(sc.policies(func(string) string { return "10.0.1.10" }, testCIDR16))
	}
	f.Add("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
	f.Add(np("x", "p", "podSelector: {}\ningress:\n- ports:\n  - {endPort: 90}"))
	f.Add("kind: [")
	f.Fuzz(func(t *testing.T, doc string) {
		pols, err := ParsePolicies([]byte(doc), "fuzz.yaml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, np := range pols {
			if _, err := ParsePolicy(np); err != nil {
				t.Fatalf("accepted an invalid policy: %v", err)
			}
		}
		c := newTestCluster(t, "")
		m := NewModel(WithPolicies(c.snap, pols))
		a, _ := m.PodEndpoint("x", "a")
		b, _ := m.PodEndpoint("y", "b")
		m.Allowed(a, b, 80, TCP)
		NewCompiler("node1").Compile(m, []LocalEndpoint{{ID: 1, Namespace: "x", Name: "a"}})
	})
}

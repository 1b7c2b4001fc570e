package metadata

import (
	"strings"
	"testing"

	"github.com/loupe-project/loupe/contract"
)

const sampleManifests = `# comment only document
---
apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels:
    ns: x
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: x
  labels: {pod: a}
spec:
  nodeName: node-1
  containers: [{name: c, image: i, ports: [{containerPort: 80}]}]
status:
  phase: Running
  podIP: 10.0.1.5
  podIPs: [{ip: 10.0.1.5}, {ip: "fd00::105"}]
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: x}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 53, protocol: UDP}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: x}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-abc, namespace: x}
addressType: IPv4
endpoints: [{addresses: [10.0.1.5]}]
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata:
    name: node-1
    annotations: {loupe.dev/observer-address: "192.168.200.11:4244"}
  spec: {podCIDR: 10.0.1.0/24}
  status:
    addresses: [{type: InternalIP, address: 192.168.200.11}]
`

func TestParseManifests(t *testing.T) {
	var s Snapshot
	skipped, err := ParseManifests([]byte(sampleManifests), &s)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if len(skipped) != 1 || skipped[0] != "apps/v1/Deployment" {
		t.Errorf("skipped = %v, want [apps/v1/Deployment]", skipped)
	}
	if len(s.Namespaces) != 1 || s.Namespaces[0].Labels["ns"] != "x" {
		t.Errorf("namespaces = %+v", s.Namespaces)
	}
	if len(s.Pods) != 1 || s.Pods[0].Status.PodIP != "10.0.1.5" || s.Pods[0].Spec.NodeName != "node-1" {
		t.Fatalf("pods = %+v", s.Pods)
	}
	if len(s.Services) != 1 || s.Services[0].Spec.Ports[0].Port != 53 {
		t.Errorf("services = %+v", s.Services)
	}
	if len(s.NetworkPolicies) != 1 || len(s.EndpointSlices) != 1 {
		t.Errorf("netpols = %d, slices = %d", len(s.NetworkPolicies), len(s.EndpointSlices))
	}
	if len(s.Nodes) != 1 || s.Nodes[0].Annotations[contract.ObserverAddressAnnotation] != "192.168.200.11:4244" {
		t.Errorf("nodes = %+v", s.Nodes)
	}
}

func TestParseManifestsKeepsGoodDocumentsAroundBadOnes(t *testing.T) {
	in := `apiVersion: v1
kind: Pod
metadata: {name: ok1, namespace: x}
---
apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: x}
spec: {containers: "not a list"}
---
kind: Pod
---
apiVersion: v1
kind: Pod
metadata: {namespace: x}
---
apiVersion: v1
kind: Pod
metadata: {name: ok2, namespace: x}
`
	var s Snapshot
	_, err := ParseManifests([]byte(in), &s)
	if err == nil {
		t.Fatal("want an error for the bad documents")
	}
	for _, want := range []string{"document 1", "document 2", "document 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if len(s.Pods) != 2 || s.Pods[0].Name != "ok1" || s.Pods[1].Name != "ok2" {
		t.Errorf("pods = %d, want ok1 and ok2", len(s.Pods))
	}
}

func FuzzParseManifests(f *testing.F) {
	f.Add([]byte(sampleManifests))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List, items: [{}]}]\n"))
	f.Add([]byte("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"}}"))
	f.Add([]byte("---\n---\n\x00\xff: [\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Snapshot
		_, _ = ParseManifests(data, &s)
		for _, p := range s.Pods {
			if p.Name == "" {
				t.Fatal("pod without a name accepted")
			}
			_ = PodIPs(p)
		}
		_ = NewIndex(&s)
	})
}

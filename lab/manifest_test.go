package lab

import (
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

const goodManifests = `
apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {ns: x}
---
# a comment-only document is skipped
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: x
  labels: {pod: a}
spec:
  containers:
  - name: c
    ports:
    - containerPort: 80
    - containerPort: 81
      protocol: UDP
---
apiVersion: v1
kind: Pod
metadata: {name: lonely}
spec:
  containers: [{name: c}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  clusterIP: 10.96.0.10
  selector: {pod: a}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`

func TestParseManifestsDefaults(t *testing.T) {
	objs, err := ParseManifests(strings.NewReader(goodManifests), "good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.Kind+":"+o.ID())
	}
	want := "Namespace:x Pod:x/a Pod:default/lonely Service:x/web NetworkPolicy:x/deny"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("objects = %s, want %s", got, want)
	}
	ns := objs[0].Obj.(*corev1.Namespace)
	if ns.Labels[corev1.LabelMetadataName] != "x" || ns.Labels["ns"] != "x" {
		t.Errorf("namespace labels = %v", ns.Labels)
	}
	pod := objs[1].Pod()
	if got := podPorts(pod); strings.Join(got, ",") != "80/TCP,81/UDP" {
		t.Errorf("ports = %v, want protocol defaulted to TCP", got)
	}
	if objs[2].Namespace != "default" || objs[2].Pod().Namespace != "default" {
		t.Errorf("pod without namespace went to %q", objs[2].Namespace)
	}
	if _, ok := objs[4].Obj.(*networkingv1.NetworkPolicy); !ok {
		t.Errorf("policy decoded as %T", objs[4].Obj)
	}
}

func TestParseManifestsErrors(t *testing.T) {
	pod := func(body string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n" + body
	}
	cases := []struct {
		name, doc, want string
	}{
		{"unknown kind", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\n", `unknown kind "DaemonSet"`},
		{"missing kind", "apiVersion: v1\nmetadata: {name: d}\n", "missing kind"},
		{"wrong apiVersion", "apiVersion: v2\nkind: Pod\nmetadata: {name: d}\n", `apiVersion "v1"`},
		{"pod without name", "apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\nspec: {containers: [{name: c}]}\n", "Pod without metadata.name"},
		{"port zero", pod("spec: {containers: [{name: c, ports: [{containerPort: 0}]}]}\n"), "port 0 outside 1-65535"},
		{"port too big", pod("spec: {containers: [{name: c, ports: [{containerPort: 70000}]}]}\n"), "port 70000 outside 1-65535"},
		{"negative port", pod("spec: {containers: [{name: c, ports: [{containerPort: -1}]}]}\n"), "port -1 outside 1-65535"},
		{"sctp", pod("spec: {containers: [{name: c, ports: [{containerPort: 80, protocol: SCTP}]}]}\n"), "only TCP and UDP"},
		{"bad protocol", pod("spec: {containers: [{name: c, ports: [{containerPort: 80, protocol: ICMP}]}]}\n"), `unknown protocol "ICMP"`},
		{"port twice", pod("spec: {containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 80, protocol: TCP}]}]}\n"), "80/TCP declared twice"},
		{"no containers", pod("spec: {}\n"), "spec.containers is empty"},
		{"unknown field", pod("spec: {containers: [{name: c}], bogus: 1}\n"), "bogus"},
		{"bad name", "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: c}]}\n", `name "Bad_Name"`},
		{"bad namespace", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n", `Namespace name "a.b"`},
		{"bad label", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {'a b': c}}\n", `label key "a b"`},
		{"service port", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0}]}\n", "port 0 outside"},
		{"service clusterIP", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: nope}\n", "spec.clusterIP"},
		{"policy port", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {}, ingress: [{ports: [{port: 65536}]}]}\n", "spec.ingress[0].ports[0].port: Invalid value: 65536"},
		{"policy cidr", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}\n", "ipBlock.cidr"},
		{"policy except outside", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]}\n", "spec.egress[0].to[0].ipBlock.except[0]: Invalid value: \"11.0.0.0/16\": must be a strict subset of `cidr`"},
		{"policy lower-case protocol", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {}, ingress: [{ports: [{protocol: tcp, port: 80}]}]}\n", `spec.ingress[0].ports[0].protocol: Unsupported value: "tcp"`},
		{"policy selector", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {matchExpressions: [{key: a, operator: In}]}}\n", "spec.podSelector.matchExpressions[0].values: Required value"},
		{"hostNetwork", pod("spec: {hostNetwork: true, containers: [{name: c}]}\n"), "hostNetwork"},
		{"not yaml", "kind: [\n", "document 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseManifests(strings.NewReader(c.doc), "bad.yaml")
			if err == nil {
				t.Fatalf("no error, want one containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.yaml") {
				t.Fatalf("error %q does not name the file and %q", err, c.want)
			}
		})
	}
}

func TestValidateSetDuplicates(t *testing.T) {
	doc := "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: [{name: c}]}\n"
	objs, err := ParseManifests(strings.NewReader(doc+"---\n"+doc), "dup.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = ValidateSet(objs)
	if err == nil || !strings.Contains(err.Error(), "duplicate Pod x/a") || !strings.Contains(err.Error(), "document 2") {
		t.Fatalf("err = %v, want a duplicate pod error naming both documents", err)
	}
	// Same name, other kinds or namespaces: not duplicates.
	other := "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: \"y\"}\nspec: {containers: [{name: c}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\n"
	objs, err = ParseManifests(strings.NewReader(doc+"---\n"+other), "ok.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateSet(objs); err != nil {
		t.Fatal(err)
	}
}

func TestParseList(t *testing.T) {
	doc := `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"q"}},{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"q"},"spec":{"containers":[{"name":"c"}]}}]}`
	objs, err := ParseManifests(strings.NewReader(doc), "list.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[1].ID() != "q/p" {
		t.Fatalf("objs = %+v", objs)
	}
}

func TestExamplesParse(t *testing.T) {
	for _, f := range []string{"../examples/netpol-model.yaml", "../examples/demo.yaml"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		objs, err := readManifestFiles([]string{f}, nil)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(objs) == 0 {
			t.Fatalf("%s: no objects", f)
		}
	}
	objs, _ := readManifestFiles([]string{"../examples/netpol-model.yaml"}, nil)
	pods := 0
	for _, o := range objs {
		if p := o.Pod(); p != nil {
			pods++
			if got := strings.Join(podPorts(p), ","); got != "80/TCP/serve-80-tcp,80/UDP/serve-80-udp,81/TCP/serve-81-tcp,81/UDP/serve-81-udp" {
				t.Errorf("%s ports = %s", o.ID(), got)
			}
			if p.Labels["pod"] != p.Name {
				t.Errorf("%s labels = %v", o.ID(), p.Labels)
			}
		}
	}
	namespaces := map[string]bool{}
	for _, o := range objs {
		namespaces[o.Namespace] = true
	}
	if !namespaces["x"] || !namespaces["y"] || !namespaces["z"] || len(namespaces) != 4 {
		t.Errorf("netpol model namespaces = %v", namespaces)
	}
	if pods != 9 {
		t.Errorf("netpol model has %d pods, want 9", pods)
	}
}

func TestNamesAndAddresses(t *testing.T) {
	l := &Lab{Name: "lt1234", Index: 7}
	if got := l.HostVeth(200); len(got) > 15 {
		t.Errorf("host veth name %q longer than 15 bytes", got)
	}
	if got := l.BridgeName(); got != "lt1234-br" {
		t.Errorf("bridge = %s", got)
	}
	if got := l.NodeIP(2).String(); got != "172.30.7.12" {
		t.Errorf("node ip = %s", got)
	}
	if got := l.PodCIDR(2).String(); got != "10.107.2.0/24" {
		t.Errorf("pod cidr = %s", got)
	}
	d := &Lab{Name: DefaultName}
	if got := d.PodCIDR(1).String(); got != "10.244.1.0/24" {
		t.Errorf("default pod cidr = %s", got)
	}
	if DeriveName(DefaultDir) != DefaultName || ValidName(DeriveName("/tmp/x")) != nil {
		t.Errorf("derived names: %s %s", DeriveName(DefaultDir), DeriveName("/tmp/x"))
	}
	for _, bad := range []string{"", "Loupe", "1ab", "abcdefghi", "a-b"} {
		if ValidName(bad) == nil {
			t.Errorf("ValidName(%q) = nil", bad)
		}
	}
	long := l.PodNetNS("ns", strings.Repeat("p", 250))
	if len(long) > 255 {
		t.Errorf("pod netns name is %d bytes", len(long))
	}
}

func TestParsePorts(t *testing.T) {
	ps, err := parsePorts("80/TCP,81/udp,53")
	if err != nil || len(ps) != 3 || ps[1].Proto != "UDP" || ps[2].Proto != "TCP" {
		t.Fatalf("parsePorts = %v, %v", ps, err)
	}
	for _, bad := range []string{"0/TCP", "x/TCP", "80/ICMP", "70000"} {
		if _, err := parsePorts(bad); err == nil {
			t.Errorf("parsePorts(%q) accepted", bad)
		}
	}
}

func FuzzParseManifests(f *testing.F) {
	f.Add([]byte(goodManifests))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 80}]}]}\n"))
	f.Add([]byte(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"q"}}]}`))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("kind: [\n"))
	if b, err := os.ReadFile("../examples/netpol-model.yaml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := ParseManifests(strings.NewReader(string(data)), "fuzz")
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.Name == "" || o.Obj == nil {
				t.Fatalf("accepted object without name or body: %+v", o)
			}
			if o.Kind != KindNamespace && o.Namespace == "" {
				t.Fatalf("namespaced %s without namespace", o.Kind)
			}
			if p := o.Pod(); p != nil {
				for _, s := range podPorts(p) {
					if _, err := parsePorts(s); err != nil {
						t.Fatalf("accepted pod port the server rejects: %v", err)
					}
				}
			}
		}
		_ = ValidateSet(objs)
	})
}

// The e2e model's namespace y must survive YAML: YAML 1.1 would read a bare
// y as true, in metadata and, worse, inside a policy's selectors.
func TestParseManifestsKeepsYAMLWordsAsStrings(t *testing.T) {
	doc := `apiVersion: v1
kind: Pod
metadata: {name: a, namespace: y, labels: {pod: a, on: off}}
spec: {containers: [{name: c}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: y}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: n}}}]}]
`
	objs, err := ParseManifests(strings.NewReader(doc), "words.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := objs[0].Pod()
	if p == nil || p.Namespace != "y" || p.Labels["on"] != "off" {
		t.Fatalf("pod parsed as %+v", objs[0])
	}
	np, ok := objs[1].Obj.(*networkingv1.NetworkPolicy)
	if !ok || np.Namespace != "y" || np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["ns"] != "n" {
		t.Fatalf("policy parsed as %+v", objs[1].Obj)
	}
}

// The lab admits what the API server admits: a legacy CIDR with leading
// zeros is valid in Kubernetes 1.34 (and is enforced as 10.0.0.0/8).
func TestParseManifestsAdmitsLegacyCIDR(t *testing.T) {
	doc := "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 010.0.0.0/8}}]}]}\n"
	if _, err := ParseManifests(strings.NewReader(doc), "legacy.yaml"); err != nil {
		t.Fatal(err)
	}
}

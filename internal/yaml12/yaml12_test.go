package yaml12

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestNorwayWordsStayStrings(t *testing.T) {
	j, err := ToJSON([]byte("metadata:\n  name: a\n  namespace: y\n  labels: {ns: n, on: off, 80: x}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var p corev1.Pod
	if err := yaml.UnmarshalStrict(j, &p); err != nil {
		t.Fatal(err)
	}
	if p.Namespace != "y" || p.Labels["ns"] != "n" || p.Labels["on"] != "off" || p.Labels["80"] != "x" {
		t.Fatalf("got namespace %q labels %v", p.Namespace, p.Labels)
	}
}

func FuzzToJSON(f *testing.F) {
	f.Add([]byte("a: y\nb: [1, 2.5, null, {c: d}]\n"))
	f.Add([]byte("? [a]\n: b\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ToJSON(b)
	})
}

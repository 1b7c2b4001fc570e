package lab

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func svcObj(t *testing.T, yaml string) Object {
	t.Helper()
	objs, err := ParseManifests(strings.NewReader(yaml), "test.yaml")
	if err != nil || len(objs) != 1 {
		t.Fatalf("parse: %v %d", err, len(objs))
	}
	return objs[0]
}

func TestAssignClusterIPs(t *testing.T) {
	l := &Lab{Index: 3}
	a := svcObj(t, "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {ports: [{port: 80}]}\n")
	b := svcObj(t, "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: x}\nspec: {ports: [{port: 80}]}\n")
	if err := l.assignClusterIPs([]Object{a, b}, map[string]Object{}); err != nil {
		t.Fatal(err)
	}
	ipa, ipb := a.Obj.(*corev1.Service).Spec.ClusterIP, b.Obj.(*corev1.Service).Spec.ClusterIP
	if ipa != "10.96.3.1" || ipb != "10.96.3.2" {
		t.Fatalf("ClusterIPs %s %s, want 10.96.3.1 10.96.3.2 (lab 3's Service CIDR %s)", ipa, ipb, l.ServiceCIDR())
	}
	// Applied again without one, a Service keeps its ClusterIP.
	again := svcObj(t, "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: x}\nspec: {ports: [{port: 81}]}\n")
	stored := map[string]Object{a.Key(): a, b.Key(): b}
	if err := l.assignClusterIPs([]Object{again}, stored); err != nil || again.Obj.(*corev1.Service).Spec.ClusterIP != ipb {
		t.Fatalf("re-applied: %v %s", err, again.Obj.(*corev1.Service).Spec.ClusterIP)
	}
	for _, bad := range []string{"10.96.4.9", "10.96.3.1"} {
		c := svcObj(t, "apiVersion: v1\nkind: Service\nmetadata: {name: c, namespace: x}\nspec: {clusterIP: "+bad+", ports: [{port: 80}]}\n")
		if err := l.assignClusterIPs([]Object{c}, stored); err == nil {
			t.Errorf("clusterIP %s accepted (outside the CIDR or taken)", bad)
		}
	}
}

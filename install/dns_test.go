package install

import (
	"os"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// The optional cluster DNS manifest decodes strictly, is not part of the
// default folder, reads Services only, runs unprivileged and listens on
// nothing but DNS, behind a kube-dns Service on UDP and TCP 53.
func TestClusterDNSManifest(t *testing.T) {
	b, err := os.ReadFile("kubernetes/dns/loupe-dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode("loupe-dns.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objects(t) {
		if n, ok := o.Obj.(interface{ GetName() string }); ok && (n.GetName() == "loupe-dns" || n.GetName() == "kube-dns") {
			t.Fatalf("%s is in the default folder", n.GetName())
		}
	}
	cr := find[*rbacv1.ClusterRole](objs, "loupe-dns")
	if cr == nil || !slices.Equal(grants(cr), []string{"/services:list", "/services:watch"}) {
		t.Fatalf("ClusterRole loupe-dns grants %v, want list and watch of Services only", grantsOf(cr))
	}
	crb := find[*rbacv1.ClusterRoleBinding](objs, "loupe-dns")
	if crb == nil || crb.RoleRef.Name != "loupe-dns" || len(crb.Subjects) != 1 || crb.Subjects[0].Name != "loupe-dns" || crb.Subjects[0].Namespace != "kube-system" {
		t.Fatalf("ClusterRoleBinding loupe-dns: %+v", crb)
	}
	d := find[*appsv1.Deployment](objs, "loupe-dns")
	if d == nil {
		t.Fatal("no Deployment loupe-dns")
	}
	ps := d.Spec.Template.Spec
	if ps.ServiceAccountName != "loupe-dns" || ps.HostNetwork || ps.DNSPolicy != corev1.DNSDefault {
		t.Errorf("pod spec: service account %q, hostNetwork %v, dnsPolicy %q", ps.ServiceAccountName, ps.HostNetwork, ps.DNSPolicy)
	}
	if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("pod securityContext %+v: want non-root", sc)
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("%d containers", len(ps.Containers))
	}
	c := ps.Containers[0]
	if len(c.Command) == 0 || c.Command[0] != "/usr/bin/loupe-dns" {
		t.Errorf("command %v", c.Command)
	}
	if v, ok := flagValue(c.Command, "cluster-domain"); !ok || v != "cluster.local" {
		t.Errorf("--cluster-domain %q", v)
	}
	if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("container securityContext %+v: want no escalation, read-only root, drop ALL, add nothing", sc)
	}
	for _, p := range c.Ports {
		if p.ContainerPort != 53 {
			t.Errorf("container port %+v: only DNS listens", p)
		}
	}
	s := find[*corev1.Service](objs, "kube-dns")
	if s == nil || s.Namespace != "kube-system" || s.Spec.ClusterIP != "10.96.0.10" {
		t.Fatalf("Service kube-system/kube-dns at 10.96.0.10: %+v", s)
	}
	var protos []corev1.Protocol
	for _, p := range s.Spec.Ports {
		if p.Port != 53 || p.TargetPort.IntValue() != 53 {
			t.Errorf("kube-dns port %+v", p)
		}
		protos = append(protos, p.Protocol)
	}
	if !slices.Equal(protos, []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP}) {
		t.Errorf("kube-dns protocols %v", protos)
	}
	for k, v := range s.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("kube-dns selects %v, the pods are labelled %v", s.Spec.Selector, d.Spec.Template.Labels)
		}
	}
	if d.Spec.Template.Labels["k8s-app"] != "kube-dns" {
		t.Errorf("pods labelled %v: policies allow DNS by k8s-app=kube-dns", d.Spec.Template.Labels)
	}
}

func grantsOf(cr *rbacv1.ClusterRole) []string {
	if cr == nil {
		return nil
	}
	return grants(cr)
}

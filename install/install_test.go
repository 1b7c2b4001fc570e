package install

import (
	"os"
	"path/filepath"
	"regexp"

	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	loupecerts "github.com/loupe-project/loupe/certs"
	"github.com/loupe-project/loupe/metadata/k8s"
)

func objects(t *testing.T) []Object {
	t.Helper()
	objs, err := Objects(Kubernetes, "kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatal("no manifests")
	}
	return objs
}

func find[T any](objs []Object, name string) T {
	var zero T
	for _, o := range objs {
		if v, ok := o.Obj.(T); ok {
			if n, ok := any(v).(interface{ GetName() string }); ok && n.GetName() == name {
				return v
			}
		}
	}
	return zero
}

func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\nautomountServiceAccountTokens: true\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1, targetport: 2}]}\n",
		"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\nmetadata: {name: b}\n",
		"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a}\n",
	} {
		if _, err := Decode("x.yaml", []byte(doc)); err == nil {
			t.Errorf("accepted:\n%s", doc)
		}
	}
}

// Manifests are read as YAML 1.2, like the policies and lab manifests: a
// bare y or off stays a string, a date stays its text.
func TestDecodeReadsYAML12(t *testing.T) {
	objs, err := Decode("x.yaml", []byte("# c\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: y}\ndata: {on: off, since: 2024-01-01}\n"))
	if err != nil || len(objs) != 1 {
		t.Fatalf("%d objects, %v", len(objs), err)
	}
	cm := objs[0].Obj.(*corev1.ConfigMap)
	if cm.Namespace != "y" || cm.Data["on"] != "off" || cm.Data["since"] != "2024-01-01" {
		t.Fatalf("namespace %q, data %v", cm.Namespace, cm.Data)
	}
}

// grants flattens a ClusterRole into group/resource:verb strings.
func grants(cr *rbacv1.ClusterRole) []string {
	var out []string
	for _, r := range cr.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, g+"/"+res+":"+v)
				}
			}
		}
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			out = append(out, fmt.Sprintf("unexpected rule %+v", r))
		}
	}
	slices.Sort(out)
	return out
}

func want(rs []k8s.Resource) []string {
	var out []string
	for _, r := range rs {
		for _, v := range []string{"get", "list", "watch"} {
			out = append(out, r.Group+"/"+r.Resource+":"+v)
		}
	}
	slices.Sort(out)
	return out
}

func TestRBACGrantsExactlyWhatTheInformersRead(t *testing.T) {
	objs := objects(t)
	for _, c := range []struct {
		role string
		need []k8s.Resource
	}{
		{"loupe-agent", k8s.Resources},
		{"loupe-relay", k8s.PeerResources},
	} {
		cr := find[*rbacv1.ClusterRole](objs, c.role)
		if cr == nil {
			t.Fatalf("no ClusterRole %s", c.role)
		}
		if got, w := grants(cr), want(c.need); !slices.Equal(got, w) {
			t.Errorf("ClusterRole %s grants\n  %v\nwant exactly\n  %v", c.role, got, w)
		}
		b := find[*rbacv1.ClusterRoleBinding](objs, c.role)
		if b == nil || b.RoleRef.Name != c.role || b.RoleRef.Kind != "ClusterRole" || len(b.Subjects) != 1 {
			t.Fatalf("ClusterRoleBinding %s: %+v", c.role, b)
		}
		s := b.Subjects[0]
		sa := find[*corev1.ServiceAccount](objs, s.Name)
		if s.Kind != "ServiceAccount" || sa == nil || sa.Namespace != s.Namespace {
			t.Errorf("binding %s names %s/%s, which the manifests do not create", c.role, s.Namespace, s.Name)
		}
	}
	// The certificate Job's Role: create Secrets, and read or replace only
	// its own.
	certs := find[*rbacv1.Role](objs, "loupe-certs")
	names := []string{loupecerts.CASecret, loupecerts.AgentSecret, loupecerts.RelaySecret, loupecerts.RelayClientSecret, loupecerts.ClientSecret}
	if certs == nil || len(certs.Rules) != 2 ||
		!slices.Equal(certs.Rules[0].Verbs, []string{"create"}) || !slices.Equal(certs.Rules[0].Resources, []string{"secrets"}) || len(certs.Rules[0].ResourceNames) != 0 ||
		!slices.Equal(certs.Rules[1].Verbs, []string{"get", "update"}) || !slices.Equal(certs.Rules[1].Resources, []string{"secrets"}) || !slices.Equal(certs.Rules[1].ResourceNames, names) {
		t.Errorf("Role loupe-certs %+v, want create secrets, and get/update on exactly %v", certs, names)
	}
	// No other Role or ClusterRole: nothing else is granted.
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *rbacv1.Role:
			if v.Name != "loupe-certs" {
				t.Errorf("%s: unexpected Role %s", o.File, v.Name)
			}
		case *rbacv1.RoleBinding:
			if v.Name != "loupe-certs" || v.RoleRef.Name != "loupe-certs" || len(v.Subjects) != 1 || v.Subjects[0].Name != "loupe-certs" {
				t.Errorf("%s: unexpected RoleBinding %+v", o.File, v)
			}
		case *rbacv1.ClusterRole:
			if v.Name != "loupe-agent" && v.Name != "loupe-relay" {
				t.Errorf("%s: unexpected ClusterRole %s", o.File, v.Name)
			}
		}
	}
}

func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func mountPaths(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, vm := range c.VolumeMounts {
		m[vm.MountPath] = vm.Name
	}
	return m
}

func TestAgentDaemonSet(t *testing.T) {
	objs := objects(t)
	ds := find[*appsv1.DaemonSet](objs, "loupe-agent")
	if ds == nil {
		t.Fatal("no loupe-agent DaemonSet")
	}
	ps := ds.Spec.Template.Spec
	if !ps.HostNetwork || ps.ServiceAccountName != "loupe-agent" {
		t.Errorf("hostNetwork %v, serviceAccount %q", ps.HostNetwork, ps.ServiceAccountName)
	}
	if !slices.ContainsFunc(ps.Tolerations, func(t corev1.Toleration) bool { return t.Operator == corev1.TolerationOpExists && t.Key == "" }) {
		t.Error("the agent must tolerate every taint: nodes are not ready before their CNI")
	}
	hostPaths := map[string]string{}
	for _, v := range ps.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	if len(ps.InitContainers) != 1 {
		t.Fatalf("%d init containers", len(ps.InitContainers))
	}
	ic := ps.InitContainers[0]
	if !slices.Contains(ic.Command, "install-cni") {
		t.Errorf("init container does not run install-cni: %v", ic.Command)
	}
	im := mountPaths(ic)
	for flag, host := range map[string]string{"cni-bin-dir": "/opt/cni/bin", "cni-conf-dir": "/etc/cni/net.d"} {
		p, ok := flagValue(ic.Command, flag)
		if !ok || hostPaths[im[p]] != host {
			t.Errorf("install-cni --%s=%q is not the node's %s (mounts %v)", flag, p, host, im)
		}
	}
	sock, _ := flagValue(ic.Command, "agent-socket")

	if len(ps.Containers) != 1 {
		t.Fatalf("%d containers", len(ps.Containers))
	}
	c := ps.Containers[0]
	// Least privilege: not privileged, every capability dropped but the
	// ones the README's "Capabilities" table lists with their reasons.
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("agent securityContext %+v: want privileged false, no privilege escalation, drop ALL", sc)
	}
	readme, err := os.ReadFile("kubernetes/README.md")
	if err != nil {
		t.Fatal(err)
	}
	var added []string
	for _, c := range sc.Capabilities.Add {
		added = append(added, string(c))
		if !regexp.MustCompile("(?m)^\\| `CAP_" + string(c) + "` \\| .{20,}").Match(readme) {
			t.Errorf("capability %s is not in install/kubernetes/README.md's table with its reason", c)
		}
	}
	if want := []string{"BPF", "PERFMON", "NET_ADMIN"}; !slices.Equal(added, want) {
		t.Errorf("agent adds capabilities %v, want %v", added, want)
	}
	if ics := ic.SecurityContext; ics == nil || ics.Privileged != nil && *ics.Privileged || ics.Capabilities == nil || !slices.Equal(ics.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(ics.Capabilities.Add) != 0 {
		t.Errorf("install-cni securityContext %+v: it copies files as root and needs no capability", ics)
	}
	// The Observer API's TCP listener is mTLS with the loupe-certs Secret.
	secretMounts := map[string]string{}
	for _, v := range ps.Volumes {
		if v.Secret != nil {
			secretMounts[v.Name] = v.Secret.SecretName
		}
	}
	for _, f := range []string{"tls-cert-file", "tls-key-file", "tls-client-ca-file"} {
		p, _ := flagValue(c.Command, f)
		if secretMounts[mountPaths(c)[filepath.Dir(p)]] != loupecerts.AgentSecret {
			t.Errorf("--%s=%q is not in the %s Secret", f, p, loupecerts.AgentSecret)
		}
	}
	m := mountPaths(c)
	if hostPaths[m["/sys/fs/bpf"]] != "/sys/fs/bpf" {
		t.Errorf("bpffs not mounted: %v", m)
	}
	if bpfRoot, _ := flagValue(c.Command, "bpf-root"); !strings.HasPrefix(bpfRoot, "/sys/fs/bpf/") {
		t.Errorf("--bpf-root %q is not on the node's bpffs", bpfRoot)
	}
	// loupe-cni runs on the node and must find the agent's socket there.
	agentSock, _ := flagValue(c.Command, "socket")
	if agentSock != sock || hostPaths[m["/run/loupe"]] != "/run/loupe" || !strings.HasPrefix(sock, "/run/loupe/") {
		t.Errorf("agent --socket %q, conflist agentSocket %q, /run/loupe from the node: %q", agentSock, sock, hostPaths[m["/run/loupe"]])
	}
	if sd, _ := flagValue(c.Command, "state-dir"); !strings.HasPrefix(sd, "/run/loupe/") {
		t.Errorf("--state-dir %q does not survive a container restart", sd)
	}
	ml, _ := flagValue(c.Command, "metrics-listen")
	_, port, _ := strings.Cut(ml, ":")
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port != intstr.Parse(port) {
			t.Errorf("%s probe %+v, want GET %s on --metrics-listen port %s", name, p, want, port)
		}
	}
	if l, _ := flagValue(c.Command, "listen"); l != ":4244" {
		t.Errorf("--listen %q: the relay dials each node's InternalIP on 4244", l)
	}
	if !slices.Contains(c.Command, "--node-name=$(NODE_NAME)") || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Error("the node name does not come from spec.nodeName")
	}
}

func TestServices(t *testing.T) {
	objs := objects(t)
	for _, c := range []struct {
		name     string
		port     int32
		headless bool
		selects  string
	}{
		{"loupe-relay", 4245, false, "loupe-relay"},
		{"loupe-ui", 12000, false, "loupe-relay"},
		{"loupe-agent-peers", 4244, true, "loupe-agent"},
	} {
		s := find[*corev1.Service](objs, c.name)
		if s == nil {
			t.Errorf("no Service %s", c.name)
			continue
		}
		if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != c.port {
			t.Errorf("%s ports %+v", c.name, s.Spec.Ports)
		}
		if (s.Spec.ClusterIP == corev1.ClusterIPNone) != c.headless {
			t.Errorf("%s clusterIP %q", c.name, s.Spec.ClusterIP)
		}
		if s.Spec.Selector["app.kubernetes.io/name"] != c.selects {
			t.Errorf("%s selects %v", c.name, s.Spec.Selector)
		}
	}
	d := find[*appsv1.Deployment](objs, "loupe-relay")
	if d == nil {
		t.Fatal("no relay Deployment")
	}
	if d.Spec.Template.Spec.ServiceAccountName != "loupe-relay" || d.Spec.Template.Labels["app.kubernetes.io/name"] != "loupe-relay" {
		t.Error("relay Deployment: service account or labels")
	}
}

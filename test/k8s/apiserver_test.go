package k8s

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/loupe-project/loupe/clusterdns"
	"github.com/loupe-project/loupe/install"
	"github.com/loupe-project/loupe/internal/testtools"
	"github.com/loupe-project/loupe/metadata/k8s"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type keyPair struct{ cert, key string }

// writePKI makes a CA, a serving certificate for 127.0.0.1, a
// system:masters client certificate and a service-account key.
func writePKI(t *testing.T, dir string) (ca, serving, admin keyPair, saKey string) {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "loupe-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	ca = keyPair{write("ca.crt", "CERTIFICATE", caDER), write("ca.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(caKey))}
	issue := func(name string, serial int64, tmpl *x509.Certificate) keyPair {
		k := newKey()
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return keyPair{write(name+".crt", "CERTIFICATE", der), write(name+".key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k))}
	}
	serving = issue("apiserver", 2, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	admin = issue("admin", 3, &x509.Certificate{Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	saKey = write("sa.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(newKey()))
	return ca, serving, admin, saKey
}

func startProc(t *testing.T, logf string, name string, args ...string) {
	t.Helper()
	lf, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		lf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf)
			lines := strings.Split(string(b), "\n")
			if len(lines) > 30 {
				lines = lines[len(lines)-30:]
			}
			t.Logf("--- %s\n%s", filepath.Base(logf), strings.Join(lines, "\n"))
		}
	})
}

// TestRealAPIServerMetadataWithInstallRBAC runs etcd and the real
// kube-apiserver on loopback, applies install/'s RBAC, and reads the
// cluster with the agent's, the relay's and loupe-dns's service-account
// tokens: the ClusterRoles are enough for every informer, and no more.
func TestRealAPIServerMetadataWithInstallRBAC(t *testing.T) {
	base, cs := startAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// install/'s ServiceAccounts and RBAC, as kubectl apply would create them.
	objs, err := install.Objects(install.Kubernetes, "kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	createRBAC(ctx, t, cs, objs)
	client := func(sa string) kubernetes.Interface {
		tr, err := cs.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := rest.CopyConfig(base)
		cfg.BearerToken = tr.Status.Token
		c, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// Objects for the agent to see.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.3.0/24", PodCIDRs: []string{"10.244.3.0/24"}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	node, _ = cs.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.50.1"}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	agentClient := client("loupe-agent")
	cidrs, err := k8s.NodePodCIDRs(ctx, agentClient, "n1")
	if err != nil || len(cidrs) != 1 || cidrs[0].String() != "10.244.3.0/24" {
		t.Fatalf("pod CIDR with the agent's token: %v %v", cidrs, err)
	}
	src, err := k8s.New(ctx, agentClient, k8s.Options{SyncTimeout: time.Minute})
	if err != nil {
		t.Fatalf("informers with the agent's RBAC: %v", err)
	}
	sig := src.Subscribe(ctx)
	pol := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deny"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := cs.NetworkingV1().NetworkPolicies("shop").Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := poll(30*time.Second, func() error {
		for _, p := range src.Current().NetworkPolicies {
			if p.Namespace == "shop" && p.Name == "deny" {
				return nil
			}
		}
		return fmt.Errorf("policy not seen")
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sig:
	default:
		t.Error("no change signal for the new policy")
	}
	s := src.Current()
	if !slices.ContainsFunc(s.Namespaces, func(n *corev1.Namespace) bool { return n.Name == "shop" }) ||
		!slices.ContainsFunc(s.Nodes, func(n *corev1.Node) bool { return n.Name == "n1" }) ||
		!slices.ContainsFunc(s.Services, func(s *corev1.Service) bool { return s.Name == "kubernetes" }) {
		t.Errorf("snapshot misses objects: %d namespaces, %d nodes, %d services", len(s.Namespaces), len(s.Nodes), len(s.Services))
	}
	// Least privilege: nothing beyond what the informers read.
	if _, err := agentClient.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent may list secrets: %v", err)
	}
	if err := agentClient.CoreV1().Pods("shop").Delete(ctx, "x", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent may delete pods: %v", err)
	}

	// The relay's token lists Nodes for peer discovery, and nothing else.
	relayClient := client("loupe-relay")
	sink := &recordSink{peers: map[string]string{}}
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- (&k8s.NodePeers{Client: relayClient}).Run(pctx, sink) }()
	if err := poll(30*time.Second, func() error {
		if got := sink.get("n1"); got != "192.168.50.1:4244" {
			return fmt.Errorf("peer n1 = %q", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := relayClient.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the relay may list pods: %v", err)
	}

	clusterDNSWithInstallRBAC(ctx, t, cs, client)
}

// clusterDNSWithInstallRBAC: loupe-dns, with the token of the RBAC in
// install/kubernetes/dns/, answers for the Services of a real API server,
// including one created after it started, and may do nothing else.
func clusterDNSWithInstallRBAC(ctx context.Context, t *testing.T, cs kubernetes.Interface, client func(string) kubernetes.Interface) {
	b, err := os.ReadFile(filepath.Join(dnsDir, "loupe-dns.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := install.Decode("loupe-dns.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	createRBAC(ctx, t, cs, objs)
	dnsClient := client("loupe-dns")
	lister, err := clusterdns.WatchServices(ctx, dnsClient)
	if err != nil {
		t.Fatalf("the Services informer with loupe-dns's RBAC: %v", err)
	}
	zone, err := clusterdns.NewServices("cluster.local", lister)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(name string) (dnsmessage.RCode, []string) {
		q, err := (&dnsmessage.Message{Header: dnsmessage.Header{ID: 1},
			Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}).Pack()
		if err != nil {
			t.Fatal(err)
		}
		var m dnsmessage.Message
		if err := m.Unpack(clusterdns.Answer(zone, q)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var ips []string
		for _, a := range m.Answers {
			if r, ok := a.Body.(*dnsmessage.AResource); ok {
				ips = append(ips, netip.AddrFrom4(r.A).String())
			}
		}
		return m.RCode, ips
	}
	k, err := cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rc, ips := ask("kubernetes.default.svc.cluster.local."); rc != dnsmessage.RCodeSuccess || !slices.Equal(ips, []string{k.Spec.ClusterIP}) {
		t.Errorf("kubernetes.default: %v %v, want %s", rc, ips, k.Spec.ClusterIP)
	}
	if rc, _ := ask("web.shop.svc.cluster.local."); rc != dnsmessage.RCodeNameError {
		t.Errorf("web.shop before it exists: %v", rc)
	}
	web, err := cs.CoreV1().Services("shop").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := poll(30*time.Second, func() error {
		if rc, ips := ask("web.shop.svc.cluster.local."); rc != dnsmessage.RCodeSuccess || !slices.Equal(ips, []string{web.Spec.ClusterIP}) {
			return fmt.Errorf("web.shop: %v %v, want %s", rc, ips, web.Spec.ClusterIP)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := dnsClient.CoreV1().Services("shop").Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("loupe-dns may get a Service: %v", err)
	}
	if _, err := dnsClient.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("loupe-dns may list pods: %v", err)
	}
}

// createRBAC creates the ServiceAccounts and RBAC among objs, as kubectl
// apply would.
func createRBAC(ctx context.Context, t *testing.T, cs kubernetes.Interface, objs []install.Object) {
	t.Helper()
	for _, o := range objs {
		var err error
		switch v := o.Obj.(type) {
		case *corev1.ServiceAccount:
			_, err = cs.CoreV1().ServiceAccounts(v.Namespace).Create(ctx, v, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, v, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, v, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatalf("%s: %v", o.File, err)
		}
	}
}

type recordSink struct {
	mu    sync.Mutex
	peers map[string]string
}

func (s *recordSink) Upsert(key, _, address, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peers[key] = address
	return nil
}

func (s *recordSink) Remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.peers, key)
}

func (s *recordSink) get(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peers[key]
}

// startAPIServer runs etcd and the real kube-apiserver on loopback and
// returns, once it is ready, a config that trusts its CA (no credentials)
// and an admin client.
func startAPIServer(t *testing.T) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	apiserver := testtools.Kubernetes(t, "kube-apiserver")
	etcd := testtools.OnPath(t, "etcd", "etcd-server")
	dir := t.TempDir()
	ca, serving, admin, saKey := writePKI(t, dir)
	ep, pp, ap := freePort(t), freePort(t), freePort(t)
	startProc(t, filepath.Join(dir, "etcd.log"), etcd, "--name", "t", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", ep), "--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", ep),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", pp), "--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", pp),
		"--initial-cluster", fmt.Sprintf("t=http://127.0.0.1:%d", pp))
	startProc(t, filepath.Join(dir, "apiserver.log"), apiserver, fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", ep),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ap), "--advertise-address=127.0.0.1",
		"--tls-cert-file="+serving.cert, "--tls-private-key-file="+serving.key, "--client-ca-file="+ca.cert,
		"--service-account-key-file="+saKey, "--service-account-signing-key-file="+saKey,
		"--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC", "--cert-dir="+filepath.Join(dir, "certs"))

	base := &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", ap), TLSClientConfig: rest.TLSClientConfig{CAFile: ca.cert}}
	adminCfg := rest.CopyConfig(base)
	adminCfg.CertFile, adminCfg.KeyFile = admin.cert, admin.key
	cs, err := kubernetes.NewForConfig(adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := poll(90*time.Second, func() error {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		t.Fatalf("the API server did not get ready: %v", err)
	}
	return base, cs
}

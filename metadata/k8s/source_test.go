package k8s

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/metadata"
)

// newFake returns a fake clientset holding objs and a function that waits
// until n watches are open: the fake API does not replay events sent
// between an informer's list and its watch, so tests change objects only
// once every informer watches.
func newFake(t *testing.T, objs ...runtime.Object) (*fake.Clientset, func(n int)) {
	t.Helper()
	c := fake.NewClientset(objs...)
	var watches atomic.Int32
	c.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		gvr := a.GetResource()
		w, err := c.Tracker().Watch(gvr, a.GetNamespace())
		if err != nil {
			return false, nil, err
		}
		watches.Add(1)
		return true, w, nil
	})
	return c, func(n int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d watches", n), func() bool { return int(watches.Load()) >= n })
	}
}

// waitFor polls cond; the deadline only bounds a broken test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func pod(ns, name, ip, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec:   corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, Phase: corev1.PodRunning},
	}
}

func names[T interface {
	GetNamespace() string
	GetName() string
}](objs []T) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetNamespace()+"/"+o.GetName())
	}
	return out
}

func cluster() []runtime.Object {
	return []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"}}},
		pod("shop", "web-2", "10.1.0.12", "n1"),
		pod("shop", "web-1", "10.1.0.11", "n1"),
		pod("default", "db", "10.1.1.5", "n2"),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Port: 80}}}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-abc",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}, AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.11"}}}},
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deny"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "10.1.0.0/24"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.1.1"}}}},
	}
}

func TestInitialSnapshotHasEveryKindSorted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, _ := newFake(t, cluster()...)
	src, err := New(ctx, c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := src.Current()
	if s.Generation != "1" {
		t.Errorf("generation %q, want 1", s.Generation)
	}
	checks := []struct {
		kind string
		got  []string
		want []string
	}{
		{"namespaces", names(s.Namespaces), []string{"/default", "/shop"}},
		{"pods", names(s.Pods), []string{"default/db", "shop/web-1", "shop/web-2"}},
		{"services", names(s.Services), []string{"shop/web"}},
		{"endpointslices", names(s.EndpointSlices), []string{"shop/web-abc"}},
		{"networkpolicies", names(s.NetworkPolicies), []string{"shop/deny"}},
		{"nodes", names(s.Nodes), []string{"/n1"}},
	}
	for _, c := range checks {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.kind, c.got, c.want)
		}
	}
	for _, p := range s.Pods {
		if p.ManagedFields != nil {
			t.Errorf("pod %s kept its managed fields", p.Name)
		}
	}
	// The snapshot feeds the same index the folder source does.
	ix := metadata.NewIndex(s)
	if p := ix.PodByIP(netip.MustParseAddr("10.1.0.12")); p == nil || p.Name != "web-2" {
		t.Errorf("index: pod by IP = %v", p)
	}
}

func TestChangesArePublishedAndSignalled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, watching := newFake(t, cluster()...)
	src, err := New(ctx, c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	watching(6)
	sig := src.Subscribe(ctx)
	gen0, _ := strconv.Atoi(src.Current().Generation)

	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "allow-web"}}
	if _, err := c.NetworkingV1().NetworkPolicies("default").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	<-sig
	waitFor(t, "the new policy", func() bool { return len(src.Current().NetworkPolicies) == 2 })
	gen1, _ := strconv.Atoi(src.Current().Generation)
	if gen1 <= gen0 {
		t.Errorf("generation went from %d to %d", gen0, gen1)
	}

	if err := c.CoreV1().Pods("shop").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pod to go", func() bool {
		return slices.Equal(names(src.Current().Pods), []string{"default/db", "shop/web-2"})
	})

	// An update with a new resourceVersion is a change.
	n, err := c.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n = n.DeepCopy()
	n.ResourceVersion = "77"
	n.Annotations = map[string]string{contract.ObserverAddressAnnotation: "192.168.1.1:4244"}
	if _, err := c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node annotation", func() bool {
		ns := src.Current().Nodes
		return len(ns) == 1 && ns[0].Annotations[contract.ObserverAddressAnnotation] != ""
	})
}

func TestBurstIsCoalescedIntoOnePendingSignal(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, watching := newFake(t)
	src, err := New(ctx, c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	watching(6)
	sig := src.Subscribe(ctx)
	const n = 40
	for i := range n {
		p := pod("burst", fmt.Sprintf("p%02d", i), fmt.Sprintf("10.2.0.%d", i+1), "n1")
		if _, err := c.CoreV1().Pods("burst").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every pod", func() bool { return len(src.Current().Pods) == n })
	// Nobody read the channel: however many snapshots were published,
	// exactly one signal waits.
	if got := len(sig); got != 1 {
		t.Fatalf("%d pending signals, want 1", got)
	}
	<-sig
	select {
	case <-sig:
		t.Fatal("a second signal without a change")
	default:
	}
}

func TestSubscribeClosesWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, _ := newFake(t)
	src, err := New(ctx, c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(ctx)
	sig := src.Subscribe(sctx)
	scancel()
	for range sig { // drains a pending signal, then ends when closed
	}
}

func TestInitialSyncFailureIsReported(t *testing.T) {
	c := fake.NewClientset()
	c.PrependReactor("list", "networkpolicies", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("forbidden: no RBAC for networkpolicies")
	})
	_, err := New(context.Background(), c, Options{SyncTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "networkpolicies") {
		t.Fatalf("New without being able to list network policies: %v", err)
	}
}

func TestNodePodCIDRs(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "single"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.0.0/24"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "dual"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24",
			PodCIDRs: []string{"10.244.1.0/24", "fd00:1::/64"}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "none"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0"}},
	)
	got, err := NodePodCIDRs(ctx, c, "single")
	if err != nil || !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}) {
		t.Errorf("single: %v %v", got, err)
	}
	got, err = NodePodCIDRs(ctx, c, "dual")
	if err != nil || !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:1::/64")}) {
		t.Errorf("dual: %v %v", got, err)
	}
	for _, n := range []string{"none", "bad", "missing"} {
		if _, err := NodePodCIDRs(ctx, c, n); err == nil {
			t.Errorf("%s: no error", n)
		}
	}
}

func TestConfigFromKubeconfigOrNothing(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := Config("", "x"); !errors.Is(err, ErrNoCluster) {
		t.Fatalf("no kubeconfig, not in cluster: %v", err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: abc}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Config(kc, "loupe-agent/test")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || cfg.BearerToken != "abc" || cfg.UserAgent != "loupe-agent/test" {
		t.Errorf("config: host %q token %q ua %q", cfg.Host, cfg.BearerToken, cfg.UserAgent)
	}
	if _, err := Config(filepath.Join(t.TempDir(), "missing"), ""); err == nil {
		t.Error("a missing kubeconfig was accepted")
	}
}

// peerSink records what a PeerSource tells the relay's pool.
type peerSink struct {
	mu    sync.Mutex
	peers map[string]string // key -> name|address|servername
}

func (s *peerSink) Upsert(key, name, address, sn string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peers[key] = name + "|" + address + "|" + sn
	return nil
}

func (s *peerSink) Remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.peers, key)
}

func (s *peerSink) get() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps(s.peers)
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestNodePeersFollowTheNodeList(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node := func(name, ip, ann string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if ip != "" {
			n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name},
				{Type: corev1.NodeInternalIP, Address: ip}}
		}
		if ann != "" {
			n.Annotations = map[string]string{contract.ObserverAddressAnnotation: ann}
		}
		return n
	}
	c, watching := newFake(t, node("a", "192.168.1.1", ""), node("b", "192.168.1.2", "192.168.9.2:5000"), node("c", "", ""))
	sink := &peerSink{peers: map[string]string{}}
	np := &NodePeers{Client: c, TLSServerName: func(n string) string { return n + ".tls" }}
	done := make(chan error, 1)
	go func() { done <- np.Run(ctx, sink) }()
	want := map[string]string{"a": "a|192.168.1.1:4244|a.tls", "b": "b|192.168.9.2:5000|b.tls"}
	waitFor(t, "the initial peers", func() bool { return equalMaps(sink.get(), want) })
	watching(1)

	if _, err := c.CoreV1().Nodes().Create(ctx, node("d", "fd00::4", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().Nodes().Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want = map[string]string{"b": "b|192.168.9.2:5000|b.tls", "d": "d|[fd00::4]:4244|d.tls"}
	waitFor(t, "d added and a removed", func() bool { return equalMaps(sink.get(), want) })

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

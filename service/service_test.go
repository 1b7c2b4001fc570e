package service

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

func pod(name, ip string, ready bool, lbl string, ports ...corev1.ContainerPort) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": lbl}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status: corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func webService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"}, ClusterIP: "10.96.0.10",
			SessionAffinity: corev1.ServiceAffinityClientIP,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(5353)},
			},
		},
	}
}

// TestFrontendsFromSelectors derives EndpointSlices as the endpoints
// controller does (named targetPorts per pod, readiness, terminating) and
// turns them into frontends.
func TestFrontendsFromSelectors(t *testing.T) {
	svc := webService()
	gone := pod("web3", "10.0.0.5", true, "web", corev1.ContainerPort{Name: "http", ContainerPort: 8080})
	now := metav1.Now()
	gone.DeletionTimestamp = &now
	pods := []*corev1.Pod{
		pod("web1", "10.0.0.3", true, "web", corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
		pod("web2", "10.0.0.4", true, "web", corev1.ContainerPort{Name: "http", ContainerPort: 9090}),
		pod("notready", "10.0.0.6", false, "web", corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
		pod("other", "10.0.0.7", true, "db", corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
		gone,
	}
	snap := &metadata.Snapshot{Services: []*corev1.Service{svc}, EndpointSlices: EndpointSlicesFor(svc, pods)}
	fs := Frontends(snap)
	if len(fs) != 2 {
		t.Fatalf("%d frontends, want 2: %+v", len(fs), fs)
	}
	byPort := map[uint16]Frontend{}
	for _, f := range fs {
		byPort[f.Frontend.Port] = f
	}
	b := func(ip string, port uint16, term bool) datapath.Backend {
		return datapath.Backend{Addr: netip.MustParseAddr(ip), Port: port, Terminating: term}
	}
	http := byPort[80]
	want := []datapath.Backend{b("10.0.0.3", 8080, false), b("10.0.0.4", 9090, false), b("10.0.0.5", 8080, true)}
	if http.Ref != (Ref{"ns", "web", "http"}) || http.Frontend.Proto != 6 || http.Affinity != DefaultAffinityTimeout || !slices.Equal(http.Backends, want) {
		t.Fatalf("http frontend %+v, want backends %v", http, want)
	}
	dns := byPort[53]
	want = []datapath.Backend{b("10.0.0.3", 5353, false), b("10.0.0.4", 5353, false), b("10.0.0.5", 5353, true)}
	if dns.Frontend.Proto != 17 || !slices.Equal(dns.Backends, want) {
		t.Fatalf("dns frontend %+v, want backends %v", dns, want)
	}
}

type fakeWriter struct {
	set     map[uint32]datapath.ServiceFrontend
	writes  int
	deletes int
	synced  int
}

func (f *fakeWriter) Set(id uint32, sf datapath.ServiceFrontend) error {
	f.set[id] = sf
	f.writes++
	return nil
}
func (f *fakeWriter) Delete(id uint32) error { delete(f.set, id); f.deletes++; return nil }
func (f *fakeWriter) Sync() error            { f.synced++; return nil }
func (f *fakeWriter) Installed() (map[datapath.Frontend]uint32, error) {
	return map[datapath.Frontend]uint32{{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: 6}: 7}, nil
}

// TestSyncerIncremental writes only the frontends that changed, keeps the
// ids a previous agent installed, and names ids for the observer.
func TestSyncerIncremental(t *testing.T) {
	w := &fakeWriter{set: map[uint32]datapath.ServiceFrontend{}}
	s, err := NewSyncer(w)
	if err != nil {
		t.Fatal(err)
	}
	svc := webService()
	pods := []*corev1.Pod{pod("web1", "10.0.0.3", true, "web", corev1.ContainerPort{Name: "http", ContainerPort: 8080})}
	snap := &metadata.Snapshot{Services: []*corev1.Service{svc}, EndpointSlices: EndpointSlicesFor(svc, pods)}
	if n, err := s.Apply(snap); err != nil || n != 2 || w.synced != 1 {
		t.Fatalf("first apply: %d writes %v, synced %d", n, err, w.synced)
	}
	if _, ok := w.set[7]; !ok {
		t.Fatalf("the installed id 7 of 10.96.0.10:80/TCP was not kept: %v", w.set)
	}
	if r, ok := s.Lookup(7); !ok || r.Name != "web" || r.Namespace != "ns" {
		t.Fatalf("lookup 7: %+v %v", r, ok)
	}
	if n, _ := s.Apply(snap); n != 0 {
		t.Fatalf("unchanged snapshot wrote %d", n)
	}
	pods = append(pods, pod("web2", "10.0.0.4", true, "web", corev1.ContainerPort{Name: "http", ContainerPort: 8080}))
	snap = &metadata.Snapshot{Services: []*corev1.Service{svc}, EndpointSlices: EndpointSlicesFor(svc, pods)}
	if n, _ := s.Apply(snap); n != 2 || len(w.set[7].Backends) != 2 {
		t.Fatalf("a new backend: %d writes, %v", n, w.set[7])
	}
	// Snapshots are immutable: a changed Service is a new object.
	svc = svc.DeepCopy()
	svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
	svc.Spec.Ports = svc.Spec.Ports[:1]
	snap = &metadata.Snapshot{Services: []*corev1.Service{svc}, EndpointSlices: snap.EndpointSlices}
	if n, _ := s.Apply(snap); n != 2 || w.deletes != 1 || w.set[7].Affinity != 0 {
		t.Fatalf("a removed port and affinity off: %d writes, %d deletes, %+v", n, w.deletes, w.set[7])
	}
	if n, _ := s.Apply(&metadata.Snapshot{}); n != 1 || len(w.set) != 0 {
		t.Fatalf("service gone: %d writes, left %v", n, w.set)
	}
}

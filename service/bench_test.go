package service

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"golang.org/x/sys/unix"
)

// cpuTime is this process's user+system CPU time: the machine is shared,
// so wall time alone says more about the neighbours than about the code.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bigSnapshot is n Services of one port with per backends each; shift
// moves the last backend of Service 0 (a one-backend change).
func bigSnapshot(n, per int, shift bool) *metadata.Snapshot {
	snap := &metadata.Snapshot{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("s%05d", i)
		snap.Services = append(snap.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bench"},
			Spec: corev1.ServiceSpec{ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}).String(),
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}}},
		})
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: "bench", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(8080))}},
		}
		for j := 0; j < per; j++ {
			last := byte(j)
			if shift && i == 0 && j == per-1 {
				last = 200
			}
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{netip.AddrFrom4([4]byte{10, byte(1 + i>>8), byte(i), last}).String()},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
			})
		}
		snap.EndpointSlices = append(snap.EndpointSlices, es)
	}
	return snap
}

func benchDatapath(b *testing.B) *datapath.Datapath {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	root := b.TempDir()
	d, err := datapath.Load(datapath.Config{BPFRoot: root})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		d.Close()
		_ = datapath.Cleanup(root)
		_ = unix.Unmount(root, unix.MNT_DETACH)
	})
	return d
}

// BenchmarkApply10kServices10Backends: the agent's first full apply of
// 10,000 Services x 10 backends into the real maps (issue #19: < 2 s).
func BenchmarkApply10kServices10Backends(b *testing.B) {
	d := benchDatapath(b)
	w, err := d.Services()
	if err != nil {
		b.Fatal(err)
	}
	full, empty := bigSnapshot(10000, 10, false), &metadata.Snapshot{}
	var cpu time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, err := NewSyncer(w)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0 := cpuTime()
		if n, err := s.Apply(full); err != nil || n != 10000 {
			b.Fatalf("apply: %d %v", n, err)
		}
		cpu += cpuTime() - c0
		b.StopTimer()
		if _, err := s.Apply(empty); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/apply")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/apply")
}

// BenchmarkOneBackendChange: one backend of one Service changes among
// 10,000 Services (issue #19: < 50 ms), from snapshot to maps.
func BenchmarkOneBackendChange(b *testing.B) {
	d := benchDatapath(b)
	w, err := d.Services()
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewSyncer(w)
	if err != nil {
		b.Fatal(err)
	}
	// The changed snapshot shares every object but one, as the metadata
	// sources' snapshots do.
	base, changed := bigSnapshot(10000, 10, false), bigSnapshot(1, 10, true)
	other := *base
	other.EndpointSlices = append([]*discoveryv1.EndpointSlice{changed.EndpointSlices[0]}, base.EndpointSlices[1:]...)
	snaps := []*metadata.Snapshot{base, &other}
	if _, err := s.Apply(snaps[0]); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	c0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if n, err := s.Apply(snaps[(i+1)%2]); err != nil || n != 1 {
			b.Fatalf("apply: %d writes %v", n, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/change")
	b.ReportMetric(float64((cpuTime()-c0).Microseconds())/1000/float64(b.N), "cpu-ms/change")
}

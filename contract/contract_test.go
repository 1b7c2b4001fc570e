package contract

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestTraceObservationPoint(t *testing.T) {
	cases := map[uint8]flowpb.TraceObservationPoint{
		TraceToLxc:   flowpb.TraceObservationPoint_TO_ENDPOINT,
		TraceFromLxc: flowpb.TraceObservationPoint_FROM_ENDPOINT,
		TraceToStack: flowpb.TraceObservationPoint_TO_STACK,
	}
	for p, want := range cases {
		if got := TraceObservationPoint(p); got != want {
			t.Errorf("point %d: %v, want %v", p, got, want)
		}
	}
	if TraceObservationPointName(TraceToLxc) != "to-endpoint" || TraceObservationPointName(200) != "200" {
		t.Errorf("names: %q %q", TraceObservationPointName(TraceToLxc), TraceObservationPointName(200))
	}
}

func TestReserved(t *testing.T) {
	if got := ReservedLabels(IdentityWorld); len(got) != 1 || got[0] != "reserved:world" {
		t.Errorf("world labels %v", got)
	}
	if ReservedLabels(IdentityUnknown) != nil || ReservedLabels(256) != nil || ReservedName(1<<24) != "" {
		t.Error("non-reserved identities have labels")
	}
	if !IsWorld(IdentityWorldIPv6) || IsWorld(IdentityHost) {
		t.Error("IsWorld")
	}
}

func TestDropAndMatchTexts(t *testing.T) {
	if got := DropReasonText(DropPolicyDenied); got != "Policy denied" {
		t.Errorf("133: %q", got)
	}
	if got := DropReasonText(1); got != "1, 0" {
		t.Errorf("unknown code: %q", got)
	}
	if PolicyMatchName(PolicyMatchL3L4) != "L3-L4" || PolicyMatchName(99) != "unknown" {
		t.Error("match names")
	}
}

func TestObserverAddress(t *testing.T) {
	n := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeExternalIP, Address: "192.0.2.1"},
		{Type: corev1.NodeInternalIP, Address: "10.0.0.7"},
	}}}
	if got := ObserverAddress(n, "4244"); got != "10.0.0.7:4244" {
		t.Errorf("by InternalIP: %q", got)
	}
	n.ObjectMeta = metav1.ObjectMeta{Annotations: map[string]string{ObserverAddressAnnotation: "172.30.0.11:4244"}}
	if got := ObserverAddress(n, "4244"); got != "172.30.0.11:4244" {
		t.Errorf("by annotation: %q", got)
	}
	if got := ObserverAddress(&corev1.Node{}, "4244"); got != "" {
		t.Errorf("no address: %q", got)
	}
	if got := TLSServerName("node-1.example.com"); got != "node-1-example-com.default.hubble-grpc.cilium.io" {
		t.Errorf("server name %q", got)
	}
}

func TestReportsNetns(t *testing.T) {
	eps := map[uint64]bool{100: true}
	isEp := func(i uint64) bool { return eps[i] }
	for _, c := range []struct {
		inum uint64
		want bool
	}{{100, true}, {7, true}, {8, false}, {0, false}} {
		if got := ReportsNetns(c.inum, 7, isEp); got != c.want {
			t.Errorf("netns %d: %v", c.inum, got)
		}
	}
}

package metadata

import (
	"net/netip"
	"testing"

	"github.com/loupe-project/loupe/contract"
)

func TestIndex(t *testing.T) {
	var s Snapshot
	if _, err := ParseManifests([]byte(sampleManifests+`---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: x}
status: {phase: Succeeded, podIP: 10.0.1.6}
---
apiVersion: v1
kind: Pod
metadata: {name: hostnet, namespace: x}
spec: {hostNetwork: true}
status: {phase: Running, podIP: 192.168.200.11}
`), &s); err != nil {
		t.Fatal(err)
	}
	ix := NewIndex(&s)
	if p := ix.PodByIP(netip.MustParseAddr("10.0.1.5")); p == nil || p.Name != "a" {
		t.Errorf("PodByIP v4 = %v", p)
	}
	if p := ix.PodByIP(netip.MustParseAddr("fd00::105")); p == nil || p.Name != "a" {
		t.Errorf("PodByIP v6 = %v", p)
	}
	if p := ix.PodByIP(netip.MustParseAddr("::ffff:10.0.1.5")); p == nil {
		t.Error("PodByIP of a v4-mapped address should find the pod")
	}
	for _, ip := range []string{"10.0.1.6", "192.168.200.11", "10.9.9.9"} {
		if p := ix.PodByIP(netip.MustParseAddr(ip)); p != nil {
			t.Errorf("PodByIP(%s) = %s, want none", ip, p.Name)
		}
	}
	if l := ix.NamespaceLabels("x"); l["ns"] != "x" {
		t.Errorf("NamespaceLabels = %v", l)
	}
	if ix.NamespaceLabels("nope") != nil {
		t.Error("labels of an unknown namespace")
	}
	if svc := ix.ServiceByAddr(netip.MustParseAddr("10.96.0.10"), 53); svc == nil || svc.Name != "s" {
		t.Errorf("ServiceByAddr = %v", svc)
	}
	if svc := ix.ServiceByAddr(netip.MustParseAddr("10.96.0.10"), 54); svc != nil {
		t.Error("service on the wrong port")
	}
	if n := ix.NodeByIP(netip.MustParseAddr("192.168.200.11")); n == nil || n.Name != "node-1" {
		t.Errorf("NodeByIP = %v", n)
	}
	if len(ix.Nodes()) != 1 || ix.Node("node-1") == nil {
		t.Error("nodes")
	}
	if ip, ok := contract.NodeInternalIP(ix.Node("node-1")); !ok || ip.String() != "192.168.200.11" {
		t.Errorf("NodeInternalIP = %v", ip)
	}
}

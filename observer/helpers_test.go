package observer

import (
	"net/netip"
	"testing"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// evSpec describes one datapath record; rawEvent lays it out with
// datapath.EncodeEvent.
type evSpec struct {
	ts                 uint64
	typ, obs, verdict  uint8
	dropReason         uint8
	proto, tcpFlags    uint8
	flags              uint8
	ifindex, epID      uint32
	srcID, dstID       uint32
	src, dst           string
	sport, dport       uint16
	icmpType, icmpCode uint8
	matchType, dir     uint8
	policyID           uint32
	// pkts is the connection's packets so far, each way (0: no
	// conntrack entry), as the datapath reports them on a forwarded
	// packet.
	pkts uint64
}

func rawEvent(s evSpec) []byte {
	return datapath.MustEncodeEvent(&datapath.Event{
		TimestampNS: s.ts, Type: s.typ, ObsPoint: s.obs, Verdict: s.verdict, DropReason: s.dropReason,
		Proto: s.proto, TCPFlags: s.tcpFlags, Flags: s.flags, Ifindex: s.ifindex, EndpointID: s.epID,
		SrcIdentity: s.srcID, DstIdentity: s.dstID,
		Src: netip.MustParseAddr(s.src), Dst: netip.MustParseAddr(s.dst), SrcPort: s.sport, DstPort: s.dport,
		ICMPType: s.icmpType, ICMPCode: s.icmpCode, MatchType: s.matchType, Direction: s.dir,
		PolicyID: s.policyID, PacketLen: 60,
		PacketsFwd: s.pkts, BytesFwd: 60 * s.pkts, PacketsRev: s.pkts / 2, BytesRev: 60 * (s.pkts / 2),
	})
}

// testCluster is the metadata the decoder tests enrich from: namespaces x
// and y, pods x/a (deployment via ReplicaSet), x/b (app label), y/c
// (StatefulSet), a service, and two nodes.
const testCluster = `apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: blue}}
---
apiVersion: v1
kind: Namespace
metadata: {name: "y"}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f7c6b9-abcde
  namespace: x
  labels: {app: web, pod-template-hash: 5d8f7c6b9}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f7c6b9, uid: u1, controller: true}]
spec: {nodeName: node-1, serviceAccountName: websa, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.1.10, podIPs: [{ip: 10.0.1.10}, {ip: "fd00:1::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: client}}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.1.11, podIPs: [{ip: 10.0.1.11}, {ip: "fd00:1::11"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: "y"
  labels: {app: db}
  ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: u2, controller: true}]
spec: {nodeName: node-2, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.2.20}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec: {clusterIP: 10.96.0.50, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1, annotations: {loupe.dev/observer-address: "192.168.200.11:4244"}}
status: {addresses: [{type: InternalIP, address: 192.168.200.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-2, annotations: {loupe.dev/observer-address: "192.168.200.12:4244"}}
status: {addresses: [{type: InternalIP, address: 192.168.200.12}]}
`

func testSnapshot(t testing.TB) *metadata.Snapshot {
	t.Helper()
	s := &metadata.Snapshot{Generation: "1"}
	if _, err := metadata.ParseManifests([]byte(testCluster), s); err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestObserver(t testing.TB, bufSize int, src metadata.Source) *Observer {
	t.Helper()
	if src == nil {
		src = metadata.Static{Snap: testSnapshot(t)}
	}
	o, err := New(Config{
		NodeName:   "node-1",
		Metadata:   src,
		BufferSize: bufSize,
		LinkName:   func(i uint32) string { return "lxc" + string(rune('a'+i%26)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

package datapath

import (
	"testing"
	"time"

	"github.com/loupe-project/loupe/contract"
)

// TestPrivilegedHandshakeTimingClient times SYN to SYN-ACK on the client's
// veth and puts it on the entry and on every later event of the connection.
func TestPrivilegedHandshakeTimingClient(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	syn := pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 40001, dport: 80, flags: tcpSYN}
	synack := syn.reply()
	synack.flags = tcpSYN | tcpACK
	data := syn
	data.flags = tcpACK
	data.payload = 1000
	fin := syn
	fin.flags = tcpFIN | tcpACK

	run(t, d.objs.LoupeFromPod, syn.build())
	const wait = 3 * time.Millisecond
	time.Sleep(wait)
	run(t, d.objs.LoupeToPod, synack.build())
	e := findCT(t, d, protoTCP)
	if e.HandshakeNS < uint64(wait) || e.HandshakeNS > uint64(time.Second) {
		t.Fatalf("handshake %d ns, want at least %d", e.HandshakeNS, wait)
	}
	// Later packets in either direction do not move it.
	run(t, d.objs.LoupeFromPod, data.build())
	run(t, d.objs.LoupeToPod, synack.build())
	run(t, d.objs.LoupeFromPod, fin.build())
	evs := drainEvents(t, d)
	if len(evs) < 3 {
		t.Fatalf("events: %+v", evs)
	}
	if evs[0].HandshakeNS != 0 {
		t.Errorf("syn event has handshake %d", evs[0].HandshakeNS)
	}
	last := evs[len(evs)-1]
	if evs[1].HandshakeNS != e.HandshakeNS || last.HandshakeNS != e.HandshakeNS {
		t.Errorf("syn-ack %d, fin %d, entry %d", evs[1].HandshakeNS, last.HandshakeNS, e.HandshakeNS)
	}
	// Bytes per direction: what left the pod is forward.
	b := uint64(len(syn.build())+len(data.build())+len(fin.build())) + 0
	if last.PacketsFwd != 3 || last.BytesFwd != b || last.PacketsRev != 2 || last.BytesRev != 2*uint64(len(synack.build())) {
		t.Errorf("fin counters fwd %d/%d rev %d/%d, want 3/%d 2/%d", last.PacketsFwd, last.BytesFwd, last.PacketsRev, last.BytesRev,
			b, 2*len(synack.build()))
	}
}

// TestPrivilegedHandshakeTimingServer: a connection opened from outside is
// timed on the server's veth from the SYN to the client's first ACK.
func TestPrivilegedHandshakeTimingServer(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	syn := pkt{src: peerIP, dst: podIP, proto: protoTCP, sport: 50001, dport: 8080, flags: tcpSYN}
	synack := syn.reply()
	synack.flags = tcpSYN | tcpACK
	ack := syn
	ack.flags = tcpACK

	run(t, d.objs.LoupeToPod, syn.build())
	run(t, d.objs.LoupeFromPod, synack.build())
	if e := findCT(t, d, protoTCP); e.HandshakeNS != 0 {
		t.Fatalf("timed before the client's ACK: %d", e.HandshakeNS)
	}
	time.Sleep(time.Millisecond)
	run(t, d.objs.LoupeToPod, ack.build())
	if e := findCT(t, d, protoTCP); e.HandshakeNS < uint64(time.Millisecond) || e.Direction != contract.DirectionIngress {
		t.Fatalf("entry: %+v", e)
	}
}

// TestPrivilegedNoConnStats: with the switch off the datapath keeps no bytes
// and no timing, and still reports the first reply.
func TestPrivilegedNoConnStats(t *testing.T) {
	d := newTestDatapath(t, Config{NoConnStats: true})
	withEndpoint(t, d, EndpointInfo{})
	syn := pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 40002, dport: 80, flags: tcpSYN}
	synack := syn.reply()
	synack.flags = tcpSYN | tcpACK
	run(t, d.objs.LoupeFromPod, syn.build())
	run(t, d.objs.LoupeToPod, synack.build())
	e := findCT(t, d, protoTCP)
	if e.HandshakeNS != 0 || e.BytesRev != 0 || e.PacketsFwd != 0 || e.BytesFwd != 0 || e.PacketsRev != 1 {
		t.Fatalf("entry: %+v", e)
	}
	if evs := drainEvents(t, d); len(evs) != 2 || evs[1].Flags != FlagReply {
		t.Fatalf("events: %+v", evs)
	}
}

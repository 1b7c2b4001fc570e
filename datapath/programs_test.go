package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/loupe-project/loupe/contract"
)

var (
	podIP   = netip.MustParseAddr("10.0.0.2")
	peerIP  = netip.MustParseAddr("10.0.0.3")
	podIP6  = netip.MustParseAddr("fd00::2")
	peerIP6 = netip.MustParseAddr("fd00::3")
)

const testEP = 42

func withEndpoint(tb testing.TB, d *Datapath, ep EndpointInfo) {
	tb.Helper()
	if ep.ID == 0 {
		ep.ID = testEP
	}
	if ep.Identity == 0 {
		ep.Identity = 1000
	}
	if !ep.IPv4.IsValid() {
		ep.IPv4 = podIP
	}
	if !ep.IPv6.IsValid() {
		ep.IPv6 = podIP6
	}
	if err := d.UpsertEndpoint(loIfindex, ep); err != nil {
		tb.Fatal(err)
	}
}

func TestPrivilegedAntiSpoof(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	spoofed := pkt{src: netip.MustParseAddr("10.0.0.99"), dst: peerIP, proto: protoUDP, sport: 1, dport: 53}.build()

	if ret := run(t, d.objs.LoupeXdp, spoofed); ret != retXDPDrop {
		t.Fatalf("xdp: got %d, want XDP_DROP", ret)
	}
	if ret := run(t, d.objs.LoupeFromPod, spoofed); ret != retTCXDrop {
		t.Fatalf("tcx ingress: got %d, want TCX_DROP", ret)
	}
	if p, b := counter(t, d, contract.DropInvalidSourceIP, contract.DirectionEgress, testEP); p != 2 || b != uint64(2*len(spoofed)) {
		t.Fatalf("counter 132: %d packets %d bytes, want 2 and %d", p, b, 2*len(spoofed))
	}
	evs := drainEvents(t, d)
	if len(evs) != 2 {
		t.Fatalf("got %d events, want 2", len(evs))
	}
	for i, ev := range evs {
		if ev.Type != contract.MessageTypeDrop || ev.DropReason != contract.DropInvalidSourceIP || ev.Verdict != contract.VerdictDropped ||
			ev.Direction != contract.DirectionEgress || ev.ObsPoint != contract.TraceFromLxc || ev.EndpointID != testEP ||
			ev.Src != netip.MustParseAddr("10.0.0.99") || ev.Dst != peerIP || ev.DstPort != 53 {
			t.Errorf("event %d: %+v", i, ev)
		}
		if !bytes.Equal(ev.Data, spoofed) || ev.PacketLen != uint32(len(spoofed)) {
			t.Errorf("event %d: data %x, want %x", i, ev.Data, spoofed)
		}
	}
	if evs[0].Flags&FlagXDP == 0 || evs[1].Flags&FlagXDP != 0 {
		t.Errorf("xdp flag: first %#x second %#x", evs[0].Flags, evs[1].Flags)
	}

	// The pod's own addresses pass, and an IPv6 source that is not the pod's drops.
	own := pkt{src: podIP, dst: peerIP, proto: protoUDP, sport: 1, dport: 53}.build()
	if ret := run(t, d.objs.LoupeXdp, own); ret != retXDPPass {
		t.Fatalf("own ipv4 xdp: got %d", ret)
	}
	if ret := run(t, d.objs.LoupeFromPod, own); ret != retTCXNext {
		t.Fatalf("own ipv4 tcx: got %d", ret)
	}
	spoof6 := pkt{src: netip.MustParseAddr("fd00::99"), dst: peerIP6, proto: protoUDP, sport: 1, dport: 53}.build()
	if ret := run(t, d.objs.LoupeFromPod, spoof6); ret != retTCXDrop {
		t.Fatalf("spoofed ipv6 tcx: got %d", ret)
	}
	// Anti-spoofing is for packets from the pod: to the pod, any source is fine.
	in := pkt{src: netip.MustParseAddr("192.0.2.1"), dst: podIP, proto: protoUDP, sport: 1, dport: 53}.build()
	if ret := run(t, d.objs.LoupeToPod, in); ret != retTCXNext {
		t.Fatalf("to pod: got %d", ret)
	}
}

func TestPrivilegedIPv6LinkLocalAndUnspecifiedPass(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	for name, p := range map[string]pkt{
		"link-local ns":  {src: netip.MustParseAddr("fe80::1"), dst: netip.MustParseAddr("ff02::1:ff00:1"), proto: protoICMPv6, icmpType: 135, payload: 16},
		"dad from ::":    {src: netip.IPv6Unspecified(), dst: netip.MustParseAddr("ff02::1:ff00:2"), proto: protoICMPv6, icmpType: 135, payload: 16},
		"link-local tcp": {src: netip.MustParseAddr("fe80::abcd"), dst: netip.MustParseAddr("fe80::1"), proto: protoTCP, sport: 1, dport: 2, flags: tcpSYN},
		"own global":     {src: podIP6, dst: peerIP6, proto: protoTCP, sport: 1, dport: 2, flags: tcpSYN},
	} {
		b := p.build()
		if ret := run(t, d.objs.LoupeXdp, b); ret != retXDPPass {
			t.Errorf("%s: xdp %d", name, ret)
		}
		if ret := run(t, d.objs.LoupeFromPod, b); ret != retTCXNext {
			t.Errorf("%s: tcx %d", name, ret)
		}
	}
	if p, _ := counter(t, d, contract.DropInvalidSourceIP, contract.DirectionEgress, testEP); p != 0 {
		t.Fatalf("%d anti-spoof drops, want 0", p)
	}
	// Neighbour discovery is neither tracked nor reported.
	ct, err := d.Conntrack()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ct {
		if e.Proto == protoICMPv6 {
			t.Errorf("neighbour discovery tracked: %+v", e)
		}
	}
}

func TestPrivilegedMalformed(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	good := pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 1000, dport: 80, flags: tcpSYN}.build()
	good6 := pkt{src: podIP6, dst: peerIP6, proto: protoUDP, sport: 1000, dport: 53, payload: 4}.build()
	goodUDP := pkt{src: podIP, dst: peerIP, proto: protoUDP, sport: 1000, dport: 53, payload: 4}.build()
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }

	cases := map[string][]byte{
		"ipv4 header cut":    good[:14+12],
		"ipv4 ihl < 5":       mod(good, func(b []byte) []byte { b[14] = 0x44; return b }),
		"ipv4 bad version":   mod(good, func(b []byte) []byte { b[14] = 0x55; return b }),
		"ipv4 tot_len long":  mod(good, func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 200); return b }),
		"ipv4 tot_len < ihl": mod(good, func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 10); return b }),
		"tcp header cut": mod(good, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 20+10)
			return b[:14+20+10]
		}),
		"tcp doff < 5":      mod(good, func(b []byte) []byte { b[14+20+12] = 4 << 4; return b }),
		"tcp doff past end": mod(good, func(b []byte) []byte { b[14+20+12] = 15 << 4; return b }),
		"udp len < 8":       mod(goodUDP, func(b []byte) []byte { binary.BigEndian.PutUint16(b[14+20+4:], 4); return b }),
		"udp len past end":  mod(goodUDP, func(b []byte) []byte { binary.BigEndian.PutUint16(b[14+20+4:], 100); return b }),
		"icmp cut":          pkt{src: podIP, dst: peerIP, proto: protoICMP, icmpType: 8}.build()[:14+20+4],
		"ipv6 header cut":   good6[:14+30],
		"ipv6 bad version":  mod(good6, func(b []byte) []byte { b[14] = 0x40; return b }),
		"ipv6 payload long": mod(good6, func(b []byte) []byte { binary.BigEndian.PutUint16(b[18:], 300); return b }),
		"ipv6 udp cut": mod(good6, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[18:], 4)
			return b[:14+40+4]
		}),
	}
	// The icmp case's IP header must describe the cut packet.
	binary.BigEndian.PutUint16(cases["icmp cut"][16:], 24)

	// BPF_PROG_TEST_RUN refuses skbs whose L3 header is shorter than the
	// ethertype's minimum, so those reach only the XDP program here.
	xdpOnly := map[string]bool{"ipv4 header cut": true, "ipv6 header cut": true}

	var wantXDP, want uint64
	for name, b := range cases {
		if ret := run(t, d.objs.LoupeXdp, b); ret != retXDPDrop {
			t.Errorf("%s: xdp %d, want drop", name, ret)
		}
		wantXDP++
		if xdpOnly[name] {
			continue
		}
		if ret := run(t, d.objs.LoupeFromPod, b); ret != retTCXDrop {
			t.Errorf("%s: tcx ingress %d, want drop", name, ret)
		}
		if ret := run(t, d.objs.LoupeToPod, b); ret != retTCXDrop {
			t.Errorf("%s: tcx egress %d, want drop", name, ret)
		}
		want++
	}
	if p, _ := counter(t, d, contract.DropInvalidPacket, contract.DirectionEgress, testEP); p != wantXDP+want {
		t.Errorf("egress 134 drops: %d, want %d", p, wantXDP+want)
	}
	if p, _ := counter(t, d, contract.DropInvalidPacket, contract.DirectionIngress, testEP); p != want {
		t.Errorf("ingress 134 drops: %d, want %d", p, want)
	}
	for _, ev := range drainEvents(t, d) {
		if ev.Type != contract.MessageTypeDrop || ev.DropReason != contract.DropInvalidPacket {
			t.Errorf("event %+v", ev)
		}
	}
	// Well-formed packets, padding after the IP packet and non-IP frames pass.
	padded := append(append([]byte(nil), goodUDP...), make([]byte, 20)...)
	arp := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2, 0x08, 0x06}, make([]byte, 28)...)
	for name, b := range map[string][]byte{"tcp": good, "udp6": good6, "padded": padded, "arp": arp} {
		if ret := run(t, d.objs.LoupeXdp, b); ret != retXDPPass {
			t.Errorf("%s: xdp %d, want pass", name, ret)
		}
		if ret := run(t, d.objs.LoupeFromPod, b); ret != retTCXNext {
			t.Errorf("%s: tcx %d, want next", name, ret)
		}
	}
}

func findCT(tb testing.TB, d *Datapath, proto uint8) CTEntry {
	tb.Helper()
	ct, err := d.Conntrack()
	if err != nil {
		tb.Fatal(err)
	}
	var found []CTEntry
	for _, e := range ct {
		if e.Proto == proto {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		tb.Fatalf("want one proto %d conntrack entry, got %+v", proto, ct)
	}
	return found[0]
}

func TestPrivilegedTCPConntrack(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	syn := pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 40000, dport: 80, flags: tcpSYN}
	synack := syn.reply()
	synack.flags = tcpSYN | tcpACK
	ack := syn
	ack.flags = tcpACK
	fin := syn
	fin.flags = tcpFIN | tcpACK

	if ret := run(t, d.objs.LoupeFromPod, syn.build()); ret != retTCXNext {
		t.Fatalf("syn: %d", ret)
	}
	e := findCT(t, d, protoTCP)
	if e.Src != podIP || e.Dst != peerIP || e.SrcPort != 40000 || e.DstPort != 80 || e.Direction != contract.DirectionEgress ||
		e.Ifindex != loIfindex || e.PacketsFwd != 1 || e.PacketsRev != 0 || e.TCPFlagsFwd != tcpSYN || e.FirstSeenNS == 0 {
		t.Fatalf("after syn: %+v", e)
	}
	evs := drainEvents(t, d)
	if len(evs) != 1 {
		t.Fatalf("syn: %d events, want 1", len(evs))
	}
	ev := evs[0]
	if ev.Type != contract.MessageTypeTrace || ev.Verdict != contract.VerdictForwarded || ev.Flags != FlagCTNew || ev.ObsPoint != contract.TraceFromLxc ||
		ev.Src != podIP || ev.Dst != peerIP || ev.SrcPort != 40000 || ev.DstPort != 80 || ev.Proto != protoTCP ||
		ev.TCPFlags != tcpSYN || ev.Direction != contract.DirectionEgress || ev.SrcIdentity != 1000 || ev.DstIdentity != contract.IdentityWorld ||
		ev.PacketsFwd != 1 || ev.Ifindex != loIfindex || ev.TimestampNS != e.FirstSeenNS {
		t.Fatalf("syn event: %+v", ev)
	}

	if ret := run(t, d.objs.LoupeToPod, synack.build()); ret != retTCXNext {
		t.Fatalf("syn-ack: %d", ret)
	}
	evs = drainEvents(t, d)
	if len(evs) != 1 || evs[0].Flags != FlagReply || evs[0].ObsPoint != contract.TraceToLxc || evs[0].Src != peerIP ||
		evs[0].SrcPort != 80 || evs[0].DstIdentity != 1000 || evs[0].PacketsRev != 1 {
		t.Fatalf("syn-ack events: %+v", evs)
	}

	// Established traffic: no events, counters and conntrack move.
	for range 3 {
		run(t, d.objs.LoupeFromPod, ack.build())
	}
	if evs := drainEvents(t, d); len(evs) != 0 {
		t.Fatalf("ack: %d events, want 0", len(evs))
	}
	run(t, d.objs.LoupeFromPod, fin.build())
	evs = drainEvents(t, d)
	if len(evs) != 1 || evs[0].TCPFlags != tcpFIN|tcpACK || evs[0].Flags != 0 || evs[0].PacketsFwd != 5 {
		t.Fatalf("fin events: %+v", evs)
	}
	e = findCT(t, d, protoTCP)
	if e.PacketsFwd != 5 || e.PacketsRev != 1 || e.TCPFlagsRev != tcpSYN|tcpACK || e.LastSeenNS < e.FirstSeenNS {
		t.Fatalf("conntrack: %+v", e)
	}
	if p, _ := counter(t, d, contract.VerdictForwarded, contract.DirectionEgress, testEP); p != 5 {
		t.Errorf("forwarded egress %d, want 5", p)
	}
	if p, _ := counter(t, d, contract.VerdictForwarded, contract.DirectionIngress, testEP); p != 1 {
		t.Errorf("forwarded ingress %d, want 1", p)
	}

	// A fresh SYN on the closed 5-tuple starts a new connection.
	run(t, d.objs.LoupeFromPod, syn.build())
	evs = drainEvents(t, d)
	if len(evs) != 1 || evs[0].Flags != FlagCTNew {
		t.Fatalf("reopen events: %+v", evs)
	}
	if e := findCT(t, d, protoTCP); e.PacketsFwd != 1 || e.PacketsRev != 0 {
		t.Fatalf("reopened conntrack: %+v", e)
	}

	// The agent can remove entries (the policy work prunes denied ones).
	n, err := d.DeleteConntrack(func(e CTEntry) bool { return e.Proto == protoTCP })
	if err != nil || n != 1 {
		t.Fatalf("delete conntrack: %d %v", n, err)
	}
}

func TestPrivilegedConnectionFromOutside(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	syn := pkt{src: peerIP6, dst: podIP6, proto: protoTCP, sport: 50000, dport: 8080, flags: tcpSYN}
	run(t, d.objs.LoupeToPod, syn.build())
	synack := syn.reply()
	synack.flags = tcpSYN | tcpACK
	run(t, d.objs.LoupeFromPod, synack.build())
	e := findCT(t, d, protoTCP)
	if e.Src != peerIP6 || e.Dst != podIP6 || e.SrcPort != 50000 || e.DstPort != 8080 || e.Direction != contract.DirectionIngress ||
		e.PacketsFwd != 1 || e.PacketsRev != 1 {
		t.Fatalf("conntrack: %+v", e)
	}
	evs := drainEvents(t, d)
	if len(evs) != 2 || evs[0].Flags != FlagCTNew || evs[0].Direction != contract.DirectionIngress || evs[1].Flags != FlagReply ||
		evs[1].Family != 6 || evs[1].Src != podIP6 {
		t.Fatalf("events: %+v", evs)
	}
	if err := d.DeleteConntrackEntry(e); err != nil {
		t.Fatal(err)
	}
	if ct, _ := d.Conntrack(); len(ct) != 0 {
		t.Fatalf("entry left after delete: %+v", ct)
	}
}

func TestPrivilegedUDP(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	q := pkt{src: podIP, dst: peerIP, proto: protoUDP, sport: 33333, dport: 53, payload: 30}
	run(t, d.objs.LoupeFromPod, q.build())
	run(t, d.objs.LoupeToPod, q.reply().build())
	run(t, d.objs.LoupeFromPod, q.build())
	e := findCT(t, d, protoUDP)
	if e.Src != podIP || e.DstPort != 53 || e.PacketsFwd != 2 || e.PacketsRev != 1 ||
		e.BytesFwd != 2*uint64(len(q.build())) {
		t.Fatalf("conntrack: %+v", e)
	}
	// The request, then the first reply (as Cilium's monitor aggregation
	// reports it); the second request is not reported.
	evs := drainEvents(t, d)
	if len(evs) != 2 || evs[0].Flags != FlagCTNew || evs[0].Proto != protoUDP || evs[0].SrcPort != 33333 ||
		evs[1].Flags != FlagReply || evs[1].SrcPort != 53 || evs[1].PacketsRev != 1 {
		t.Fatalf("events: %+v", evs)
	}
}

func TestPrivilegedSCTP(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	run(t, d.objs.LoupeFromPod, pkt{src: podIP, dst: peerIP, proto: protoSCTP, sport: 5000, dport: 80}.build())
	if e := findCT(t, d, protoSCTP); e.SrcPort != 5000 || e.DstPort != 80 {
		t.Fatalf("conntrack: %+v", e)
	}
}

func TestPrivilegedICMP(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	echo := pkt{src: podIP, dst: peerIP, proto: protoICMP, icmpType: 8, icmpID: 77, payload: 56}
	reply := echo.reply()
	reply.icmpType = 0
	run(t, d.objs.LoupeFromPod, echo.build())
	run(t, d.objs.LoupeToPod, reply.build())
	e := findCT(t, d, protoICMP)
	if e.Src != podIP || e.Dst != peerIP || e.SrcPort != 77 || e.DstPort != 0 || e.PacketsFwd != 1 || e.PacketsRev != 1 {
		t.Fatalf("conntrack: %+v", e)
	}
	evs := drainEvents(t, d)
	if len(evs) != 2 || evs[0].ICMPType != 8 || evs[0].SrcPort != 0 || evs[0].Flags != FlagCTNew ||
		evs[1].ICMPType != 0 || evs[1].Flags != FlagReply {
		t.Fatalf("events: %+v", evs)
	}

	echo6 := pkt{src: podIP6, dst: peerIP6, proto: protoICMPv6, icmpType: 128, icmpID: 9}
	reply6 := echo6.reply()
	reply6.icmpType = 129
	run(t, d.objs.LoupeFromPod, echo6.build())
	run(t, d.objs.LoupeToPod, reply6.build())
	if e := findCT(t, d, protoICMPv6); e.SrcPort != 9 || e.PacketsRev != 1 {
		t.Fatalf("conntrack v6: %+v", e)
	}
}

func TestPrivilegedNoEndpoint(t *testing.T) {
	d := newTestDatapath(t, Config{})
	b := pkt{src: netip.MustParseAddr("10.9.9.9"), dst: peerIP, proto: protoUDP, sport: 1, dport: 2}.build()
	if ret := run(t, d.objs.LoupeXdp, b); ret != retXDPPass {
		t.Fatalf("xdp: %d", ret)
	}
	if ret := run(t, d.objs.LoupeFromPod, b); ret != retTCXNext {
		t.Fatalf("tcx: %d", ret)
	}
	if p, by := counter(t, d, ReasonNoEndpoint, contract.DirectionEgress, 0); p != 1 || by != uint64(len(b)) {
		t.Fatalf("no-endpoint counter: %d %d", p, by)
	}
	if evs := drainEvents(t, d); len(evs) != 0 {
		t.Fatalf("events: %+v", evs)
	}
}

func TestPrivilegedDropEventRateLimit(t *testing.T) {
	d := newTestDatapath(t, Config{DropEventsPerSecond: 1})
	withEndpoint(t, d, EndpointInfo{})
	spoofed := pkt{src: netip.MustParseAddr("10.0.0.99"), dst: peerIP, proto: protoUDP, sport: 1, dport: 53}.build()
	const n = 5000
	ret, err := d.objs.LoupeFromPod.Run(&ebpf.RunOptions{Data: spoofed, Repeat: n})
	if err != nil || ret != retTCXDrop {
		t.Fatalf("run: %d %v", ret, err)
	}
	if p, b := counter(t, d, contract.DropInvalidSourceIP, contract.DirectionEgress, testEP); p != n || b != n*uint64(len(spoofed)) {
		t.Fatalf("counter: %d packets %d bytes, want exactly %d", p, b, n)
	}
	evs := drainEvents(t, d)
	// One token per CPU per second: a handful of events at most, never n.
	if len(evs) < 1 || len(evs) > 10 {
		t.Fatalf("%d drop events for %d drops", len(evs), n)
	}
	st, err := d.EventStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.DropEventsLimited != uint64(n-len(evs)) || st.Lost != 0 {
		t.Fatalf("stats %+v with %d events", st, len(evs))
	}
}

// A full ring buffer loses events, and the loss is counted exactly: every
// packet is an event read, an event lost, or a drop event rate-limited.
func TestPrivilegedRingBufferFullCountsLost(t *testing.T) {
	// A 1 MiB ring holds about 3,600 events.
	d := newTestDatapath(t, Config{DropEventsPerSecond: 1 << 30, EventsRingBytes: 1 << 20})
	withEndpoint(t, d, EndpointInfo{})
	spoofed := pkt{src: netip.MustParseAddr("10.0.0.99"), dst: peerIP, proto: protoUDP, sport: 1, dport: 53}.build()
	const n = 40000
	ret, err := d.objs.LoupeFromPod.Run(&ebpf.RunOptions{Data: spoofed, Repeat: n})
	if err != nil || ret != retTCXDrop {
		t.Fatalf("run: %d %v", ret, err)
	}
	evs := drainEvents(t, d)
	st, err := d.EventStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Lost == 0 || uint64(len(evs))+st.Lost+st.DropEventsLimited != n {
		t.Fatalf("%d events read, stats %+v: want some lost and read+lost+limited = %d", len(evs), st, n)
	}
}

func TestPrivilegedPeriodicRecords(t *testing.T) {
	// A 1ns interval makes every packet of an established connection due.
	d := newTestDatapath(t, Config{ReportInterval: 1})
	withEndpoint(t, d, EndpointInfo{})
	q := pkt{src: podIP, dst: peerIP, proto: protoUDP, sport: 1234, dport: 5678, payload: 100}
	run(t, d.objs.LoupeFromPod, q.build())
	run(t, d.objs.LoupeToPod, q.reply().build())
	evs := drainEvents(t, d)
	if len(evs) != 2 || evs[1].Flags != FlagReply|FlagPeriodic || evs[1].PacketsFwd != 1 || evs[1].PacketsRev != 1 ||
		evs[1].BytesRev != uint64(len(q.build())) {
		t.Fatalf("events: %+v", evs)
	}
	// With the default 5 s interval, the same traffic gives no periodic
	// record: the request, its first reply, and nothing for the second one.
	d2 := newTestDatapath(t, Config{})
	withEndpoint(t, d2, EndpointInfo{})
	run(t, d2.objs.LoupeFromPod, q.build())
	run(t, d2.objs.LoupeToPod, q.reply().build())
	run(t, d2.objs.LoupeToPod, q.reply().build())
	if evs := drainEvents(t, d2); len(evs) != 2 || evs[1].Flags != FlagReply {
		t.Fatalf("default interval: %+v", evs)
	}
}

func TestPrivilegedPolicy(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{PolicyEgress: true, PolicyIngress: true})
	const peerID = 2000
	if err := d.UpsertIPCache(netip.MustParsePrefix("10.0.0.0/24"), peerID); err != nil {
		t.Fatal(err)
	}
	syn := pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 40000, dport: 80, flags: tcpSYN}

	// Enforced with no entries: default deny.
	if ret := run(t, d.objs.LoupeFromPod, syn.build()); ret != retTCXDrop {
		t.Fatalf("default deny: %d", ret)
	}
	evs := drainEvents(t, d)
	if len(evs) != 1 || evs[0].DropReason != contract.DropPolicyDenied || evs[0].Direction != contract.DirectionEgress || evs[0].DstIdentity != peerID {
		t.Fatalf("deny events: %+v", evs)
	}
	if p, _ := counter(t, d, contract.DropPolicyDenied, contract.DirectionEgress, testEP); p != 1 {
		t.Fatalf("133 counter: %d", p)
	}

	type step struct {
		name  string
		key   PolicyKey
		match uint8
	}
	for i, s := range []step{
		{"L3+L4", PolicyKey{PeerIdentity: peerID, Port: 80, Proto: protoTCP}, 2},
		{"L3+proto", PolicyKey{PeerIdentity: peerID, Proto: protoTCP}, 2},
		{"L3 only", PolicyKey{PeerIdentity: peerID}, 1},
		{"L4 only", PolicyKey{Port: 80, Proto: protoTCP}, 3},
		{"proto only", PolicyKey{Proto: protoTCP}, 3},
		{"allow all", PolicyKey{}, 4},
	} {
		s.key.EndpointID, s.key.Direction = testEP, contract.DirectionEgress
		rule := uint32(100 + i)
		if err := d.UpsertPolicy(s.key, PolicyEntry{RuleID: rule}); err != nil {
			t.Fatal(err)
		}
		p := syn
		p.sport = uint16(41000 + i)
		if ret := run(t, d.objs.LoupeFromPod, p.build()); ret != retTCXNext {
			t.Fatalf("%s: %d", s.name, ret)
		}
		evs := drainEvents(t, d)
		if len(evs) != 1 || evs[0].Type != contract.MessageTypePolicyVerdict || evs[0].MatchType != s.match || evs[0].PolicyID != rule {
			t.Fatalf("%s: events %+v", s.name, evs)
		}
		if err := d.DeletePolicy(s.key); err != nil {
			t.Fatal(err)
		}
		// The reply passes the enforced ingress side through conntrack.
		r := p.reply()
		r.flags = tcpSYN | tcpACK
		if ret := run(t, d.objs.LoupeToPod, r.build()); ret != retTCXNext {
			t.Fatalf("%s reply: %d", s.name, ret)
		}
		drainEvents(t, d)
	}

	// A deny entry wins over a less specific allow.
	allowAll := PolicyKey{EndpointID: testEP, Direction: contract.DirectionIngress}
	deny := PolicyKey{EndpointID: testEP, PeerIdentity: peerID, Port: 22, Proto: protoTCP, Direction: contract.DirectionIngress}
	if err := d.UpsertPolicy(allowAll, PolicyEntry{RuleID: 7}); err != nil {
		t.Fatal(err)
	}
	if err := d.UpsertPolicy(deny, PolicyEntry{RuleID: 8, Deny: true}); err != nil {
		t.Fatal(err)
	}
	in := pkt{src: peerIP, dst: podIP, proto: protoTCP, sport: 5555, dport: 22, flags: tcpSYN}
	if ret := run(t, d.objs.LoupeToPod, in.build()); ret != retTCXDrop {
		t.Fatalf("deny entry: %d", ret)
	}
	in.dport = 23
	if ret := run(t, d.objs.LoupeToPod, in.build()); ret != retTCXNext {
		t.Fatalf("allow all: %d", ret)
	}
	pol, err := d.Policy()
	if err != nil || len(pol) != 2 || !pol[deny].Deny || pol[allowAll].RuleID != 7 {
		t.Fatalf("policy map: %+v %v", pol, err)
	}
	var denied bool
	cs, _ := d.Counters()
	for _, c := range cs {
		if c.Reason == contract.DropPolicyDenied && c.RuleID == 8 && c.Direction == contract.DirectionIngress {
			denied = true
		}
	}
	if !denied {
		t.Fatalf("no per-rule counter for the deny: %+v", cs)
	}
	ipc, err := d.IPCache()
	if err != nil || ipc[netip.MustParsePrefix("10.0.0.0/24")] != peerID {
		t.Fatalf("ipcache: %v %v", ipc, err)
	}
	if err := d.DeleteIPCache(netip.MustParsePrefix("10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
}

func TestPrivilegedEndpointsMap(t *testing.T) {
	d := newTestDatapath(t, Config{})
	want := EndpointInfo{ID: 5, Identity: 77, IPv4: podIP, PolicyIngress: true}
	if err := d.UpsertEndpoint(9, want); err != nil {
		t.Fatal(err)
	}
	if err := d.UpsertEndpoint(10, EndpointInfo{ID: 6, IPv4: podIP6}); err == nil {
		t.Fatal("ipv6 address accepted as IPv4")
	}
	eps, err := d.Endpoints()
	if err != nil || len(eps) != 1 || eps[9] != want {
		t.Fatalf("endpoints: %+v %v", eps, err)
	}
	if err := d.DeleteEndpoint(9); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteEndpoint(9); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

// skbContext is a struct __sk_buff for BPF_PROG_TEST_RUN with the fields the
// kernel lets a test set that matter here.
func skbContext(ifindex, gsoSegs, gsoSize uint32) []byte {
	ctx := make([]byte, 192) // sizeof(struct __sk_buff)
	binary.LittleEndian.PutUint32(ctx[40:], ifindex)
	binary.LittleEndian.PutUint32(ctx[164:], gsoSegs)
	binary.LittleEndian.PutUint32(ctx[176:], gsoSize)
	return ctx
}

func TestPrivilegedGSOSegmentsCounted(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	data := pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 1, dport: 2, flags: tcpACK, payload: 3000}.build()
	ret, err := d.objs.LoupeFromPod.Run(&ebpf.RunOptions{Data: data, Context: skbContext(loIfindex, 3, 1400)})
	if err != nil || ret != retTCXNext {
		t.Fatalf("run: %d %v", ret, err)
	}
	if p, b := counter(t, d, contract.VerdictForwarded, contract.DirectionEgress, testEP); p != 3 || b != uint64(len(data)) {
		t.Fatalf("counter: %d packets %d bytes, want 3 and %d", p, b, len(data))
	}
	if e := findCT(t, d, protoTCP); e.PacketsFwd != 3 {
		t.Fatalf("conntrack: %+v", e)
	}
}

// upsertRange writes first..last of proto for peer as PortBlocks entries.
func upsertRange(tb testing.TB, d *Datapath, peer uint32, proto uint8, first, last uint16, rule uint32) {
	tb.Helper()
	for _, b := range PortBlocks(first, last) {
		k := PolicyKey{EndpointID: testEP, PeerIdentity: peer, Port: b.Port, PortWildBits: b.WildBits, Proto: proto, Direction: contract.DirectionIngress}
		if err := d.UpsertPolicy(k, PolicyEntry{RuleID: rule}); err != nil {
			tb.Fatal(err)
		}
	}
}

// An endPort range is enforced exactly: every port of 1000-65535 and of
// 1-65535, none outside, whatever the range's size.
func TestPrivilegedPolicyPortRanges(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{PolicyIngress: true})
	const peerID = 2000
	if err := d.UpsertIPCache(netip.PrefixFrom(peerIP, 32), peerID); err != nil {
		t.Fatal(err)
	}
	world := netip.MustParseAddr("192.0.2.9") // not in the ipcache
	upsertRange(t, d, peerID, protoTCP, 1000, 65535, 11)
	upsertRange(t, d, contract.IdentityUnknown, protoUDP, 1, 65535, 12)
	sport := uint16(20000)
	check := func(name string, src netip.Addr, proto uint8, dport uint16, allow bool, rule uint32, match uint8) {
		t.Helper()
		sport++
		p := pkt{src: src, dst: podIP, proto: proto, sport: sport, dport: dport, flags: tcpSYN}
		ret := run(t, d.objs.LoupeToPod, p.build())
		evs := drainEvents(t, d)
		if allow {
			if ret != retTCXNext || len(evs) != 1 || evs[0].Type != contract.MessageTypePolicyVerdict ||
				evs[0].PolicyID != rule || evs[0].MatchType != match {
				t.Errorf("%s: returned %d, events %+v: want allowed by rule %d, match %d", name, ret, evs, rule, match)
			}
		} else if ret != retTCXDrop {
			t.Errorf("%s: returned %d, want a drop", name, ret)
		}
	}
	for _, port := range []uint16{1000, 1007, 1008, 30000, 32767, 32768, 64000, 65535} {
		check(fmt.Sprintf("TCP %d from the peer", port), peerIP, protoTCP, port, true, 11, contract.PolicyMatchL3L4)
	}
	for _, port := range []uint16{80, 999, 1} {
		check(fmt.Sprintf("TCP %d from the peer", port), peerIP, protoTCP, port, false, 0, 0)
	}
	check("TCP 30000 from the world", world, protoTCP, 30000, false, 0, 0)
	for _, port := range []uint16{1, 2, 80, 30000, 64000, 65535} {
		check(fmt.Sprintf("UDP %d from the world", port), world, protoUDP, port, true, 12, contract.PolicyMatchL4Only)
		check(fmt.Sprintf("UDP %d from the peer", port), peerIP, protoUDP, port, true, 12, contract.PolicyMatchL4Only)
	}

	// A smaller block beats the one around it, deny or allow.
	hole := PolicyKey{EndpointID: testEP, PeerIdentity: peerID, Port: 30000, Proto: protoTCP, Direction: contract.DirectionIngress}
	if err := d.UpsertPolicy(hole, PolicyEntry{RuleID: 13, Deny: true}); err != nil {
		t.Fatal(err)
	}
	check("TCP 30000 under a deny", peerIP, protoTCP, 30000, false, 0, 0)
	check("TCP 30001 next to the deny", peerIP, protoTCP, 30001, true, 11, contract.PolicyMatchL3L4)
	if p, _ := counter(t, d, contract.DropPolicyDenied, contract.DirectionIngress, testEP); p != 5 {
		t.Errorf("%d policy drops counted, want 5", p)
	}

	pol, err := d.Policy()
	if err != nil {
		t.Fatal(err)
	}
	if len(pol) != 8+16+1 || pol[hole] != (PolicyEntry{RuleID: 13, Deny: true}) {
		t.Fatalf("policy map read back: %d entries %+v", len(pol), pol)
	}
	for k, e := range pol {
		if err := d.DeletePolicy(k); err != nil || (e.RuleID != 11 && e.RuleID != 12 && e.RuleID != 13) {
			t.Fatalf("%+v %+v: %v", k, e, err)
		}
	}
	if pol, err := d.Policy(); err != nil || len(pol) != 0 {
		t.Fatalf("after deleting every key read back: %+v %v", pol, err)
	}
}

// refLookup is the datapath's lookup by its definition: among the
// entries of the peer, else of any peer, the one of the longest prefix
// that matches (any protocol < any port < larger block < smaller block).
func refLookup(entries map[PolicyKey]PolicyEntry, peer uint32, port uint16, proto uint8) (PolicyEntry, uint8, bool) {
	for _, p := range []uint32{peer, contract.IdentityUnknown} {
		best, bestLen := PolicyKey{}, -1
		for k := range entries {
			if k.PeerIdentity != p || k.Proto != 0 && k.Proto != proto {
				continue
			}
			n := 0
			if k.Proto != 0 {
				n = 1
			}
			if k.Port != 0 {
				if port < k.Port || port > k.EndPort() {
					continue
				}
				n = 2 + 16 - int(k.PortWildBits)
			}
			if n > bestLen {
				best, bestLen = k, n
			}
		}
		if bestLen < 0 {
			continue
		}
		match := map[[2]bool]uint8{
			{false, true}: contract.PolicyMatchL3L4, {false, false}: contract.PolicyMatchL3Only,
			{true, true}: contract.PolicyMatchL4Only, {true, false}: contract.PolicyMatchAll,
		}[[2]bool{p == contract.IdentityUnknown, best.Proto != 0}]
		return entries[best], match, true
	}
	return PolicyEntry{}, contract.PolicyMatchNone, false
}

// Random nested and disjoint port blocks, protocols and peers: the
// programs decide every packet as refLookup does.
func TestPrivilegedPolicyLookupMatchesReference(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{PolicyIngress: true})
	const peerID = 2000
	if err := d.UpsertIPCache(netip.PrefixFrom(peerIP, 32), peerID); err != nil {
		t.Fatal(err)
	}
	world := netip.MustParseAddr("192.0.2.9")
	r := rand.New(rand.NewPCG(15, 2))
	entries := map[PolicyKey]PolicyEntry{}
	var edges []uint16
	for len(entries) < 80 {
		k := PolicyKey{EndpointID: testEP, Direction: contract.DirectionIngress,
			PeerIdentity: []uint32{peerID, contract.IdentityWorld, contract.IdentityUnknown}[r.IntN(3)],
			Proto:        []uint8{protoTCP, protoUDP, 0}[r.IntN(3)]}
		if k.Proto != 0 && r.IntN(5) > 0 {
			k.PortWildBits = uint8(r.IntN(16))
			k.Port = uint16(r.IntN(65536)) &^ (uint16(1)<<k.PortWildBits - 1)
			if k.Port == 0 {
				k.Port = 1 << k.PortWildBits
			}
			edges = append(edges, k.Port-1, k.Port, k.EndPort(), k.EndPort()+1)
		}
		e := PolicyEntry{RuleID: uint32(100 + len(entries)), Deny: r.IntN(3) == 0}
		if err := d.UpsertPolicy(k, e); err != nil {
			t.Fatal(err)
		}
		entries[k] = e
	}
	denied := map[uint32]uint64{}
	for i := range 600 {
		port := uint16(r.IntN(65536))
		if i%2 == 0 {
			port = edges[r.IntN(len(edges))]
		}
		src, peer := peerIP, uint32(peerID)
		if r.IntN(2) == 0 {
			src, peer = world, contract.IdentityWorld
		}
		proto := []uint8{protoTCP, protoUDP}[r.IntN(2)]
		e, match, ok := refLookup(entries, peer, port, proto)
		p := pkt{src: src, dst: podIP, proto: proto, sport: uint16(10000 + i), dport: port, flags: tcpSYN}
		ret := run(t, d.objs.LoupeToPod, p.build())
		evs := drainEvents(t, d)
		if ok && !e.Deny {
			if ret != retTCXNext || len(evs) != 1 || evs[0].PolicyID != e.RuleID || evs[0].MatchType != match {
				t.Fatalf("%d/%d from %d: returned %d, events %+v; want rule %d match %d", port, proto, peer, ret, evs, e.RuleID, match)
			}
			continue
		}
		if ret != retTCXDrop {
			t.Fatalf("%d/%d from %d: returned %d, want a drop by rule %d", port, proto, peer, ret, e.RuleID)
		}
		denied[e.RuleID]++
	}
	// Drop events are rate limited; the counters say which rule denied.
	cs, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]uint64{}
	for _, c := range cs {
		if c.Reason == contract.DropPolicyDenied {
			got[c.RuleID] += c.Packets
		}
	}
	if !maps.Equal(got, denied) {
		t.Fatalf("drops by rule: %v, want %v", got, denied)
	}
}

// A reader whose context ends while the ring is busy returns nil, and
// nothing unmaps the ring under it: before, a Close from another goroutine
// left the loop calling AvailableBytes on a closed reader, and the agent
// crashed when it stopped under load.
func TestPrivilegedReadEventsStopsUnderLoad(t *testing.T) {
	d := newTestDatapath(t, Config{DropEventsPerSecond: 1 << 30})
	withEndpoint(t, d, EndpointInfo{})
	spoofed := pkt{src: netip.MustParseAddr("10.0.0.99"), dst: peerIP, proto: protoUDP, sport: 1, dport: 53}.build()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			_, _ = d.objs.LoupeFromPod.Run(&ebpf.RunOptions{Data: spoofed, Repeat: 2000})
		}
	}()
	for i := range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		var got atomic.Int64
		errc := make(chan error, 1)
		go func() { errc <- d.ReadEvents(ctx, func([]byte) { got.Add(1) }) }()
		for got.Load() < 100 {
			runtime.Gosched()
		}
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the reader did not stop", i)
		}
	}
}

package datapath

import (
	"context"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/loupe-project/loupe/contract"
)

// benchProg runs data through prog b.N times inside the kernel and reports
// the kernel-measured cost per packet.
func benchProg(b *testing.B, prog *ebpf.Program, data []byte) {
	b.Helper()
	b.ResetTimer()
	_, per, err := prog.Benchmark(data, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
}

// benchDatapath is a loaded datapath with an endpoint on loopback and a
// reader draining events, as in the agent.
func benchDatapath(b *testing.B, policy bool) *Datapath {
	d := newTestDatapath(b, Config{})
	withEndpoint(b, d, EndpointInfo{PolicyEgress: policy, PolicyIngress: policy})
	if policy {
		if err := d.UpsertPolicy(PolicyKey{EndpointID: testEP, Direction: contract.DirectionEgress}, PolicyEntry{RuleID: 1}); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.ReadEvents(ctx, func([]byte) {})
	}()
	b.Cleanup(func() { cancel(); <-done })
	return d
}

var benchTCP = pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 40000, dport: 80, flags: tcpACK, payload: 1400}

// Established connection from the pod: endpoint + conntrack + counter, no event.
func BenchmarkFromPodEstablished(b *testing.B) {
	requireRoot(b)
	d := benchDatapath(b, false)
	data := benchTCP.build()
	run(b, d.objs.LoupeFromPod, data)
	benchProg(b, d.objs.LoupeFromPod, data)
}

// The same with egress policy enforced: established traffic skips the lookup.
func BenchmarkFromPodEstablishedPolicy(b *testing.B) {
	requireRoot(b)
	d := benchDatapath(b, true)
	// Open the connection with a SYN: a mid-stream packet without a
	// conntrack entry does not create one while policy is enforced.
	syn := benchTCP
	syn.flags = tcpSYN
	syn.payload = 0
	run(b, d.objs.LoupeFromPod, syn.build())
	benchProg(b, d.objs.LoupeFromPod, benchTCP.build())
}

// Reply to the pod on an established connection.
func BenchmarkToPodEstablished(b *testing.B) {
	requireRoot(b)
	d := benchDatapath(b, false)
	run(b, d.objs.LoupeFromPod, benchTCP.build())
	benchProg(b, d.objs.LoupeToPod, benchTCP.reply().build())
}

// Every packet carries SYN, so every packet emits an event.
func BenchmarkFromPodEventEveryPacket(b *testing.B) {
	requireRoot(b)
	d := benchDatapath(b, false)
	p := benchTCP
	p.flags = tcpSYN
	p.payload = 0
	benchProg(b, d.objs.LoupeFromPod, p.build())
}

// XDP pass path: endpoint lookup, parse, anti-spoof check.
func BenchmarkXDPPass(b *testing.B) {
	requireRoot(b)
	d := benchDatapath(b, false)
	benchProg(b, d.objs.LoupeXdp, benchTCP.build())
}

// Spoofed flood: every packet dropped and counted, events rate-limited.
func BenchmarkFromPodSpoofDrop(b *testing.B) {
	requireRoot(b)
	d := benchDatapath(b, false)
	p := benchTCP
	p.src = peerIP
	benchProg(b, d.objs.LoupeFromPod, p.build())
}

// fillPolicy writes about n entries for 500 other endpoints: per peer, the
// eight blocks of TCP 1000-65535, a single port and an any-port entry.
func fillPolicy(b *testing.B, d *Datapath, n int) int {
	b.Helper()
	blocks := PortBlocks(1000, 65535)
	written := 0
	for ep := uint32(1000); written < n; ep++ {
		for peer := uint32(300); peer < 350 && written < n; peer++ {
			put := func(k PolicyKey) {
				k.EndpointID, k.PeerIdentity, k.Direction = ep%500+1000, peer+ep/500*50, contract.DirectionEgress
				if err := d.UpsertPolicy(k, PolicyEntry{RuleID: 9}); err != nil {
					b.Fatal(err)
				}
				written++
			}
			for _, bl := range blocks {
				put(PolicyKey{Port: bl.Port, PortWildBits: bl.WildBits, Proto: protoTCP})
			}
			put(PolicyKey{Port: 443, Proto: protoTCP})
			put(PolicyKey{Proto: protoUDP})
		}
	}
	return written
}

// A new connection that policy denies: both LPM lookups miss, in a map
// of 250,000 entries, with this endpoint's own ranges and peers around.
func BenchmarkFromPodNewDeniedFullPolicyMap(b *testing.B) {
	requireRoot(b)
	d := benchDatapath(b, false)
	withEndpoint(b, d, EndpointInfo{PolicyEgress: true})
	n := fillPolicy(b, d, 250000)
	for _, bl := range PortBlocks(1000, 65535) {
		k := PolicyKey{EndpointID: testEP, PeerIdentity: 301, Port: bl.Port, PortWildBits: bl.WildBits, Proto: protoTCP, Direction: contract.DirectionEgress}
		if err := d.UpsertPolicy(k, PolicyEntry{RuleID: 9}); err != nil {
			b.Fatal(err)
		}
	}
	syn := benchTCP
	syn.flags, syn.payload = tcpSYN, 0
	if ret := run(b, d.objs.LoupeFromPod, syn.build()); ret != retTCXDrop {
		b.Fatalf("not denied: %d", ret)
	}
	benchProg(b, d.objs.LoupeFromPod, syn.build())
	b.ReportMetric(float64(n), "policy-entries")
}

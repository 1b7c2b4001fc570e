package policy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// tcpPacket is packet() with given TCP flags and payload.
func tcpPacket(src, dst string, sport, dport uint16, flags byte, payload int) []byte {
	b := packet(src, dst, 6, sport, dport)
	b[14+20+13] = flags
	b = append(b, make([]byte, payload)...)
	tot := uint16(len(b) - 14)
	b[16], b[17] = byte(tot>>8), byte(tot)
	// Recompute the IPv4 checksum.
	b[24], b[25] = 0, 0
	var sum uint32
	for i := 14; i < 34; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	cs := ^uint16(sum)
	b[24], b[25] = byte(cs>>8), byte(cs)
	return b
}

// Per-packet cost of policy in the datapath, in one run: an established
// connection without policy and with 1,000 rules on the endpoint (both
// directions enforced), and the worst case of a new connection that walks
// both policy lookups and is denied. The throughput ratio is
// no-policy ns / policy ns (target >= 0.95).
func BenchmarkPrivilegedPolicyPerPacket(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	root := b.TempDir()
	b.Cleanup(func() {
		_ = datapath.Cleanup(root)
		_ = unix.Unmount(root, unix.MNT_DETACH)
	})
	dp, err := datapath.Load(datapath.Config{BPFRoot: root})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dp.Close() })
	fromPod, err := ebpf.LoadPinnedProgram(filepath.Join(root, "progs", datapath.PinTCXIngress), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fromPod.Close() })
	toPod, err := ebpf.LoadPinnedProgram(filepath.Join(root, "progs", datapath.PinTCXEgress), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { toPod.Close() })

	// 1,000 policies on x/a, each allowing one port from x/b both ways.
	var docs strings.Builder
	for i := 0; i < 1000; i++ {
		docs.WriteString(np("x", fmt.Sprintf("p%d", i), fmt.Sprintf(`podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress, Egress]
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
  ports:
  - {port: %d, protocol: TCP}
egress:
- to:
  - podSelector: {matchLabels: {pod: b}}
  ports:
  - {port: %d, protocol: TCP}`, 1000+i, 1000+i)))
	}
	c := newTestCluster(b, docs.String())
	xa, xb, xc := c.ip("x/a"), c.ip("x/b"), c.ip("x/c")
	ep := &loEndpoint{dp: dp, st: EndpointState{ID: 7, Ifindex: 1, Namespace: "x", Name: "a", Identity: contract.IdentityInit},
		ip: netip.MustParseAddr(xa)}
	if err := ep.SetEndpointPolicy(map[uint32]EndpointPolicy{7: {Identity: contract.IdentityInit}}); err != nil {
		b.Fatal(err)
	}
	measure := func(prog *ebpf.Program, first, data []byte) float64 {
		if first != nil {
			if _, err := prog.Run(&ebpf.RunOptions{Data: first}); err != nil {
				b.Fatal(err)
			}
		}
		_, per, err := prog.Benchmark(data, b.N, nil)
		if err != nil {
			b.Fatal(err)
		}
		return float64(per.Nanoseconds())
	}
	syn := tcpPacket(xa, xb, 40000, 1500, 0x02, 0)
	ack := tcpPacket(xa, xb, 40000, 1500, 0x10, 1400)
	b.ResetTimer()
	noPolicy := measure(fromPod, syn, ack)
	b.StopTimer()

	eng := NewEngine(EngineConfig{Node: c.snap.Pods[0].Spec.NodeName, Datapath: dp, Endpoints: ep})
	st, err := eng.Apply(c.snap)
	if err != nil {
		b.Fatal(err)
	}
	if !ep.st.Flags.Egress || st.Entries < 2000 {
		b.Fatalf("policy not in place: %+v %+v", ep.st, st)
	}
	if _, err := dp.DeleteConntrack(func(datapath.CTEntry) bool { return true }); err != nil {
		b.Fatal(err)
	}
	syn2 := tcpPacket(xa, xb, 40001, 1500, 0x02, 0)
	ack2 := tcpPacket(xa, xb, 40001, 1500, 0x10, 1400)
	b.StartTimer()
	withPolicy := measure(fromPod, syn2, ack2)
	denied := measure(toPod, nil, tcpPacket(xc, xa, 40002, 1500, 0x02, 0))
	b.StopTimer()
	b.ReportMetric(noPolicy, "ns/pkt-no-policy")
	b.ReportMetric(withPolicy, "ns/pkt-1000-rules")
	b.ReportMetric(noPolicy/withPolicy, "throughput-ratio")
	b.ReportMetric(denied, "ns/pkt-new-denied")
	b.ReportMetric(float64(st.Entries), "policy-entries")
}

package policy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// loEndpoint is one endpoint on the loopback ifindex, where
// BPF_PROG_TEST_RUN puts the packets it runs.
type loEndpoint struct {
	dp *datapath.Datapath
	st EndpointState
	ip netip.Addr
}

func (l *loEndpoint) PolicyEndpoints() []EndpointState { return []EndpointState{l.st} }

func (l *loEndpoint) SetEndpointPolicy(want map[uint32]EndpointPolicy) error {
	p, ok := want[l.st.ID]
	if !ok {
		return nil
	}
	l.st.Identity, l.st.Flags = p.Identity, p.Flags
	if err := l.dp.UpsertEndpoint(1, datapath.EndpointInfo{ID: l.st.ID, Identity: p.Identity, IPv4: l.ip,
		PolicyIngress: p.Flags.Ingress, PolicyEgress: p.Flags.Egress}); err != nil {
		return err
	}
	return l.dp.UpsertIPCache(netip.PrefixFrom(l.ip, 32), p.Identity)
}

func (l *loEndpoint) OwnsPrefix(p netip.Prefix) bool { return p == netip.PrefixFrom(l.ip, 32) }

// packet builds Ethernet + IPv4 + a TCP SYN, UDP or SCTP INIT header.
func packet(src, dst string, proto uint8, sport, dport uint16) []byte {
	var l4 []byte
	switch proto {
	case 6:
		l4 = make([]byte, 20)
		l4[12] = 5 << 4
		l4[13] = 0x02 // SYN
	case 17:
		l4 = make([]byte, 8+4)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	case 132:
		l4 = make([]byte, 12+20)
		l4[12] = 1 // INIT chunk
		binary.BigEndian.PutUint16(l4[14:], 20)
	}
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	b := make([]byte, 14+20+len(l4))
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 1})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	ip[8] = 64
	ip[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	copy(b[34:], l4)
	return b
}

// SCTP rules, which the lab cannot probe (no SCTP sockets on this
// kernel), go through the real programs with crafted packets: policies
// compiled and written by the engine into a freshly loaded datapath.
// loadDatapath loads a fresh datapath and its two tc programs by pin name.
func loadDatapath(t *testing.T) (*datapath.Datapath, map[string]*ebpf.Program) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	root := t.TempDir()
	t.Cleanup(func() {
		if err := datapath.Cleanup(root); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = unix.Unmount(root, unix.MNT_DETACH)
	})
	dp, err := datapath.Load(datapath.Config{BPFRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	progs := map[string]*ebpf.Program{}
	for _, name := range []string{datapath.PinTCXIngress, datapath.PinTCXEgress} {
		p, err := ebpf.LoadPinnedProgram(filepath.Join(root, "progs", name), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		progs[name] = p
	}
	return dp, progs
}

func TestPrivilegedSCTPThroughDatapath(t *testing.T) {
	dp, progs := loadDatapath(t)

	c := newTestCluster(t, np("x", "sctp-from-b", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress, Egress]
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
  ports:
  - {port: 80, protocol: SCTP}
egress:
- to:
  - podSelector: {matchLabels: {pod: c}}
  ports:
  - {port: 81, protocol: SCTP}`))
	xa := c.snap.Pods[0]
	if xa.Namespace != "x" || xa.Name != "a" {
		t.Fatalf("first pod is %s/%s", xa.Namespace, xa.Name)
	}
	ep := &loEndpoint{dp: dp, st: EndpointState{ID: 7, Ifindex: 1, Namespace: "x", Name: "a", Identity: contract.IdentityInit},
		ip: netip.MustParseAddr(c.ip("x/a"))}
	eng := NewEngine(EngineConfig{Node: xa.Spec.NodeName, Datapath: dp, Endpoints: ep})
	if _, err := eng.Apply(c.snap); err != nil {
		t.Fatal(err)
	}
	if !ep.st.Flags.Ingress || !ep.st.Flags.Egress {
		t.Fatalf("enforcement not on: %+v", ep.st)
	}
	const next, drop = 0xffffffff, 2
	cases := []struct {
		name  string
		prog  string
		pkt   []byte
		want  uint32
		proto uint8
	}{
		{"SCTP from x/b to 80", datapath.PinTCXEgress, packet(c.ip("x/b"), c.ip("x/a"), 132, 5000, 80), next, 132},
		{"SCTP from x/b to 81", datapath.PinTCXEgress, packet(c.ip("x/b"), c.ip("x/a"), 132, 5001, 81), drop, 132},
		{"SCTP from x/c to 80", datapath.PinTCXEgress, packet(c.ip("x/c"), c.ip("x/a"), 132, 5002, 80), drop, 132},
		{"TCP from x/b to 80 (SCTP is not TCP)", datapath.PinTCXEgress, packet(c.ip("x/b"), c.ip("x/a"), 6, 5003, 80), drop, 6},
		{"UDP from x/b to 80", datapath.PinTCXEgress, packet(c.ip("x/b"), c.ip("x/a"), 17, 5004, 80), drop, 17},
		{"SCTP to x/c 81", datapath.PinTCXIngress, packet(c.ip("x/a"), c.ip("x/c"), 132, 5005, 81), next, 132},
		{"SCTP to x/c 80", datapath.PinTCXIngress, packet(c.ip("x/a"), c.ip("x/c"), 132, 5006, 80), drop, 132},
		{"SCTP to x/b 81", datapath.PinTCXIngress, packet(c.ip("x/a"), c.ip("x/b"), 132, 5007, 81), drop, 132},
		{"TCP to x/c 81", datapath.PinTCXIngress, packet(c.ip("x/a"), c.ip("x/c"), 6, 5008, 81), drop, 6},
	}
	for _, tc := range cases {
		ret, err := progs[tc.prog].Run(&ebpf.RunOptions{Data: tc.pkt})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ret != tc.want {
			t.Errorf("%s: returned %#x, want %#x", tc.name, ret, tc.want)
		}
		// The model agrees.
		m := NewModel(c.snap)
		var d Decision
		if tc.prog == datapath.PinTCXEgress {
			src := m.AddrEndpoint(netip.AddrFrom4([4]byte(tc.pkt[26:30])))
			d = m.Allowed(src, m.AddrEndpoint(ep.ip), binary.BigEndian.Uint16(tc.pkt[36:]), Proto(tc.proto))
		} else {
			dst := m.AddrEndpoint(netip.AddrFrom4([4]byte(tc.pkt[30:34])))
			d = m.Allowed(m.AddrEndpoint(ep.ip), dst, binary.BigEndian.Uint16(tc.pkt[36:]), Proto(tc.proto))
		}
		if d.Allowed != (tc.want == next) {
			t.Errorf("%s: model says allowed=%v", tc.name, d.Allowed)
		}
	}
	// Drops count as policy denials under the rule that names the policy.
	counters, err := dp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	drops := uint64(0)
	for _, ct := range counters {
		if ct.Reason == 133 && ct.EndpointID == 7 {
			drops += ct.Packets
			if refs := eng.Rules().Refs(ct.RuleID); len(refs) != 1 || refs[0].Name != "sctp-from-b" {
				t.Errorf("drop counted under rule %d = %v", ct.RuleID, refs)
			}
		}
	}
	if drops != 7 {
		t.Errorf("%d policy drops counted, want 7", drops)
	}
}

// endPort ranges of any width, compiled and written by the engine, through
// the real programs: 1000-65535 and 1-65535 pass exactly their ports, as
// the model and the Go mirror of the lookup say.
func TestPrivilegedPortRangesThroughDatapath(t *testing.T) {
	dp, progs := loadDatapath(t)
	c := newTestCluster(t, np("x", "tcp-1000-up-from-b", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress, Egress]
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
  ports:
  - {port: 1000, endPort: 65535, protocol: TCP}
- ports:
  - {port: 1, endPort: 65535, protocol: UDP}
egress:
- to:
  - podSelector: {matchLabels: {pod: c}}
  ports:
  - {port: 1, endPort: 65535, protocol: TCP}`))
	xa := c.snap.Pods[0]
	ep := &loEndpoint{dp: dp, st: EndpointState{ID: 7, Ifindex: 1, Namespace: "x", Name: "a", Identity: contract.IdentityInit},
		ip: netip.MustParseAddr(c.ip("x/a"))}
	eng := NewEngine(EngineConfig{Node: xa.Spec.NodeName, Datapath: dp, Endpoints: ep})
	st, err := eng.Apply(c.snap)
	if err != nil {
		t.Fatal(err)
	}
	if !ep.st.Flags.Ingress || !ep.st.Flags.Egress || st.Entries > 100 {
		t.Fatalf("enforcement %+v, %d entries", ep.st, st.Entries)
	}
	pol, err := dp.Policy()
	if err != nil {
		t.Fatal(err)
	}
	ipc, err := dp.IPCache()
	if err != nil {
		t.Fatal(err)
	}
	m := NewModel(c.snap)
	const next, drop = 0xffffffff, 2
	want := map[string]bool{ // the ports, and the model's
		"ingress x/b 30000/6": true, "ingress x/b 64000/6": true, "ingress x/b 80/6": false,
		"ingress x/c 30000/6": false, "ingress x/c 1/17": true, "ingress x/c 65535/17": true,
		"egress x/c 1/6": true, "egress x/c 30000/6": true, "egress x/c 65535/6": true, "egress x/b 30000/6": false,
	}
	ports := []uint16{1, 2, 80, 999, 1000, 1001, 1023, 1024, 30000, 32767, 32768, 64000, 65535}
	for i := range 40 {
		ports = append(ports, uint16(1+i*1637))
	}
	sport := uint16(10000)
	for _, peer := range []string{"x/b", "x/c", "y/a"} {
		for _, port := range ports {
			for _, proto := range []uint8{6, 17} {
				for _, egress := range []bool{false, true} {
					sport++
					prog, dir, pkt := datapath.PinTCXEgress, contract.DirectionIngress, packet(c.ip(peer), c.ip("x/a"), proto, sport, port)
					src, dst := m.AddrEndpoint(netip.MustParseAddr(c.ip(peer))), m.AddrEndpoint(ep.ip)
					if egress {
						prog, dir, pkt = datapath.PinTCXIngress, contract.DirectionEgress, packet(c.ip("x/a"), c.ip(peer), proto, sport, port)
						src, dst = dst, src
					}
					name := fmt.Sprintf("%s %s %d/%d", map[bool]string{false: "ingress", true: "egress"}[egress], peer, port, proto)
					ret, err := progs[prog].Run(&ebpf.RunOptions{Data: pkt})
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if ret != next && ret != drop {
						t.Fatalf("%s: returned %#x", name, ret)
					}
					allowed := ret == next
					if d := m.Allowed(src, dst, port, Proto(proto)); d.Allowed != allowed {
						t.Errorf("%s: datapath allowed=%v, model %v (%s)", name, allowed, d.Allowed, d.Reason)
					}
					peerID := IPCacheLookup(ipc, netip.MustParseAddr(c.ip(peer)))
					if v := Lookup(pol, 7, peerID, port, proto, dir); v.Allowed != allowed {
						t.Errorf("%s: datapath allowed=%v, Lookup %+v", name, allowed, v)
					}
					if w, ok := want[name]; ok && w != allowed {
						t.Errorf("%s: allowed=%v, want %v", name, allowed, w)
					}
					delete(want, name)
				}
			}
		}
	}
	if len(want) > 0 {
		t.Errorf("not run: %v", want)
	}
}

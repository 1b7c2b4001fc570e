package datapath

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/loupe-project/loupe/contract"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// localPod is one pod of localNode, plumbed as loupe-cni plumbs a pod: /32
// and /128 addresses, default routes via the node's gateways, a host veth
// with a /32 and /128 route to it.
type localPod struct {
	ns        netns.NsHandle
	ip4, ip6  netip.Addr
	hostIf    string
	hostIndex int
	hostMAC   [6]byte
	podMAC    [6]byte
}

func (p *localPod) endpoint(id uint32, policyIngress bool) EndpointInfo {
	return EndpointInfo{ID: id, Identity: 1000 + id, IPv4: p.ip4, IPv6: p.ip6,
		PolicyIngress: policyIngress, PodMAC: p.podMAC, HostMAC: p.hostMAC}
}

// localNode builds a node netns with two pods and loads the datapath on
// it. The thread is left in the node's namespace; forwarding is the
// node's IPv4 and IPv6 forwarding sysctl.
func localNode(t *testing.T, noRedirect, forwarding bool) (d *Datapath, a, b *localPod) {
	t.Helper()
	suffix := rand.Uint32()
	a = &localPod{ns: newNetns(t, fmt.Sprintf("loupe-ld-a-%08x", suffix)),
		ip4: netip.MustParseAddr("10.210.0.2"), ip6: netip.MustParseAddr("fd10::2"), hostIf: "lxcld0"}
	b = &localPod{ns: newNetns(t, fmt.Sprintf("loupe-ld-b-%08x", suffix)),
		ip4: netip.MustParseAddr("10.210.0.3"), ip6: netip.MustParseAddr("fd10::3"), hostIf: "lxcld1"}
	node := newNetns(t, fmt.Sprintf("loupe-ld-node-%08x", suffix))

	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		v := "0"
		if forwarding {
			v = "1"
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
	// The IPv4 gateway, on lo: this kernel may have no dummy links.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	mustAddrAdd(t, lo, "169.254.1.1/32", 0)
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*localPod{a, b} {
		const podIf = "ldpeer"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.hostIf}, PeerName: podIf}); err != nil {
			t.Fatalf("veth: %v", err)
		}
		host, err := netlink.LinkByName(p.hostIf)
		if err != nil {
			t.Fatal(err)
		}
		peer, err := netlink.LinkByName(podIf)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetNsFd(peer, int(p.ns)); err != nil {
			t.Fatal(err)
		}
		p.hostIndex = host.Attrs().Index
		copy(p.hostMAC[:], host.Attrs().HardwareAddr)
		mustAddrAdd(t, host, "fe80::1/64", unix.IFA_F_NODAD)
		if err := netlink.LinkSetUp(host); err != nil {
			t.Fatal(err)
		}
		for _, dst := range []netip.Prefix{netip.PrefixFrom(p.ip4, 32), netip.PrefixFrom(p.ip6, 128)} {
			r := netlink.Route{LinkIndex: p.hostIndex, Dst: ipNet(dst), Scope: netlink.SCOPE_LINK}
			if dst.Addr().Is6() {
				r.Scope = netlink.SCOPE_UNIVERSE
			}
			if err := netlink.RouteAdd(&r); err != nil {
				t.Fatalf("route %s: %v", dst, err)
			}
		}

		setNetns(t, p.ns)
		peer, err = netlink.LinkByName(podIf)
		if err != nil {
			t.Fatal(err)
		}
		copy(p.podMAC[:], peer.Attrs().HardwareAddr)
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+podIf+"/accept_dad", []byte("0"), 0); err != nil {
			t.Fatal(err)
		}
		mustAddrAdd(t, peer, netip.PrefixFrom(p.ip4, 32).String(), 0)
		mustAddrAdd(t, peer, netip.PrefixFrom(p.ip6, 128).String(), unix.IFA_F_NODAD)
		if err := netlink.LinkSetUp(peer); err != nil {
			t.Fatal(err)
		}
		for _, r := range []netlink.Route{
			{LinkIndex: peer.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: net.ParseIP("169.254.1.1"), Flags: int(netlink.FLAG_ONLINK)},
			{LinkIndex: peer.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("::/0")), Gw: net.ParseIP("fe80::1"), Flags: int(netlink.FLAG_ONLINK)},
		} {
			if err := netlink.RouteAdd(&r); err != nil {
				t.Fatalf("pod route %s: %v", r.Dst, err)
			}
		}
		setNetns(t, node)
	}

	root := t.TempDir()
	t.Cleanup(func() {
		_ = Cleanup(root)
		if ok, _ := isBPFFS(root); ok {
			_ = unix.Unmount(root, unix.MNT_DETACH)
		}
	})
	if d, err = Load(Config{BPFRoot: root, NoLocalRedirect: noRedirect}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for i, p := range []*localPod{a, b} {
		if err := d.UpsertEndpoint(uint32(p.hostIndex), p.endpoint(uint32(i+1), false)); err != nil {
			t.Fatal(err)
		}
		if err := Attach(root, p.hostIf, XDPOff); err != nil {
			t.Fatal(err)
		}
	}
	drainEvents(t, d) // the pods' own neighbour discovery
	return d, a, b
}

func mustAddrAdd(t *testing.T, l netlink.Link, cidr string, flags int) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	a.Flags = flags
	if err := netlink.AddrAdd(l, a); err != nil {
		t.Fatalf("addr %s: %v", cidr, err)
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func txPackets(t *testing.T, ifname string) uint64 {
	t.Helper()
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics.TxPackets
}

// udpExchange sends n datagrams from a to b on port and has b answer each;
// it returns once every answer arrived.
func udpExchange(t *testing.T, node netns.NsHandle, a, b *localPod, dst netip.Addr, sport, port uint16, n int) {
	t.Helper()
	network := "udp4"
	src := a.ip4
	if dst.Is6() {
		network, src = "udp6", a.ip6
	}
	setNetns(t, b.ns)
	srv, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, port)))
	setNetns(t, a.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl, err := net.DialUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, sport)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, port)))
	setNetns(t, node)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			k, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteToUDPAddrPort(buf[:k], from)
		}
	}()
	buf := make([]byte, 64)
	for i := range n {
		if _, err := cl.Write([]byte(fmt.Sprintf("ping %d", i))); err != nil {
			t.Fatal(err)
		}
		_ = cl.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := cl.Read(buf); err != nil {
			t.Fatalf("%s answer %d: %v", dst, i, err)
		}
	}
}

// eventView is an event without what differs between two identical runs
// (time, interface numbers, MACs), the MACs and hop count checked apart.
type eventView struct {
	Type, ObsPoint, Verdict, DropReason, Proto, Flags, Direction uint8
	EndpointID, SrcIdentity, DstIdentity                         uint32
	Src, Dst                                                     netip.Addr
	SrcPort, DstPort                                             uint16
	PacketLen                                                    uint32
	PacketsFwd, PacketsRev                                       uint64
	TTL                                                          uint8
}

// checkFrames checks each event's interface and frame against what the
// host's forwarding makes of it: from the pod to its gateway on the way
// out, from the destination's gateway to the destination, one hop less,
// on the way in.
func checkFrames(t *testing.T, evs []Event, a, b *localPod) []eventView {
	t.Helper()
	var out []eventView
	for _, e := range evs {
		pod := a
		if e.EndpointID == 2 {
			pod = b
		}
		wantDst, wantSrc, wantTTL := pod.hostMAC, pod.podMAC, uint8(64)
		if e.Direction == contract.DirectionIngress {
			wantDst, wantSrc, wantTTL = pod.podMAC, pod.hostMAC, 63
		}
		ttlAt := 14 + 8
		if e.Family == 6 {
			ttlAt = 14 + 7
		}
		if e.Ifindex != uint32(pod.hostIndex) || len(e.Data) <= ttlAt ||
			[6]byte(e.Data[0:6]) != wantDst || [6]byte(e.Data[6:12]) != wantSrc || e.Data[ttlAt] != wantTTL {
			t.Errorf("event %+v: want ifindex %d, frame %x <- %x, ttl %d", e, pod.hostIndex, wantDst, wantSrc, wantTTL)
			continue
		}
		out = append(out, eventView{e.Type, e.ObsPoint, e.Verdict, e.DropReason, e.Proto, e.Flags, e.Direction,
			e.EndpointID, e.SrcIdentity, e.DstIdentity, e.Src, e.Dst, e.SrcPort, e.DstPort, e.PacketLen,
			e.PacketsFwd, e.PacketsRev, e.Data[ttlAt]})
	}
	return out
}

// localRun is one run of the same traffic between two pods of a node.
type localRun struct {
	views []eventView
	txB   uint64 // packets sent by the kernel on b's host veth
}

func runLocalTraffic(t *testing.T, noRedirect, forwarding bool) localRun {
	runtime.LockOSThread() // moves between namespaces; discarded with the goroutine
	hostNS, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Set(hostNS); hostNS.Close() })
	d, a, b := localNode(t, noRedirect, forwarding)
	node, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	const n = 20
	tx0 := txPackets(t, b.hostIf)
	udpExchange(t, node, a, b, b.ip4, 40000, 9999, n)
	udpExchange(t, node, a, b, b.ip6, 40001, 9999, n)
	txB := txPackets(t, b.hostIf) - tx0

	// b's ingress policy on, with no rule: a new datagram is dropped in
	// b's direction, on b's interface, after a's egress let it out.
	if err := d.UpsertEndpoint(uint32(b.hostIndex), b.endpoint(2, true)); err != nil {
		t.Fatal(err)
	}
	setNetns(t, a.ns)
	c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.ip4, 40002)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.ip4, 9998)))
	if err == nil {
		_, err = c.Write([]byte("denied"))
		c.Close()
	}
	setNetns(t, node)
	if err != nil {
		t.Fatal(err)
	}
	evs := drainEvents(t, d)
	var drops int
	for _, e := range evs {
		if e.DropReason == contract.DropPolicyDenied && e.Direction == contract.DirectionIngress && e.EndpointID == 2 {
			drops++
		}
	}
	if drops != 1 {
		t.Errorf("policy drops into b: %d, want 1", drops)
	}
	return localRun{views: checkFrames(t, evs, a, b), txB: txB}
}

// Packets between two pods of a node go from the source's program straight
// into the destination pod, past the host's forwarding (off here), and
// every event, counter and verdict of the destination's side is the same
// as when the host routes them through the to-pod program.
func TestPrivilegedLocalDelivery(t *testing.T) {
	requireRoot(t)
	var redirected, routed localRun
	t.Run("redirect", func(t *testing.T) {
		redirected = runLocalTraffic(t, false, false)
	})
	t.Run("routing", func(t *testing.T) {
		routed = runLocalTraffic(t, true, true)
	})
	if t.Failed() {
		return
	}
	// 40 datagrams reached b: through its host veth only when routed.
	if redirected.txB >= 10 || routed.txB < 40 {
		t.Errorf("b's host veth sent %d packets redirected, %d routed; want under 10 (neighbour discovery) and at least 40", redirected.txB, routed.txB)
	}
	if len(redirected.views) != len(routed.views) {
		t.Fatalf("%d events redirected, %d routed:\n%+v\n%+v", len(redirected.views), len(routed.views), redirected.views, routed.views)
	}
	for i := range redirected.views {
		if redirected.views[i] != routed.views[i] {
			t.Errorf("event %d: redirected %+v, routed %+v", i, redirected.views[i], routed.views[i])
		}
	}
}

// An endpoint whose MACs are unknown, or removed, has no delivery entry:
// its packets are routed.
func TestPrivilegedLocalDeliveryEntries(t *testing.T) {
	d := newTestDatapath(t, Config{})
	ep := EndpointInfo{ID: 3, Identity: 9, IPv4: podIP, IPv6: podIP6,
		PodMAC: [6]byte{2, 0, 0, 0, 0, 3}, HostMAC: [6]byte{2, 0, 0, 0, 0, 4}}
	entries := func() map[loupeLocalKey]loupeLocalEp {
		out := map[loupeLocalKey]loupeLocalEp{}
		var (
			k loupeLocalKey
			v loupeLocalEp
		)
		it := d.objs.LocalEps.Iterate()
		for it.Next(&k, &v) {
			out[k] = v
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if err := d.UpsertEndpoint(7, ep); err != nil {
		t.Fatal(err)
	}
	got := entries()
	want := loupeLocalEp{Ifindex: 7, PodMac: ep.PodMAC, HostMac: ep.HostMAC}
	if len(got) != 2 || got[localKey(podIP)] != want || got[localKey(podIP6)] != want {
		t.Fatalf("entries %+v", got)
	}
	if eps, err := d.Endpoints(); err != nil || eps[7] != ep {
		t.Fatalf("endpoints read back %+v (%v), want %+v", eps, err, ep)
	}
	// The IPv6 address moves to endpoint 8; endpoint 7 loses it, and then
	// its MACs, without taking 8's entry.
	ep8 := EndpointInfo{ID: 4, IPv6: podIP6, PodMAC: [6]byte{2, 0, 0, 0, 0, 5}, HostMAC: [6]byte{2, 0, 0, 0, 0, 6}}
	if err := d.UpsertEndpoint(8, ep8); err != nil {
		t.Fatal(err)
	}
	ep.IPv6 = netip.Addr{}
	if err := d.UpsertEndpoint(7, ep); err != nil {
		t.Fatal(err)
	}
	if got := entries(); len(got) != 2 || got[localKey(podIP)].Ifindex != 7 || got[localKey(podIP6)].Ifindex != 8 {
		t.Fatalf("after the move: %+v", got)
	}
	ep.PodMAC = [6]byte{}
	if err := d.UpsertEndpoint(7, ep); err != nil {
		t.Fatal(err)
	}
	if got := entries(); len(got) != 1 || got[localKey(podIP6)].Ifindex != 8 {
		t.Fatalf("without MACs: %+v", got)
	}
	if err := d.DeleteEndpoint(8); err != nil {
		t.Fatal(err)
	}
	if got := entries(); len(got) != 0 {
		t.Fatalf("after delete: %+v", got)
	}
}

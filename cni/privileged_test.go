package cni_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
	"github.com/loupe-project/loupe/cni"
	"github.com/loupe-project/loupe/cni/cniclient"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// endpointID returns the agent's endpoint id of an attachment.
func (n *node) endpointID(att cniclient.Attachment) uint32 {
	n.t.Helper()
	for _, e := range n.list().GetEndpoints() {
		if e.GetContainerId() == att.ContainerID && e.GetIfname() == att.IfName {
			return e.GetId()
		}
	}
	n.t.Fatalf("no endpoint for %s", att.ContainerID)
	return 0
}

func TestPrivilegedTwoPodsTalk(t *testing.T) {
	n := newNode(t, nodeOpts{xdp: "native"})
	a, b := n.addPod("a"), n.addPod("b")

	prefix := netip.MustParsePrefix(n.podCIDR)
	gw := prefix.Addr().Next()
	for _, p := range []*pod{a, b} {
		if !prefix.Contains(p.ip) || p.ip == gw {
			t.Fatalf("pod address %s not a pod address of %s", p.ip, prefix)
		}
		r := p.res
		if len(r.Interfaces) != 2 || r.Interfaces[0].Name != hostIfname(p.att) || r.Interfaces[1].Sandbox != p.att.Netns {
			t.Fatalf("interfaces %v", r.Interfaces)
		}
		if len(r.IPs) != 1 || *r.IPs[0].Interface != 1 || r.IPs[0].Gateway.String() != gw.String() {
			t.Fatalf("ips %v", r.IPs)
		}
		if len(r.Routes) != 1 || r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[0].GW.String() != gw.String() {
			t.Fatalf("routes %v", r.Routes)
		}
		if err := n.check(p.att); err != nil {
			t.Fatalf("CHECK %s: %v", p.att.PodName, err)
		}
	}
	if a.ip == b.ip {
		t.Fatalf("both pods got %s", a.ip)
	}

	if err := ping(a.att.Netns, b.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := ping(b.att.Netns, a.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	clientPort, _ := tcpExchange(t, a, b, 8080)

	dp := n.openDatapath()
	idA, idB := n.endpointID(a.att), n.endpointID(b.att)
	ctrs, err := dp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	fwd := map[[2]uint32]uint64{} // (endpoint, direction) -> forwarded packets
	for _, c := range ctrs {
		if c.Reason == contract.VerdictForwarded {
			fwd[[2]uint32{c.EndpointID, uint32(c.Direction)}] += c.Packets
		}
	}
	for _, k := range [][2]uint32{{idA, uint32(contract.DirectionEgress)}, {idA, uint32(contract.DirectionIngress)}, {idB, uint32(contract.DirectionEgress)}, {idB, uint32(contract.DirectionIngress)}} {
		if fwd[k] == 0 {
			t.Errorf("no forwarded packets counted for endpoint %d direction %d; counters %+v", k[0], k[1], ctrs)
		}
	}
	cts, err := dp.Conntrack()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range cts {
		if e.Proto == 6 && e.Src == a.ip && e.Dst == b.ip && e.SrcPort == clientPort && e.DstPort == 8080 && e.Direction == contract.DirectionEgress {
			found = e.PacketsFwd >= 3 && e.PacketsRev >= 2
			if !found {
				t.Errorf("conntrack entry with few packets: %+v", e)
			}
		}
	}
	if !found {
		t.Errorf("no conntrack entry %s:%d -> %s:8080 among %+v", a.ip, clientPort, b.ip, cts)
	}
	n.checkFlowEvents(t, a.ip, b.ip, clientPort, 8080)
}

// tcpExchange has a send a line to a server in b and read it back; it
// returns the client's port.
func tcpExchange(t *testing.T, a, b *pod, port uint16) (uint16, net.Conn) {
	t.Helper()
	return tcpExchangeTo(t, a, b, b.ip, port)
}

func tcpExchangeTo(t *testing.T, a, b *pod, dst netip.Addr, port uint16) (uint16, net.Conn) {
	t.Helper()
	ln, err := listenTCP(b.att.Netns, dst, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go echoServer(ln)
	c, err := dialTCP(a.att.Netns, netip.AddrPortFrom(dst, port))
	if err != nil {
		t.Fatalf("dial %s:%d from %s: %v", dst, port, a.att.PodName, err)
	}
	t.Cleanup(func() { c.Close() })
	roundTrip(t, c, "hello loupe\n")
	return uint16(c.LocalAddr().(*net.TCPAddr).Port), c
}

func echoServer(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("tcp write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("tcp read: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("tcp echo: got %q", buf)
	}
}

func TestPrivilegedForgedSourceDropped(t *testing.T) {
	// With XDP off the TCX ingress program must drop on its own.
	for _, mode := range []string{"native", "off"} {
		t.Run("xdp="+mode, func(t *testing.T) {
			n := newNode(t, nodeOpts{xdp: mode})
			a, b := n.addPod("a"), n.addPod("b")
			if err := ping(a.att.Netns, b.ip, 10*time.Second); err != nil {
				t.Fatal(err) // the path works for honest packets
			}
			// Listen in b: a forged datagram that got through would arrive.
			var uc *net.UDPConn
			if err := inNS(b.att.Netns, func() error {
				var err error
				uc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: b.ip.AsSlice(), Port: 9999})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer uc.Close()

			forged := netip.MustParseAddr("192.0.2.66")
			dp := n.openDatapath()
			idA := n.endpointID(a.att)
			before := dropped(t, dp, idA)
			const sent = 5
			for range sent {
				if err := sendForgedUDP(a.att.Netns, forged, b.ip, 40000, 9999); err != nil {
					t.Fatal(err)
				}
			}
			if err := poll(5*time.Second, func() error {
				if got := dropped(t, dp, idA) - before; got < sent {
					return fmt.Errorf("%d of %d forged packets counted under reason 132", got, sent)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			_ = uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, from, err := uc.ReadFromUDP(make([]byte, 100)); err == nil {
				t.Fatalf("forged datagram from %v reached pod b", from)
			}
			n.checkDropEvent(t, forged, b.ip, 40000, 9999)
		})
	}
}

// dropped is the count of reason-132 drops from endpoint id.
func dropped(t *testing.T, dp *datapath.Datapath, id uint32) uint64 {
	t.Helper()
	ctrs, err := dp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range ctrs {
		if c.Reason == contract.DropInvalidSourceIP && c.EndpointID == id && c.Direction == contract.DirectionEgress {
			n += c.Packets
		}
	}
	return n
}

func TestPrivilegedAddDelAddSameContainer(t *testing.T) {
	n := newNode(t, nodeOpts{})
	peer := n.addPod("peer")
	att := n.attachment(n.newPodNetns(), "again")
	var ip netip.Addr
	for i := range 2 {
		p, err := n.add(att)
		if err != nil {
			t.Fatalf("ADD #%d: %v", i+1, err)
		}
		if err := n.check(att); err != nil {
			t.Fatalf("CHECK #%d: %v", i+1, err)
		}
		if err := ping(att.Netns, peer.ip, 10*time.Second); err != nil {
			t.Fatalf("after ADD #%d: %v", i+1, err)
		}
		ip = p.ip
		if err := n.del(att); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
		n.assertGone(t, att, ip)
	}
	// DEL twice, and DEL of an attachment never added, both succeed.
	if err := n.del(att); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if err := n.del(n.attachment(att.Netns, "never")); err != nil {
		t.Fatalf("DEL of unknown attachment: %v", err)
	}
	// The pod netns itself gone: DEL still succeeds and cleans up.
	p, err := n.add(att)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd("ip", "netns", "del", filepath.Base(att.Netns)); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := n.del(att); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}
	n.assertGone(t, att, p.ip)
	if out, err := runCmd("ip", "netns", "add", filepath.Base(att.Netns)); err != nil { // for the cleanup's del
		t.Fatalf("%v: %s", err, out)
	}
}

func TestPrivilegedDualStack(t *testing.T) {
	n := newNode(t, nodeOpts{podCIDR: "10.244.9.0/24,fd00:10:244:9::/64", xdp: "native"})
	a, b := n.addPod("a"), n.addPod("b")
	v6 := netip.MustParsePrefix("fd00:10:244:9::/64")
	for _, p := range []*pod{a, b} {
		if !v6.Contains(p.ip6) || !p.ip.Is4() {
			t.Fatalf("addresses %s %s", p.ip, p.ip6)
		}
		r := p.res
		if len(r.IPs) != 2 || r.IPs[1].Address.String() != p.ip6.String()+"/128" || r.IPs[1].Gateway.String() != cni.GatewayIPv6.String() {
			t.Fatalf("ips %v", r.IPs)
		}
		if len(r.Routes) != 2 || r.Routes[1].Dst.String() != "::/0" || r.Routes[1].GW.String() != "fe80::1" {
			t.Fatalf("routes %v", r.Routes)
		}
		if err := n.check(p.att); err != nil {
			t.Fatalf("CHECK: %v", err)
		}
	}
	sport, _ := tcpExchangeTo(t, a, b, b.ip6, 8086)
	n.checkFlowEvents(t, a.ip6, b.ip6, sport, 8086)
	if err := ping(a.att.Netns, b.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestPrivilegedCheckDetectsDamage(t *testing.T) {
	n := newNode(t, nodeOpts{})
	p := n.addPod("a")
	if err := n.check(p.att); err != nil {
		t.Fatal(err)
	}
	// Remove the pod's default route: CHECK must notice.
	if err := inNS(p.att.Netns, func() error {
		return netlink.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Gw: p.res.IPs[0].Gateway})
	}); err != nil {
		t.Fatal(err)
	}
	if err := n.check(p.att); err == nil || !strings.Contains(err.Error(), "route") {
		t.Fatalf("CHECK after removing the default route: %v", err)
	}
	// Detach the datapath behind the plugin's back: CHECK must notice.
	q := n.addPod("b")
	if err := datapath.Detach(n.bpfRoot, hostIfname(q.att)); err != nil {
		t.Fatal(err)
	}
	if err := n.check(q.att); err == nil || !strings.Contains(err.Error(), "datapath") {
		t.Fatalf("CHECK after detaching: %v", err)
	}
}

func TestPrivilegedAgentRestart(t *testing.T) {
	n := newNode(t, nodeOpts{xdp: "generic"})
	a, b := n.addPod("a"), n.addPod("b")
	_, conn := tcpExchange(t, a, b, 7070)

	n.stopAgent()
	n.startAgent()

	roundTrip(t, conn, "still here after the restart\n")
	for _, p := range []*pod{a, b} {
		if err := n.check(p.att); err != nil {
			t.Fatalf("CHECK %s after restart: %v", p.att.PodName, err)
		}
	}
	c := n.addPod("c")
	if c.ip == a.ip || c.ip == b.ip {
		t.Fatalf("new pod reuses %s", c.ip)
	}
	if err := ping(c.att.Netns, a.ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, conn, "and after a new pod\n")
}

func TestPrivilegedConcurrentAdds(t *testing.T) {
	n := newNode(t, nodeOpts{})
	const pods = 50
	atts := make([]cniclient.Attachment, pods)
	for i := range atts {
		atts[i] = n.attachment(n.newPodNetns(), fmt.Sprintf("p%d", i))
	}
	res := make([]*pod, pods)
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i := range atts {
		wg.Go(func() { res[i], errs[i] = n.add(atts[i]) })
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, err := range errs {
		if err != nil {
			t.Errorf("ADD %d: %v", i, err)
			continue
		}
		if j, dup := seen[res[i].ip]; dup {
			t.Errorf("pods %d and %d both got %s", j, i, res[i].ip)
		}
		seen[res[i].ip] = i
	}
	if len(seen) != pods {
		t.Fatalf("%d distinct addresses for %d pods", len(seen), pods)
	}
	if err := ping(atts[0].Netns, res[pods-1].ip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := range atts {
		wg.Go(func() { errs[i] = n.del(atts[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("DEL %d: %v", i, err)
		}
	}
	n.assertEmpty(t)
}

// assertEmpty checks that the node holds no pod state at all.
func (n *node) assertEmpty(t *testing.T) {
	t.Helper()
	if l := n.hostVeths(); len(l) > 0 {
		t.Errorf("host veths left: %v", l)
	}
	if r := n.podRoutes(); len(r) > 0 {
		t.Errorf("routes left: %v", r)
	}
	if p := n.linkPins(); len(p) > 0 {
		t.Errorf("link pins left: %v", p)
	}
	l := n.list()
	if len(l.GetEndpoints()) > 0 || len(l.GetAllocations()) > 0 {
		t.Errorf("agent still holds %d endpoints, %d allocations", len(l.GetEndpoints()), len(l.GetAllocations()))
	}
	dp := n.openDatapath()
	eps, err := dp.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) > 0 {
		t.Errorf("endpoint map entries left: %v", eps)
	}
}

func TestPrivilegedAddDelCyclesLeakNothing(t *testing.T) {
	n := newNode(t, nodeOpts{})
	cycles := 200
	if testing.Short() {
		cycles = 20
	}
	podNS := n.newPodNetns()
	ips := map[netip.Addr]bool{}
	for i := range cycles {
		att := n.attachment(podNS, fmt.Sprintf("cycle%d", i))
		p, err := n.add(att)
		if err != nil {
			t.Fatalf("cycle %d ADD: %v", i, err)
		}
		ips[p.ip] = true
		if err := n.del(att); err != nil {
			t.Fatalf("cycle %d DEL: %v", i, err)
		}
	}
	n.assertEmpty(t)
	// The pod netns is as it started: only lo.
	if err := inNS(podNS, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		if len(links) != 1 {
			return fmt.Errorf("pod netns has %d links", len(links))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	t.Logf("%d cycles used %d distinct addresses", cycles, len(ips))
}

func TestPrivilegedAgentDown(t *testing.T) {
	n := newNode(t, nodeOpts{})
	p := n.addPod("a")
	ctx := context.Background()
	if err := n.client.Status(ctx); err != nil {
		t.Fatalf("STATUS with the agent up: %v", err)
	}

	n.stopAgent()
	if err := n.client.Status(ctx); cniclient.Code(err) != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS with the agent down: want 50, got %v", err)
	}
	att := n.attachment(n.newPodNetns(), "b")
	_, err := n.add(att)
	if cniclient.Code(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), n.socket) {
		t.Fatalf("ADD with the agent down: want 11 naming %s, got %v", n.socket, err)
	}
	// DEL removes the veth and succeeds, so a pod's deletion never waits
	// for the agent; the agent releases the rest once it sees the veth gone.
	if err := n.del(p.att); err != nil {
		t.Fatalf("DEL with the agent down: %v", err)
	}
	if slices.Contains(n.hostVeths(), hostIfname(p.att)) {
		t.Fatal("DEL with the agent down left the host veth")
	}

	n.startAgent()
	n.assertGone(t, p.att, p.ip)
	if err := n.del(p.att); err != nil {
		t.Fatalf("DEL again with the agent back: %v", err)
	}
	if err := n.client.Status(ctx); err != nil {
		t.Fatalf("STATUS after restart: %v", err)
	}
}

// An ADD that comes while the agent is not up yet (the init container
// wrote the conflist, the agent is still starting) waits for it and
// succeeds, instead of failing into the runtime's backoff.
func TestPrivilegedAddWaitsForAgent(t *testing.T) {
	n := newNode(t, nodeOpts{})
	n.stopAgent()
	conflist := bytes.Replace(n.conflist, []byte(`"agentWaitSeconds":1`), []byte(`"agentWaitSeconds":30`), 1)
	stderr := &lockedBuffer{}
	c, err := cniclient.New(n.netns, []string{binaries(t)}, conflist, cniclient.Options{CacheDir: t.TempDir(), Stderr: stderr})
	if err != nil {
		t.Fatal(err)
	}
	att := n.attachment(n.newPodNetns(), "early")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Add(ctx, att)
		done <- err
	}()
	// The agent comes up 2 s after the ADD started. (libcni hands over the
	// plugin's stderr only when it exits, so the log is checked after.)
	select {
	case err := <-done:
		t.Fatalf("ADD returned before the agent started: %v", err)
	case <-time.After(2 * time.Second):
	}
	n.startAgent()
	if err := <-done; err != nil {
		t.Fatalf("ADD that waited for the agent: %v", err)
	}
	if !strings.Contains(stderr.String(), "waiting for the agent") {
		t.Fatalf("the plugin did not log that it waited:\n%s", stderr.String())
	}
	if err := c.Check(ctx, att); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := c.Del(ctx, att); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	n.assertGone(t, att, netip.Addr{})
}

func TestPrivilegedGC(t *testing.T) {
	n := newNode(t, nodeOpts{})
	keep, viaCache := n.addPod("keep"), n.addPod("drop-cached")
	// drop-uncached is ADDed through a client with its own cache, so only
	// the plugin's GC (from the agent's records), not libcni's cached-DEL
	// pass, can find it.
	other, err := cniclient.New(n.netns, []string{binaries(t)}, n.conflist, cniclient.Options{CacheDir: t.TempDir(), Stderr: n.stderr})
	if err != nil {
		t.Fatal(err)
	}
	uncachedAtt := n.attachment(n.newPodNetns(), "drop-uncached")
	uncached, err := other.Add(context.Background(), uncachedAtt)
	if err != nil {
		t.Fatal(err)
	}
	uncachedIP, _ := netip.AddrFromSlice(uncached.IPs[0].Address.IP)
	// An ADD that died after Allocate: an allocation and a stray veth.
	api, closeConn := n.agentAPI()
	defer closeConn()
	if _, err := api.Allocate(context.Background(), &endpointv1.AllocateRequest{ContainerId: "died", Ifname: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := inNS(n.netns, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: cni.HostIfname("died", "eth0")}, PeerName: "diedp"})
	}); err != nil {
		t.Fatal(err)
	}

	err = n.client.GC(context.Background(), []types.GCAttachment{{ContainerID: keep.att.ContainerID, IfName: keep.att.IfName}})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	n.assertGone(t, viaCache.att, viaCache.ip)
	n.assertGone(t, uncachedAtt, uncachedIP.Unmap())
	n.assertGone(t, cniclient.Attachment{ContainerID: "died", IfName: "eth0"}, netip.Addr{})
	if err := n.check(keep.att); err != nil {
		t.Fatalf("CHECK of the kept pod: %v", err)
	}
	l := n.list()
	if len(l.GetEndpoints()) != 1 || len(l.GetAllocations()) != 0 {
		t.Fatalf("after GC the agent has %d endpoints and %d bare allocations", len(l.GetEndpoints()), len(l.GetAllocations()))
	}
}

func TestPrivilegedAddRollback(t *testing.T) {
	n := newNode(t, nodeOpts{})
	// Fails in the pod netns, after the veth exists: a default route is
	// already there.
	att := n.attachment(n.newPodNetns(), "busy")
	if err := inNS(att.Netns, func() error {
		// A veth, not a dummy: this kernel has no dummy module.
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "d0"}, PeerName: "d1"}); err != nil {
			return err
		}
		d, err := netlink.LinkByName("d0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(d); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: d.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Scope: netlink.SCOPE_LINK})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.add(att); err == nil {
		t.Fatal("ADD succeeded over an existing default route")
	}
	n.assertGone(t, att, netip.Addr{})
	if err := inNS(att.Netns, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			return errors.New("eth0 left in the pod")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// Fails at the last step, attaching: a non-empty directory where the
	// TCX ingress link pin belongs.
	att2 := n.attachment(n.newPodNetns(), "attachfail")
	blocker := filepath.Join(n.bpfRoot, "links", hostIfname(att2), "tcx_ingress", "x")
	if err := os.MkdirAll(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := n.add(att2)
	if err == nil || !strings.Contains(err.Error(), "attach") {
		t.Fatalf("ADD with a blocked pin: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(n.bpfRoot, "links", hostIfname(att2))); err != nil {
		t.Fatal(err)
	}
	n.assertGone(t, att2, netip.Addr{})
	if l := n.list(); len(l.GetAllocations()) != 0 || len(l.GetEndpoints()) != 0 {
		t.Fatalf("rollback left %v", l)
	}
}

func TestPrivilegedOlderSpecVersions(t *testing.T) {
	for _, v := range []string{"0.4.0", "1.0.0"} {
		t.Run(v, func(t *testing.T) {
			n := newNode(t, nodeOpts{version: v})
			info, err := n.client.Version(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(info.SupportedVersions(), ","); got != "0.4.0,1.0.0,1.1.0" {
				t.Fatalf("VERSION: %s", got)
			}
			a, b := n.addPod("a"), n.addPod("b")
			if err := n.check(a.att); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			if err := ping(a.att.Netns, b.ip, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}

package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/loupe-project/loupe/contract"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// svcNode is a node netns with pods behind host veths carrying the
// datapath, as the agent sets them up: /32 pod addresses routed by the node.
type svcNode struct {
	t    testing.TB
	d    *Datapath
	node string
	pods map[string]netns.NsHandle
	ips  map[string]netip.Addr
}

func sh(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNsHandle runs fn on a thread in ns; sockets made there stay in ns.
func inNsHandle(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func newSvcNode(t testing.TB, pods map[string]string) *svcNode {
	requireRoot(t)
	suffix := rand.Uint32()
	n := &svcNode{t: t, node: fmt.Sprintf("loupe-svc-node-%08x", suffix), pods: map[string]netns.NsHandle{}, ips: map[string]netip.Addr{}}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.node).Run() })
	sh(t, "ip", "netns", "add", n.node)
	sh(t, "ip", "-n", n.node, "link", "set", "lo", "up")
	sh(t, "ip", "-n", n.node, "addr", "add", "169.254.1.1/32", "dev", "lo")
	sh(t, "ip", "netns", "exec", n.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for name, ip := range pods {
		ns := fmt.Sprintf("loupe-svc-%s-%08x", name, suffix)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "netns", "add", ns)
		host := "lxs" + name
		sh(t, "ip", "-n", n.node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
		sh(t, "ip", "-n", n.node, "link", "set", host, "up")
		sh(t, "ip", "netns", "exec", n.node, "sysctl", "-qw", "net.ipv4.conf."+host+".proxy_arp=1")
		sh(t, "ip", "-n", n.node, "route", "add", ip+"/32", "dev", host)
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
		sh(t, "ip", "-n", ns, "addr", "add", ip+"/32", "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		sh(t, "ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
		h, err := netns.GetFromName(ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		n.pods[name], n.ips[name] = h, netip.MustParseAddr(ip)
	}
	n.d = newTestDatapath(t, Config{})
	nodeNS, err := netns.GetFromName(n.node)
	if err != nil {
		t.Fatal(err)
	}
	defer nodeNS.Close()
	id := uint32(1)
	for name := range pods {
		id++
		err := inNsHandle(nodeNS, func() error {
			if err := Attach(n.d.BPFRoot(), "lxs"+name, XDPOff); err != nil {
				return err
			}
			l, err := netlink.LinkByName("lxs" + name)
			if err != nil {
				return err
			}
			return n.d.UpsertEndpoint(uint32(l.Attrs().Index), EndpointInfo{ID: id, Identity: 2000 + id, IPv4: n.ips[name], PolicyEgress: name == "client"})
		})
		if err != nil {
			t.Fatalf("attach %s: %v", name, err)
		}
		if err := n.d.UpsertIPCache(netip.PrefixFrom(n.ips[name], 32), 2000+id); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func (n *svcNode) identity(pod string) uint32 {
	id, ok := n.d.LookupIPCache(n.ips[pod])
	if !ok {
		n.t.Fatalf("no identity for %s", pod)
	}
	return id
}

func (n *svcNode) endpointID(pod string) uint32 {
	eps, err := n.d.Endpoints()
	if err != nil {
		n.t.Fatal(err)
	}
	for _, ep := range eps {
		if ep.IPv4 == n.ips[pod] {
			return ep.ID
		}
	}
	n.t.Fatalf("no endpoint for %s", pod)
	return 0
}

// serve answers every TCP connection on port with "name\n" and then
// echoes lines, and every UDP datagram on port with "name".
func (n *svcNode) serve(pod string, port int) {
	var (
		ln net.Listener
		pc net.PacketConn
	)
	err := inNsHandle(n.pods[pod], func() (err error) {
		if ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", pod)
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(l))
				}
			}()
		}
	}()
	go func() {
		b := make([]byte, 1500)
		for {
			_, a, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(pod), a)
		}
	}()
}

// dial connects from pod to addr and returns the connection and the
// name of the backend that answered.
func (n *svcNode) dial(pod, addr string, timeout time.Duration) (net.Conn, string, error) {
	var c net.Conn
	err := inNsHandle(n.pods[pod], func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	name, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil, "", err
	}
	if got := c.RemoteAddr().String(); got != addr {
		c.Close()
		return nil, "", fmt.Errorf("connected to %s, not %s", got, addr)
	}
	return c, strings.TrimSpace(name), nil
}

func (n *svcNode) fetch(pod, addr string) (string, error) {
	c, name, err := n.dial(pod, addr, 2*time.Second)
	if err == nil {
		c.Close()
	}
	return name, err
}

// udp sends one datagram from pod on a connected socket, which takes
// replies only from addr itself.
func (n *svcNode) udp(pod, addr string) (string, error) {
	var c net.Conn
	if err := inNsHandle(n.pods[pod], func() (err error) { c, err = net.Dial("udp4", addr); return err }); err != nil {
		return "", err
	}
	defer c.Close()
	b := make([]byte, 64)
	for try := 0; try < 3; try++ {
		if _, err := c.Write([]byte("q")); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		k, err := c.Read(b)
		if err == nil {
			return string(b[:k]), nil
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return "", err
		}
	}
	return "", errors.New("no UDP answer")
}

func (n *svcNode) backends(port uint16, pods ...string) []Backend {
	var out []Backend
	for _, p := range pods {
		out = append(out, Backend{Addr: n.ips[p], Port: port})
	}
	return out
}

// TestPrivilegedServiceTranslation sends real TCP and UDP traffic from
// pods through a ClusterIP: translation before egress policy, reverse
// translation of replies, several ports, backend changes, affinity,
// hairpin and the answer of a Service without backends.
func TestPrivilegedServiceTranslation(t *testing.T) {
	n := newSvcNode(t, map[string]string{"client": "10.201.0.2", "web1": "10.201.0.3", "web2": "10.201.0.4"})
	for _, p := range []string{"web1", "web2"} {
		n.serve(p, 8080)
		n.serve(p, 5353)
	}
	vip := netip.MustParseAddr("10.96.0.10")
	svc, err := n.d.Services()
	if err != nil {
		t.Fatal(err)
	}
	const httpID, dnsID = 11, 12
	set := func(id uint32, port uint16, proto uint8, sf ServiceFrontend) {
		t.Helper()
		sf.Frontend = Frontend{Addr: vip, Port: port, Proto: proto}
		if err := svc.Set(id, sf); err != nil {
			t.Fatal(err)
		}
	}
	set(httpID, 80, protoTCP, ServiceFrontend{Backends: n.backends(8080, "web1", "web2")})
	set(dnsID, 53, protoUDP, ServiceFrontend{Backends: n.backends(5353, "web1", "web2")})

	// The client's egress policy allows web1 alone, on any port: policy
	// must judge the backend, never the ClusterIP.
	cl := n.endpointID("client")
	if err := n.d.UpsertPolicy(PolicyKey{EndpointID: cl, PeerIdentity: n.identity("web1"), Direction: contract.DirectionEgress}, PolicyEntry{RuleID: 5}); err != nil {
		t.Fatal(err)
	}
	// Straight to the pod first: the node routes.
	if name, err := n.fetch("client", "10.201.0.3:8080"); err != nil || name != "web1" {
		t.Fatalf("client to web1's address: %q %v", name, err)
	}
	seen := map[string]int{}
	refused := 0
	for i := 0; i < 16; i++ {
		name, err := n.fetch("client", "10.96.0.10:80")
		switch {
		case err == nil:
			seen[name]++
		case errors.Is(err, syscall.ECONNREFUSED):
			t.Fatalf("refused: %v", err)
		default:
			refused++
		}
	}
	if seen["web2"] != 0 || seen["web1"] == 0 || refused == 0 {
		t.Fatalf("with egress allowed to web1 only: answers %v, %d failed; want web1 only, some failed (web2 denied)", seen, refused)
	}
	var denied, translated bool
	for _, ev := range drainEvents(t, n.d) {
		if ev.ServiceID == httpID && ev.DropReason == contract.DropPolicyDenied && ev.Dst == n.ips["web2"] && ev.DstPort == 8080 {
			denied = true
		}
		if ev.ServiceID == httpID && ev.Verdict == contract.VerdictForwarded && ev.Dst == n.ips["web1"] && ev.Flags&FlagCTNew != 0 {
			translated = true
		}
	}
	if !denied || !translated {
		t.Fatalf("events: policy drop to web2 with the service id %v, translated connection to web1 %v", denied, translated)
	}

	// Both backends, both protocols, once policy allows both.
	if err := n.d.UpsertPolicy(PolicyKey{EndpointID: cl, PeerIdentity: n.identity("web2"), Direction: contract.DirectionEgress}, PolicyEntry{RuleID: 6}); err != nil {
		t.Fatal(err)
	}
	seen, udpSeen := map[string]int{}, map[string]int{}
	for i := 0; i < 24; i++ {
		name, err := n.fetch("client", "10.96.0.10:80")
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		seen[name]++
		name, err = n.udp("client", "10.96.0.10:53")
		if err != nil {
			t.Fatalf("udp %d: %v", i, err)
		}
		udpSeen[name]++
	}
	if seen["web1"] == 0 || seen["web2"] == 0 || udpSeen["web1"] == 0 || udpSeen["web2"] == 0 {
		t.Fatalf("tcp answers %v, udp answers %v: want both backends", seen, udpSeen)
	}

	// A connection to web1 stays up while web1 terminates; new ones go to web2.
	var old net.Conn
	for old == nil {
		c, name, err := n.dial("client", "10.96.0.10:80", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if name == "web1" {
			old = c
		} else {
			c.Close()
		}
	}
	defer old.Close()
	set(httpID, 80, protoTCP, ServiceFrontend{Backends: []Backend{{Addr: n.ips["web1"], Port: 8080, Terminating: true}, {Addr: n.ips["web2"], Port: 8080}}})
	for i := 0; i < 10; i++ {
		if name, err := n.fetch("client", "10.96.0.10:80"); err != nil || name != "web2" {
			t.Fatalf("after web1 terminates: %q %v", name, err)
		}
	}
	r := bufio.NewReader(old)
	if _, err := old.Write([]byte("still there\n")); err != nil {
		t.Fatal(err)
	}
	if l, err := r.ReadString('\n'); err != nil || l != "still there\n" {
		t.Fatalf("established connection to the terminating backend: %q %v", l, err)
	}

	// Removed from the Service: the established connection to web1 stays
	// (as with kube-proxy), new ones never go there.
	set(httpID, 80, protoTCP, ServiceFrontend{Backends: n.backends(8080, "web2")})
	for i := 0; i < 10; i++ {
		if name, err := n.fetch("client", "10.96.0.10:80"); err != nil || name != "web2" {
			t.Fatalf("after web1 left: %q %v", name, err)
		}
	}
	if _, err := old.Write([]byte("and now\n")); err != nil {
		t.Fatal(err)
	}
	if l, err := r.ReadString('\n'); err != nil || l != "and now\n" {
		t.Fatalf("established connection to the removed backend: %q %v", l, err)
	}

	// sessionAffinity ClientIP: every connection of the client to one backend.
	set(httpID, 80, protoTCP, ServiceFrontend{Backends: n.backends(8080, "web1", "web2"), Affinity: time.Hour})
	first, err := n.fetch("client", "10.96.0.10:80")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		if name, err := n.fetch("client", "10.96.0.10:80"); err != nil || name != first {
			t.Fatalf("affinity: connection %d went to %q (%v), first to %q", i, name, err, first)
		}
	}

	// Hairpin: web1 reaches itself through the Service.
	set(httpID, 80, protoTCP, ServiceFrontend{Backends: n.backends(8080, "web1")})
	if name, err := n.fetch("web1", "10.96.0.10:80"); err != nil || name != "web1" {
		t.Fatalf("hairpin: %q %v", name, err)
	}

	// No ready backend: refused at once, TCP and UDP.
	set(httpID, 80, protoTCP, ServiceFrontend{})
	set(dnsID, 53, protoUDP, ServiceFrontend{})
	start := time.Now()
	if _, err := n.fetch("client", "10.96.0.10:80"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("tcp to a service without backends: %v, want connection refused", err)
	}
	if _, err := n.udp("client", "10.96.0.10:53"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("udp to a service without backends: %v, want connection refused", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("refusals took %v", el)
	}
	var noBackend bool
	for _, ev := range drainEvents(t, n.d) {
		if ev.DropReason == contract.DropNoService && ev.ServiceID != 0 && ev.Dst == vip {
			noBackend = true
		}
	}
	if !noBackend {
		t.Fatal("no SERVICE_BACKEND_NOT_FOUND drop event")
	}

	// Deleted: the ClusterIP is not translated any more, and Sync leaves nothing.
	for _, id := range []uint32{httpID, dnsID} {
		if err := svc.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := len(svc.Frontends()); n != 0 {
		t.Fatalf("%d frontends left", n)
	}
	for _, m := range []*ebpf.Map{n.d.objs.SvcFrontends, n.d.objs.SvcSlots, n.d.objs.SvcBackends, n.d.objs.SvcRevnat} {
		k := make([]byte, m.KeySize())
		if err := m.NextKey(nil, &k); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatalf("%s not empty after delete and sync: %v", m, err)
		}
	}
}

// BenchmarkServiceRR compares request/response over one TCP connection
// to a backend through its ClusterIP and to its pod IP, in the same run
// (-count alternates them); "bulk" echoes 32 KiB per op.
func BenchmarkServiceRR(b *testing.B) {
	n := newSvcNode(b, map[string]string{"client": "10.201.0.2", "web1": "10.201.0.3"})
	n.serve("web1", 8080)
	svc, err := n.d.Services()
	if err != nil {
		b.Fatal(err)
	}
	if err := svc.Set(1, ServiceFrontend{Frontend: Frontend{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: protoTCP},
		Backends: n.backends(8080, "web1")}); err != nil {
		b.Fatal(err)
	}
	cl := n.endpointID("client")
	if err := n.d.UpsertPolicy(PolicyKey{EndpointID: cl, PeerIdentity: n.identity("web1"), Direction: contract.DirectionEgress}, PolicyEntry{RuleID: 5}); err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1, 32 << 10} {
		msg := []byte(strings.Repeat("x", size-1) + "\n")
		for _, to := range []struct{ name, addr string }{{"pod-ip", "10.201.0.3:8080"}, {"clusterip", "10.96.0.10:80"}} {
			kind := "rr"
			if size > 1 {
				kind = "bulk"
			}
			b.Run(kind+"/"+to.name, func(b *testing.B) {
				c, _, err := n.dial("client", to.addr, 2*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Time{})
				r := bufio.NewReaderSize(c, 64<<10)
				b.SetBytes(int64(2 * size))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := c.Write(msg); err != nil {
						b.Fatal(err)
					}
					if _, err := r.ReadSlice('\n'); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

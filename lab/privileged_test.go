package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// testLabName returns a unique lab name, so tests never touch a user's lab
// (named "loupe") or each other's.
func testLabName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "t" + hex.EncodeToString(b)
}

// assertClean fails if anything of the lab is left: netns, links, processes,
// mounts, pins.
func assertClean(t *testing.T, dir, name string) {
	t.Helper()
	if left := listNetNS(name + "-"); len(left) > 0 {
		t.Errorf("netns left behind: %v", left)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, name+"-") {
			t.Errorf("link left behind: %s", l.Attrs().Name)
		}
	}
	if pids := labProcesses(nil, dir); len(pids) > 0 {
		for _, p := range pids {
			t.Errorf("process left behind: %d %v", p, cmdline(p))
		}
	}
	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("mounts left behind: %v", m)
	}
	if _, err := os.Stat(dir + "/bpf"); err == nil {
		t.Errorf("bpf dir left behind")
	}
	routes, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
	for _, r := range routes {
		if r.Gw != nil && r.Dst != nil && strings.HasPrefix(r.Gw.String(), "172.30.") {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && strings.HasPrefix(l.Attrs().Name, name) {
				t.Errorf("route left behind: %s", r)
			}
		}
	}
}

// listenIn opens a TCP listener inside a netns.
func listenIn(t *testing.T, netnsPath, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	return ln
}

func reads(t *testing.T, c net.Conn, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 2)
	if _, err := c.Read(b); err != nil || string(b) != "hi" {
		t.Fatalf("read %q: %v", b, err)
	}
}

// The underlay alone: bridge, node netns, addresses and routes, reachability
// between the host and the nodes, and a down that removes all of it.
func TestPrivilegedUnderlay(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	name := testLabName(t)
	l := &Lab{Dir: dir, Name: name, Index: -1}
	l.Nodes = []Node{l.newNode(1), l.newNode(2)}
	t.Cleanup(func() {
		_ = Down(context.Background(), dir, name, func(string) {})
		assertClean(t, dir, name)
	})
	br, err := l.claimNetwork(true)
	if err != nil {
		t.Fatal(err)
	}
	if l.Index < 1 {
		t.Fatalf("test lab got index %d", l.Index)
	}
	if err := l.ensureBPFMount(); err != nil {
		t.Fatal(err)
	}
	for range 2 { // twice: idempotent
		for _, n := range l.Nodes {
			if err := l.ensureNode(br, n); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.ensureHostRoutes(br); err != nil {
			t.Fatal(err)
		}
	}
	n1, n2 := l.Nodes[0], l.Nodes[1]
	for _, n := range l.Nodes {
		waitOperUp(t, n.NetNSPath(), "eth0")
		waitOperUp(t, "", l.HostVeth(n.Num))
	}
	waitOperUp(t, "", l.BridgeName())
	ln := listenIn(t, n1.NetNSPath(), n1.IP+":7000")
	_ = ln
	// Host -> node.
	c, err := net.DialTimeout("tcp4", n1.IP+":7000", 2*time.Second)
	reads(t, c, err)
	// Node -> node over the bridge.
	c, err = dialIn(context.Background(), n2.NetNSPath(), "tcp4", n1.IP+":7000", 2*time.Second)
	reads(t, c, err)
	// The routes to pod CIDRs exist in the root netns and in each node.
	routes, err := netlink.RouteGet(netip.MustParsePrefix(n2.PodCIDR).Addr().Next().AsSlice())
	if err != nil || len(routes) == 0 || routes[0].Gw.String() != n2.IP {
		t.Fatalf("root route to %s = %v, %v", n2.PodCIDR, routes, err)
	}

	// A second claim of the same name from another dir is refused.
	other := &Lab{Dir: t.TempDir(), Name: name, Index: -1}
	if _, err := other.claimNetwork(true); err == nil || !strings.Contains(err.Error(), "another lab") {
		t.Fatalf("claiming a used name: %v", err)
	}

	if err := Down(context.Background(), dir, "", func(string) {}); err != nil {
		t.Fatal(err)
	}
	assertClean(t, dir, name)
}

// waitOperUp waits until a link in a netns ("" = root) is operationally up,
// so the first packet of a test is not lost to a link still coming up.
func waitOperUp(t *testing.T, netnsPath, link string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var up bool
		check := func() {
			l, err := netlink.LinkByName(link)
			up = err == nil && (l.Attrs().OperState == netlink.OperUp || l.Attrs().OperState == netlink.OperUnknown)
		}
		if netnsPath == "" {
			check()
		} else {
			_ = ns.WithNetNSPath(netnsPath, func(ns.NetNS) error { check(); return nil })
		}
		if up {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never came up", link)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The pod server and the probes, between two namespaces joined by a veth.
func TestPrivilegedServeAndProbe(t *testing.T) {
	requireRoot(t)
	name := testLabName(t)
	a, b := name+"-a", name+"-b"
	for _, n := range []string{a, b} {
		if _, err := createNetNS(n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = deleteNetNS(n) })
	}
	// veth a0 <-> b0, 10.250.0.1/30 and .2
	err := ns.WithNetNSPath(netnsPath(a), func(ns.NetNS) error {
		bns, err := os.Open(netnsPath(b))
		if err != nil {
			return err
		}
		defer bns.Close()
		la := netlink.NewLinkAttrs()
		la.Name = "a0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "b0", PeerNamespace: netlink.NsFd(int(bns.Fd()))}); err != nil {
			return err
		}
		l, _ := netlink.LinkByName("a0")
		lo, _ := netlink.LinkByName("lo")
		_ = netlink.LinkSetUp(lo)
		if err := netlink.AddrAdd(l, addrOf(netip.MustParseAddr("10.250.0.1"), 30)); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ns.WithNetNSPath(netnsPath(b), func(ns.NetNS) error {
		l, err := netlink.LinkByName("b0")
		if err != nil {
			return err
		}
		lo, _ := netlink.LinkByName("lo")
		_ = netlink.LinkSetUp(lo)
		if err := netlink.AddrAdd(l, addrOf(netip.MustParseAddr("10.250.0.2"), 30)); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}

	// Probe once both ends of the veth are operational.
	waitOperUp(t, netnsPath(a), "a0")
	waitOperUp(t, netnsPath(b), "b0")
	ports, _ := parsePorts("80/TCP,81/TCP,81/UDP,53/UDP")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		// Listeners are made inside b; serving continues on any thread.
		errc <- ns.WithNetNSPath(netnsPath(b), func(ns.NetNS) error {
			return serve(ctx, "y/b", ports, dnsServer{manifests: t.TempDir()}, slog.New(slog.DiscardHandler), func() { close(ready) })
		})
	}()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatal(err)
	}
	cases := []struct {
		port  int
		proto string
		want  bool
	}{
		{80, "TCP", true}, {81, "TCP", true}, {81, "UDP", true}, {53, "UDP", true},
		{82, "TCP", false}, {80, "UDP", false},
	}
	for _, c := range cases {
		got := probe(ctx, netnsPath(a), "10.250.0.2", portSpec{Port: c.port, Proto: c.proto}, 700*time.Millisecond)
		if got != c.want {
			t.Errorf("probe %d/%s = %v, want %v", c.port, c.proto, got, c.want)
		}
	}
	// DNS-like traffic gets a DNS answer.
	f := flow{kind: "dns", src: podRecord{NetNS: a}, dst: podRecord{IP: "10.250.0.2", Name: "b", Namespace: "y"}, port: 53, proto: "UDP"}
	if !sendFlow(ctx, f) {
		t.Error("dns query got no answer")
	}
}

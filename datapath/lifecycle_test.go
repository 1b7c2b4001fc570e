package datapath

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/loupe-project/loupe/contract"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// eventually polls cond until it holds; timeout only bounds a failure.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newNetns creates a named netns, switching the (locked) thread into it.
func newNetns(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	h, err := netns.NewNamed(name)
	if err != nil {
		t.Fatalf("netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		h.Close()
		_ = netns.DeleteNamed(name)
	})
	return h
}

func setNetns(t *testing.T, h netns.NsHandle) {
	t.Helper()
	if err := netns.Set(h); err != nil {
		t.Fatalf("setns: %v", err)
	}
}

func attachedTCX(t *testing.T, ifindex int, at ebpf.AttachType) []link.AttachedProgram {
	t.Helper()
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
	if err != nil {
		t.Fatalf("query %s: %v", at, err)
	}
	return res.Programs
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

func xdpState(t *testing.T, ifindex int) *netlink.LinkXdp {
	t.Helper()
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Xdp
}

// expectAttached checks that exactly one program runs on each TCX hook and
// that they (and XDP, unless mode is off) are d's programs.
func expectAttached(t *testing.T, d *Datapath, ifindex int, mode XDPMode) (ingressLink, egressLink link.ID) {
	t.Helper()
	for _, h := range []struct {
		at   ebpf.AttachType
		prog *ebpf.Program
		id   *link.ID
	}{{ebpf.AttachTCXIngress, d.objs.LoupeFromPod, &ingressLink}, {ebpf.AttachTCXEgress, d.objs.LoupeToPod, &egressLink}} {
		progs := attachedTCX(t, ifindex, h.at)
		if len(progs) != 1 {
			t.Fatalf("%s: %d programs attached, want 1", h.at, len(progs))
		}
		if progs[0].ID != progID(t, h.prog) {
			t.Fatalf("%s: program %d attached, want %d", h.at, progs[0].ID, progID(t, h.prog))
		}
		*h.id, _ = progs[0].LinkID()
	}
	x := xdpState(t, ifindex)
	if mode == XDPOff {
		if x != nil && x.Attached {
			t.Fatalf("xdp attached (%+v) with mode off", x)
		}
		return
	}
	if x == nil || !x.Attached || x.AttachMode != mode.netlinkMode() || ebpf.ProgramID(x.ProgId) != progID(t, d.objs.LoupeXdp) {
		t.Fatalf("xdp state %+v, want program %d in mode %s", x, progID(t, d.objs.LoupeXdp), mode)
	}
	return
}

func TestPrivilegedAttachLifecycle(t *testing.T) {
	requireRoot(t)
	// The thread moves between namespaces and is never unlocked, so it is
	// discarded with the test goroutine.
	runtime.LockOSThread()
	hostNS, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Set(hostNS); hostNS.Close() })

	suffix := rand.Uint32()
	podNS := newNetns(t, fmt.Sprintf("loupe-dp-pod-%08x", suffix))
	nodeNS := newNetns(t, fmt.Sprintf("loupe-dp-node-%08x", suffix))

	const hostIf, podIf = "lxctest0", "lxctestp"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf}, PeerName: podIf}); err != nil {
		t.Fatalf("veth: %v", err)
	}
	host, err := netlink.LinkByName(hostIf)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := netlink.LinkByName(podIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(peer, int(podNS)); err != nil {
		t.Fatal(err)
	}
	mustAddr := func(l netlink.Link, cidr string) {
		a, _ := netlink.ParseAddr(cidr)
		if err := netlink.AddrAdd(l, a); err != nil {
			t.Fatalf("addr %s: %v", cidr, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	mustAddr(host, "10.200.0.1/24")
	setNetns(t, podNS)
	if peer, err = netlink.LinkByName(podIf); err != nil {
		t.Fatal(err)
	}
	mustAddr(peer, "10.200.0.2/24")
	setNetns(t, nodeNS)
	ifindex := host.Attrs().Index

	root := t.TempDir()
	t.Cleanup(func() {
		_ = Cleanup(root)
		if ok, _ := isBPFFS(root); ok {
			_ = unix.Unmount(root, unix.MNT_DETACH)
		}
	})
	cfg := Config{BPFRoot: root}
	d, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ep := EndpointInfo{ID: 7, Identity: 300, IPv4: netip.MustParseAddr("10.200.0.2")}
	if err := d.UpsertEndpoint(uint32(ifindex), ep); err != nil {
		t.Fatal(err)
	}

	if err := Attach(root, hostIf, XDPNative); err != nil {
		t.Fatalf("attach: %v", err)
	}
	ingLink, egLink := expectAttached(t, d, ifindex, XDPNative)
	if err := CheckAttached(root, hostIf, XDPNative); err != nil {
		t.Fatalf("check: %v", err)
	}
	if err := CheckAttached(root, hostIf, XDPGeneric); err == nil {
		t.Fatal("check with the wrong xdp mode passed")
	}
	// Idempotent: a second attach changes nothing.
	if err := Attach(root, hostIf, XDPNative); err != nil {
		t.Fatalf("attach again: %v", err)
	}
	if i, e := expectAttached(t, d, ifindex, XDPNative); i != ingLink || e != egLink {
		t.Fatalf("second attach replaced links: %d/%d -> %d/%d", ingLink, egLink, i, e)
	}

	// Real traffic from the pod runs through XDP and TCX on the host veth.
	setNetns(t, podNS)
	conn, err := net.Dial("udp4", "10.200.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	_, werr := conn.Write([]byte("hello"))
	conn.Close()
	setNetns(t, nodeNS)
	if werr != nil {
		t.Fatal(werr)
	}
	udpTracked := func(d *Datapath) bool {
		ct, err := d.Conntrack()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ct {
			if e.Proto == protoUDP && e.Ifindex == uint32(ifindex) && e.Src == ep.IPv4 && e.DstPort == 9 && e.Direction == contract.DirectionEgress {
				return true
			}
		}
		return false
	}
	eventually(t, "conntrack entry of the pod's UDP packet", func() bool { return udpTracked(d) })

	// Simulated agent restart: new programs, same maps, same links.
	oldXDP := progID(t, d.objs.LoupeXdp)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2, err := Load(cfg)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	defer d2.Close()
	if progID(t, d2.objs.LoupeXdp) == oldXDP {
		t.Fatal("reload kept the old program")
	}
	if i, e := expectAttached(t, d2, ifindex, XDPNative); i != ingLink || e != egLink {
		t.Fatalf("restart replaced links: %d/%d -> %d/%d", ingLink, egLink, i, e)
	}
	if err := CheckAttached(root, hostIf, XDPNative); err != nil {
		t.Fatalf("check after restart: %v", err)
	}
	eps, err := d2.Endpoints()
	if err != nil || eps[uint32(ifindex)] != ep {
		t.Fatalf("endpoints after restart: %+v %v", eps, err)
	}
	if !udpTracked(d2) {
		t.Fatal("conntrack lost on restart")
	}

	// XDP mode changes: off removes it, generic re-adds it in SKB mode.
	if err := Attach(root, hostIf, XDPOff); err != nil {
		t.Fatal(err)
	}
	expectAttached(t, d2, ifindex, XDPOff)
	if err := CheckAttached(root, hostIf, XDPOff); err != nil {
		t.Fatalf("check off: %v", err)
	}
	if err := Attach(root, hostIf, XDPGeneric); err != nil {
		t.Fatal(err)
	}
	expectAttached(t, d2, ifindex, XDPGeneric)
	if err := CheckAttached(root, hostIf, XDPGeneric); err != nil {
		t.Fatalf("check generic: %v", err)
	}

	// Detach leaves nothing attached and no link pins; twice is fine.
	for range 2 {
		if err := Detach(root, hostIf); err != nil {
			t.Fatalf("detach: %v", err)
		}
	}
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		if n := len(attachedTCX(t, ifindex, at)); n != 0 {
			t.Fatalf("%s: %d programs after detach", at, n)
		}
	}
	if x := xdpState(t, ifindex); x != nil && x.Attached {
		t.Fatalf("xdp still attached: %+v", x)
	}
	if _, err := os.Stat(filepath.Join(root, linksDir, hostIf)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("link pins left: %v", err)
	}
	if err := CheckAttached(root, hostIf, XDPOff); err == nil {
		t.Fatal("check passed after detach")
	}

	// An interface that vanished under its pins: Detach still cleans up.
	if err := Attach(root, hostIf, XDPGeneric); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkDel(host); err != nil {
		t.Fatal(err)
	}
	if err := Detach(root, hostIf); err != nil {
		t.Fatalf("detach of a deleted interface: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, linksDir, hostIf)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("link pins left: %v", err)
	}

	if err := Cleanup(root); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	if ok, _ := isBPFFS(root); ok {
		t.Fatal("bpffs still mounted after cleanup")
	}
	if left, _ := os.ReadDir(root); len(left) != 0 {
		t.Fatalf("left in bpf root: %v", left)
	}
}

func TestPrivilegedCleanupRemovesAttachments(t *testing.T) {
	requireRoot(t)
	runtime.LockOSThread()
	hostNS, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Set(hostNS); hostNS.Close() })
	newNetns(t, fmt.Sprintf("loupe-dp-clean-%08x", rand.Uint32()))
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lxcclean0"}, PeerName: "lxcclean1"}); err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByName("lxcclean0")
	if err != nil {
		t.Fatal(err)
	}
	d := newTestDatapath(t, Config{})
	root := d.BPFRoot()
	if err := Attach(root, "lxcclean0", XDPGeneric); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		if n := len(attachedTCX(t, l.Attrs().Index, at)); n != 0 {
			t.Fatalf("%s: %d programs after cleanup", at, n)
		}
	}
	if x := xdpState(t, l.Attrs().Index); x != nil && x.Attached {
		t.Fatalf("xdp still attached: %+v", x)
	}
	if ok, _ := isBPFFS(root); ok {
		t.Fatal("bpffs still mounted")
	}
}

func TestPrivilegedReadEvents(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Event, 16)
	caught := make(chan int64, 16) // EventsCaughtUp as each event reached the sink
	done := make(chan error, 1)
	go func() {
		done <- d.ReadEvents(ctx, func(raw []byte) {
			var ev Event
			if err := DecodeEvent(raw, &ev); err == nil {
				ev.Data = nil
				caught <- d.EventsCaughtUp()
				got <- ev
			}
		})
	}()
	// The reader notes the empty ring buffer before any event comes.
	for end := time.Now().Add(10 * time.Second); d.EventsCaughtUp() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the reader never noted an empty ring buffer")
		}
	}
	run(t, d.objs.LoupeFromPod, pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 1, dport: 2, flags: tcpSYN}.build())
	select {
	case ev := <-got:
		if ev.SrcPort != 1 || ev.DstPort != 2 || ev.Flags != FlagCTNew {
			t.Fatalf("event %+v", ev)
		}
		// Not past the event while it was on its way; past it once handled
		// (the watermarks the observer sends rest on both).
		if c := <-caught; c > int64(ev.TimestampNS) {
			t.Fatalf("caught up to %d before the event stamped %d was handled", c, ev.TimestampNS)
		}
		for end := time.Now().Add(10 * time.Second); d.EventsCaughtUp() <= int64(ev.TimestampNS); time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("the reader never caught up past the event stamped %d", ev.TimestampNS)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event from ReadEvents")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ReadEvents: %v", err)
	}
	st, err := d.EventStats()
	if err != nil || st.Read != 1 || st.Short != 0 {
		t.Fatalf("stats %+v %v", st, err)
	}
}

// emptyPinRoot skips without root, else mounts a bpffs with an empty maps
// folder for a test to pin old maps in before Load; it is removed when the
// test ends.
func emptyPinRoot(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	root := t.TempDir()
	t.Cleanup(func() {
		_ = Cleanup(root)
		if ok, _ := isBPFFS(root); ok {
			_ = unix.Unmount(root, unix.MNT_DETACH)
		}
	})
	if err := ensureBPFFS(root); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, mapsDir), 0o700); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestPrivilegedIncompatiblePinnedMapReplaced(t *testing.T) {
	root := emptyPinRoot(t)
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(root, mapsDir, MapCounters)); err != nil {
		t.Fatal(err)
	}
	old.Close()
	d, err := Load(Config{BPFRoot: root})
	if err != nil {
		t.Fatalf("load over an incompatible pin: %v", err)
	}
	defer d.Close()
	if _, err := d.Counters(); err != nil {
		t.Fatal(err)
	}
}

// An agent upgraded from the hash policy map (one key per port) finds the
// old map pinned: it differs in type and key size, so Load replaces it,
// carrying its entries over so that pods with policy keep accepting what
// it allowed until the policy engine rewrites the map.
func TestPrivilegedHashPolicyMapReplacedOnUpgrade(t *testing.T) {
	root := emptyPinRoot(t)
	// struct policy_key {u32 ep_id, peer_identity; u16 dport; u8 proto, direction}
	// → struct policy_value {u32 rule_id; u8 verdict, pad[3]}, as before.
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 12, ValueSize: 8, MaxEntries: 262144, Flags: unix.BPF_F_NO_PREALLOC})
	if err != nil {
		t.Fatal(err)
	}
	// {testEP, any, 80, TCP, ingress} allow 7; {testEP, any, 0, 0, ingress} deny 8.
	allow80 := []byte{testEP, 0, 0, 0, 0, 0, 0, 0, 80, 0, protoTCP, contract.DirectionIngress}
	denyAll := []byte{testEP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, contract.DirectionIngress}
	if err := old.Put(allow80, []byte{7, 0, 0, 0, 1, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := old.Put(denyAll, []byte{8, 0, 0, 0, 2, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(root, mapsDir, MapPolicy)); err != nil {
		t.Fatal(err)
	}
	old.Close()
	d, err := Load(Config{BPFRoot: root})
	if err != nil {
		t.Fatalf("load over the hash policy map: %v", err)
	}
	defer d.Close()
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(root, mapsDir, MapPolicy), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	if pinned.Type() != ebpf.LPMTrie || pinned.KeySize() != 16 {
		t.Fatalf("pinned policy map: %s, key %d bytes", pinned.Type(), pinned.KeySize())
	}
	want := map[PolicyKey]PolicyEntry{
		{EndpointID: testEP, Port: 80, Proto: protoTCP, Direction: contract.DirectionIngress}: {RuleID: 7},
		{EndpointID: testEP, Direction: contract.DirectionIngress}:                            {RuleID: 8, Deny: true},
	}
	if pol, err := d.Policy(); err != nil || !maps.Equal(pol, want) {
		t.Fatalf("migrated policy map: %+v %v, want %+v", pol, err, want)
	}
	// The new programs enforce the migrated entries.
	withEndpoint(t, d, EndpointInfo{PolicyIngress: true})
	syn := pkt{src: peerIP, dst: podIP, proto: protoTCP, sport: 5000, dport: 80, flags: tcpSYN}
	if ret := run(t, d.objs.LoupeToPod, syn.build()); ret != retTCXNext {
		t.Errorf("TCP 80 after the upgrade: %d", ret)
	}
	syn.dport, syn.sport = 81, 5001
	if ret := run(t, d.objs.LoupeToPod, syn.build()); ret != retTCXDrop {
		t.Errorf("TCP 81 after the upgrade: %d", ret)
	}
}

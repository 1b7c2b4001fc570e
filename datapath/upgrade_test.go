package datapath

import (
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/contract"
)

// policyMapCapacityBefore is the policy map's capacity before it grew: an
// agent of that version pinned an LPM trie of the same key and value with
// this max_entries.
const policyMapCapacityBefore = 262144

// An agent upgraded from the smaller policy map finds it pinned: its
// capacity differs, so Load replaces it and carries the entries over before
// the new programs take the links. New connections that the policy allows
// keep opening, through the real programs on a veth, across the upgrade;
// a port the policy denies stays denied.
func TestPrivilegedPolicyMapUpgradeKeepsAllowedTraffic(t *testing.T) {
	requireRoot(t)
	runtime.LockOSThread() // moves between namespaces; discarded with the test goroutine
	hostNS, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Set(hostNS); hostNS.Close() })
	suffix := rand.Uint32()
	podNS := newNetns(t, fmt.Sprintf("loupe-up-pod-%08x", suffix))
	nodeNS := newNetns(t, fmt.Sprintf("loupe-up-node-%08x", suffix))

	const hostIf, podIf = "lxcup0", "lxcupp"
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
	up := func(l netlink.Link, cidr string) {
		a, _ := netlink.ParseAddr(cidr)
		if err := netlink.AddrAdd(l, a); err != nil {
			t.Fatalf("addr %s: %v", cidr, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	up(host, "10.201.0.1/24")
	setNetns(t, podNS)
	if peer, err = netlink.LinkByName(podIf); err != nil {
		t.Fatal(err)
	}
	up(peer, "10.201.0.2/24")
	// The pod serves two ports; the policy allows only the first.
	var listeners []net.Listener
	for _, port := range []int{8080, 8081} {
		ln, err := net.Listen("tcp4", fmt.Sprintf("10.201.0.2:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		listeners = append(listeners, ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte{1})
				c.Close()
			}
		}()
	}
	setNetns(t, nodeNS)
	ifindex := uint32(host.Attrs().Index)

	root := t.TempDir()
	t.Cleanup(func() {
		_ = Cleanup(root)
		if ok, _ := isBPFFS(root); ok {
			_ = unix.Unmount(root, unix.MNT_DETACH)
		}
	})
	cfg := Config{BPFRoot: root}
	old, err := load(cfg, func(spec *ebpf.CollectionSpec) { spec.Maps[MapPolicy].MaxEntries = policyMapCapacityBefore })
	if err != nil {
		t.Fatalf("load the earlier layout: %v", err)
	}
	ep := EndpointInfo{ID: 9, Identity: 300, IPv4: netip.MustParseAddr("10.201.0.2"), PolicyIngress: true}
	if err := old.UpsertEndpoint(ifindex, ep); err != nil {
		t.Fatal(err)
	}
	// The node's address is in no ipcache entry: the peer is world.
	want := map[PolicyKey]PolicyEntry{
		{EndpointID: ep.ID, PeerIdentity: contract.IdentityWorld, Port: 8080, Proto: protoTCP, Direction: contract.DirectionIngress}: {RuleID: 11},
		{EndpointID: ep.ID, Direction: contract.DirectionIngress}:                                                                    {RuleID: 12, Deny: true},
	}
	for k, v := range want {
		if err := old.UpsertPolicy(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := Attach(root, hostIf, XDPOff); err != nil {
		t.Fatalf("attach: %v", err)
	}

	dial := func(port int) error {
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("10.201.0.2:%d", port), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, err = io.ReadFull(c, make([]byte, 1))
		return err
	}
	if err := dial(8080); err != nil {
		t.Fatalf("allowed port before the upgrade: %v", err)
	}
	if err := dial(8081); err == nil {
		t.Fatal("denied port connected before the upgrade")
	}

	// New connections to the allowed port, one after another, until told
	// to stop; every failure is counted.
	var (
		ok, failed atomic.Int64
		firstErr   atomic.Pointer[error]
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread() // left in nodeNS: discarded with this goroutine
		if err := netns.Set(nodeNS); err != nil {
			e := fmt.Errorf("setns: %w", err)
			firstErr.CompareAndSwap(nil, &e)
			failed.Add(1)
			return
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := dial(8080); err != nil {
				firstErr.CompareAndSwap(nil, &err)
				failed.Add(1)
			} else {
				ok.Add(1)
			}
		}
	}()
	waitFor := func(n int64) {
		target := ok.Load() + n
		eventually(t, fmt.Sprintf("%d connections", n), func() bool { return ok.Load() >= target || failed.Load() > 0 })
	}
	waitFor(20)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := Load(cfg)
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("load over the earlier policy map: %v", err)
	}
	defer d.Close()
	atUpgrade := ok.Load()
	waitFor(20)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d allowed connections failed across the upgrade; first: %v", n, n+ok.Load(), *firstErr.Load())
	}
	t.Logf("%d allowed connections, %d after the upgrade, none failed", ok.Load(), ok.Load()-atUpgrade)

	expectAttached(t, d, int(ifindex), XDPOff)
	pinned, err := ebpf.LoadPinnedMap(fmt.Sprintf("%s/%s/%s", root, mapsDir, MapPolicy), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	if pinned.MaxEntries() != d.objs.Policy.MaxEntries() || pinned.MaxEntries() == policyMapCapacityBefore {
		t.Fatalf("pinned policy map holds %d entries, want the new capacity %d", pinned.MaxEntries(), d.objs.Policy.MaxEntries())
	}
	if pol, err := d.Policy(); err != nil || !maps.Equal(pol, want) {
		t.Fatalf("migrated policy map: %+v %v, want %+v", pol, err, want)
	}
	if err := dial(8081); err == nil {
		t.Fatal("denied port connected after the upgrade")
	}
	if err := Detach(root, hostIf); err != nil {
		t.Fatal(err)
	}
	for _, ln := range listeners {
		ln.Close()
	}
}

// UpsertPolicies writes more entries than one batch holds, in order (a
// later entry of the same key wins), as one-at-a-time writes would; an
// invalid key, or keys without entries, are refused.
func TestPrivilegedUpsertPoliciesInBatches(t *testing.T) {
	d := newTestDatapath(t, Config{})
	var keys []PolicyKey
	var entries []PolicyEntry
	want := map[PolicyKey]PolicyEntry{}
	for i := range 2*policyBatch + 7 {
		k := PolicyKey{EndpointID: uint32(1 + i%3), PeerIdentity: uint32(256 + i), Proto: protoTCP, Port: uint16(1 + i%1000), Direction: contract.DirectionIngress}
		e := PolicyEntry{RuleID: uint32(i), Deny: i%5 == 0}
		keys, entries = append(keys, k), append(entries, e)
		want[k] = e
	}
	// The same key again, last: its new value wins.
	keys, entries = append(keys, keys[0]), append(entries, PolicyEntry{RuleID: 99999})
	want[keys[0]] = PolicyEntry{RuleID: 99999}
	if err := d.UpsertPolicies(keys, entries); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Policy(); err != nil || !maps.Equal(got, want) {
		t.Fatalf("policy map: %d entries %v, want %d", len(got), err, len(want))
	}
	bad := []PolicyKey{{EndpointID: 7, Direction: contract.DirectionIngress}, {EndpointID: 7, Port: 80, Direction: contract.DirectionIngress}}
	if err := d.UpsertPolicies(bad, make([]PolicyEntry, 2)); err == nil {
		t.Fatal("a port without a protocol was written")
	}
	if err := d.UpsertPolicies(bad[:1], nil); err == nil {
		t.Fatal("keys without entries were written")
	}
}

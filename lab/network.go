package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/internal/nlsafe"
)

const nsfsMagic = 0x6e736673

// netnsMounted reports whether path is a live netns bind mount.
func netnsMounted(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == nsfsMagic
}

// createNetNS makes /run/netns/name, like `ip netns add`, and reports whether
// it was new. A stale file left by a crash is replaced.
func createNetNS(name string) (created bool, err error) {
	path := netnsPath(name)
	if netnsMounted(path) {
		return false, nil
	}
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return false, fmt.Errorf("create netns %s: %w", name, err)
	}
	_ = os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return false, fmt.Errorf("create netns %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread enters the new netns and never leaves it: it is not
		// unlocked, so the runtime throws it away when the goroutine ends.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		errc <- unix.Mount(src, path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return false, fmt.Errorf("create netns %s: %w", name, err)
	}
	return true, nil
}

// deleteNetNS removes a named netns; a missing one is fine.
func deleteNetNS(name string) error {
	path := netnsPath(name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// listNetNS returns the names in /run/netns that start with prefix.
func listNetNS(prefix string) []string {
	entries, _ := os.ReadDir(netnsDir)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// netnsInode returns the inode of a netns bind mount (0 if it is not one).
func netnsInode(path string) uint64 {
	if !netnsMounted(path) {
		return 0
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func addrOf(a netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}}
}

// ensureBridge creates the underlay bridge with the root netns address.
func (l *Lab) ensureBridge() (netlink.Link, error) {
	name := l.BridgeName()
	br, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
		la := netlink.NewLinkAttrs()
		la.Name = name
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if br, err = netlink.LinkByName(name); err != nil {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("link %s exists and is a %s, not a bridge", name, br.Type())
	}
	if err := netlink.AddrReplace(br, addrOf(l.BridgeIP(), 24)); err != nil {
		return nil, fmt.Errorf("address on %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bridge %s up: %w", name, err)
	}
	return br, nil
}

// ensureNode creates node n's netns, its link to the bridge, its address and
// its routes. Safe to run again on a complete or half-built node.
func (l *Lab) ensureNode(br netlink.Link, n Node) error {
	created, err := createNetNS(n.Name)
	if err != nil {
		return err
	}
	hostName := l.HostVeth(n.Num)
	if created {
		// A veth left from an earlier netns would lead nowhere.
		if old, err := netlink.LinkByName(hostName); err == nil {
			_ = netlink.LinkDel(old)
		}
	}
	nsh, err := netns.GetFromPath(n.NetNSPath())
	if err != nil {
		return fmt.Errorf("node %s: open netns: %w", n.Name, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("node %s: netlink: %w", n.Name, err)
	}
	defer h.Close()

	host, err := netlink.LinkByName(hostName)
	if err != nil {
		if _, perr := h.LinkByName("eth0"); perr == nil {
			// The node side survived without its peer: start over.
			if l, err := h.LinkByName("eth0"); err == nil {
				_ = h.LinkDel(l)
			}
		}
		la := netlink.NewLinkAttrs()
		la.Name = hostName
		veth := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(nsh))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("node %s: create veth %s: %w", n.Name, hostName, err)
		}
		if host, err = netlink.LinkByName(hostName); err != nil {
			return fmt.Errorf("node %s: veth %s: %w", n.Name, hostName, err)
		}
	}
	if err := netlink.LinkSetMaster(host, br); err != nil {
		return fmt.Errorf("node %s: attach %s to bridge: %w", n.Name, hostName, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("node %s: %s up: %w", n.Name, hostName, err)
	}

	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("node %s: lo: %w", n.Name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("node %s: lo up: %w", n.Name, err)
	}
	eth, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("node %s: eth0: %w", n.Name, err)
	}
	if err := h.AddrReplace(eth, addrOf(netip.MustParseAddr(n.IP), 24)); err != nil {
		return fmt.Errorf("node %s: address: %w", n.Name, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("node %s: eth0 up: %w", n.Name, err)
	}
	// Native routing: every other node's pod CIDR via that node.
	for _, o := range l.Nodes {
		if o.Num == n.Num {
			continue
		}
		r := &netlink.Route{LinkIndex: eth.Attrs().Index, Dst: ipnet(netip.MustParsePrefix(o.PodCIDR)), Gw: net.ParseIP(o.IP)}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("node %s: route to %s: %w", n.Name, o.PodCIDR, err)
		}
	}
	def := &netlink.Route{LinkIndex: eth.Attrs().Index, Dst: ipnet(netip.MustParsePrefix("0.0.0.0/0")), Gw: l.BridgeIP().AsSlice()}
	if err := h.RouteReplace(def); err != nil {
		return fmt.Errorf("node %s: default route: %w", n.Name, err)
	}
	// ClusterIPs are translated in the datapath before routing; one that
	// is not (no such Service) is refused here rather than sent on.
	svc := &netlink.Route{Dst: ipnet(l.ServiceCIDR()), Type: unix.RTN_UNREACHABLE}
	if err := h.RouteReplace(svc); err != nil {
		return fmt.Errorf("node %s: route for the Service CIDR: %w", n.Name, err)
	}
	// A node routes between its pods and the underlay.
	err = ns.WithNetNSPath(n.NetNSPath(), func(ns.NetNS) error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	if err != nil {
		return fmt.Errorf("node %s: enable forwarding: %w", n.Name, err)
	}
	return nil
}

// loUp sets the loopback of a netns up.
func loUp(path string) error {
	nsh, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// ensureHostRoutes routes every pod CIDR from the root netns via its node.
func (l *Lab) ensureHostRoutes(br netlink.Link) error {
	for _, n := range l.Nodes {
		r := &netlink.Route{LinkIndex: br.Attrs().Index, Dst: ipnet(netip.MustParsePrefix(n.PodCIDR)), Gw: net.ParseIP(n.IP)}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("host route to %s: %w", n.PodCIDR, err)
		}
	}
	return nil
}

// rootPrefixesInUse lists the addresses and routes of the root netns, so a new
// lab picks subnets nothing else uses.
func rootPrefixesInUse() ([]netip.Prefix, error) {
	var out []netip.Prefix
	addrs, err := nlsafe.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, p.Masked())
		}
	}
	routes, err := nlsafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

// pickIndex chooses the lowest subnet index in 1..99 whose underlay and pod
// range no address or route of the root netns overlaps.
func pickIndex(taken map[int]bool) (int, error) {
	used, err := rootPrefixesInUse()
	if err != nil {
		return 0, err
	}
	probe := &Lab{}
	for i := 1; i <= maxIndex; i++ {
		if taken[i] {
			continue
		}
		probe.Index = i
		pods := netip.PrefixFrom(probe.PodCIDR(0).Addr(), 16)
		clash := false
		for _, p := range used {
			if p.Overlaps(probe.Underlay()) || p.Overlaps(pods) {
				clash = true
				break
			}
		}
		if !clash {
			return i, nil
		}
	}
	return 0, errors.New("no free lab subnet index in 1..99: remove old labs with `loupe lab down`")
}

// globalLock serialises subnet allocation between labs on this machine.
func globalLock() (func(), error) {
	return lockFile(filepath.Join("/run/lock", "loupe-lab.lock"))
}

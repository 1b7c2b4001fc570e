package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// GatewayIPv6 is the pod's IPv6 next hop. Neighbour discovery answers a
// solicitation only for addresses on the receiving interface, so the node's
// gateway address (on the agent's loupe_host dummy) cannot be resolved from
// a pod; instead every host veth carries fe80::1 (no DAD), and pods route
// ::/0 via fe80::1 on their interface. Fixed, so the result can name it
// before the link exists, and CHECK can verify it.
var GatewayIPv6 = netip.MustParseAddr("fe80::1")

// plumbing is what ADD puts on the wire for one attachment.
type plumbing struct {
	HostIfname string
	PodIfname  string
	MTU        int
	IPv4       netip.Addr // invalid when the agent gave no IPv4
	IPv6       netip.Addr
	GatewayV4  netip.Addr
}

// plumbed is what ADD learned while plumbing, for the result and Register.
type plumbed struct {
	HostIndex int
	HostMAC   net.HardwareAddr
	PodIndex  int
	PodMAC    net.HardwareAddr
}

// createVeth makes the pair from the node netns (the current one), with the
// peer created directly in the pod netns under its final name: no rename and
// no moment where the pod end sits in the node netns.
func createVeth(podNS ns.NetNS, p plumbing) (netlink.Link, error) {
	if _, err := linkByName(p.HostIfname); err == nil {
		return nil, fmt.Errorf("create veth: host interface %s already exists (ADD without DEL for this container and ifname?)", p.HostIfname)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = p.HostIfname
	attrs.MTU = p.MTU
	veth := &netlink.Veth{
		LinkAttrs:     attrs,
		PeerName:      p.PodIfname,
		PeerNamespace: netlink.NsFd(int(podNS.Fd())),
		PeerMTU:       uint32(p.MTU),
		PeerTxQLen:    -1,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create veth %s/%s: interface %s exists in the pod netns: %w", p.HostIfname, p.PodIfname, p.PodIfname, err)
		}
		return nil, fmt.Errorf("create veth %s/%s: %w", p.HostIfname, p.PodIfname, err)
	}
	l, err := linkByName(p.HostIfname)
	if err != nil {
		_ = netlink.LinkDel(veth)
		return nil, fmt.Errorf("create veth: look up %s: %w", p.HostIfname, err)
	}
	return l, nil
}

// deleteHostLink removes the host veth (and so its peer); absent is success.
func deleteHostLink(name string) error {
	l, err := linkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// setupHost brings the host veth up, adds the IPv6 gateway address when the
// pod has IPv6, and keeps router advertisements off it.
func setupHost(host netlink.Link, p plumbing) error {
	if p.IPv6.IsValid() {
		if err := writeSysctl(fmt.Sprintf("net/ipv6/conf/%s/accept_ra", p.HostIfname), "0"); err != nil {
			return fmt.Errorf("host veth: %w", err)
		}
		gw := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(GatewayIPv6, 64)), Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(host, gw); err != nil {
			return fmt.Errorf("host veth: add %s: %w", GatewayIPv6, err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("host veth: set %s up: %w", p.HostIfname, err)
	}
	return nil
}

// setupPod configures the pod end inside the pod netns: /32 and /128,
// no DAD and no router advertisements, link up, default routes onlink.
func setupPod(podNS ns.NetNS, p plumbing) (index int, mac net.HardwareAddr, err error) {
	err = podNS.Do(func(ns.NetNS) error {
		l, err := linkByName(p.PodIfname)
		if err != nil {
			return fmt.Errorf("look up %s: %w", p.PodIfname, err)
		}
		index, mac = l.Attrs().Index, l.Attrs().HardwareAddr
		if p.IPv6.IsValid() {
			// The addresses are unique by construction (the agent's IPAM), so
			// DAD only delays the pod's first packets; RAs must not add routes.
			for _, k := range []string{"accept_dad", "accept_ra"} {
				if err := writeSysctl(fmt.Sprintf("net/ipv6/conf/%s/%s", p.PodIfname, k), "0"); err != nil {
					return err
				}
			}
		}
		if p.IPv4.IsValid() {
			a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(p.IPv4, 32))}
			if err := netlink.AddrAdd(l, a); err != nil {
				return fmt.Errorf("add %s to %s: %w", a.IPNet, p.PodIfname, err)
			}
		}
		if p.IPv6.IsValid() {
			a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(p.IPv6, 128)), Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrAdd(l, a); err != nil {
				return fmt.Errorf("add %s to %s: %w", a.IPNet, p.PodIfname, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", p.PodIfname, err)
		}
		for _, r := range podRoutes(index, p) {
			if err := netlink.RouteAdd(&r); err != nil {
				return fmt.Errorf("add route %s: %w", r.String(), err)
			}
		}
		return nil
	})
	return index, mac, err
}

// podRoutes are the pod's default routes. ONLINK, because the pod's only
// address is a /32 and no prefix covers the gateway.
func podRoutes(podIndex int, p plumbing) []netlink.Route {
	var rs []netlink.Route
	if p.IPv4.IsValid() {
		rs = append(rs, netlink.Route{
			LinkIndex: podIndex,
			Dst:       prefixNet(netip.MustParsePrefix("0.0.0.0/0")),
			Gw:        p.GatewayV4.AsSlice(),
			Flags:     int(netlink.FLAG_ONLINK),
			Family:    netlink.FAMILY_V4,
		})
	}
	if p.IPv6.IsValid() {
		rs = append(rs, netlink.Route{
			LinkIndex: podIndex,
			Dst:       prefixNet(netip.MustParsePrefix("::/0")),
			Gw:        GatewayIPv6.AsSlice(),
			Flags:     int(netlink.FLAG_ONLINK),
			Family:    netlink.FAMILY_V6,
		})
	}
	return rs
}

// hostRoutes are the node's /32 and /128 routes to the pod via its veth.
func hostRoutes(hostIndex int, p plumbing) []netlink.Route {
	var rs []netlink.Route
	if p.IPv4.IsValid() {
		rs = append(rs, netlink.Route{LinkIndex: hostIndex, Dst: prefixNet(netip.PrefixFrom(p.IPv4, 32)), Scope: netlink.SCOPE_LINK, Family: netlink.FAMILY_V4})
	}
	if p.IPv6.IsValid() {
		rs = append(rs, netlink.Route{LinkIndex: hostIndex, Dst: prefixNet(netip.PrefixFrom(p.IPv6, 128)), Family: netlink.FAMILY_V6})
	}
	return rs
}

func addHostRoutes(hostIndex int, p plumbing) error {
	for _, r := range hostRoutes(hostIndex, p) {
		if err := netlink.RouteAdd(&r); err != nil {
			return fmt.Errorf("add host route %s: %w", r.Dst, err)
		}
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// writeSysctl writes under /proc/sys, which resolves net/ against the
// calling thread's netns: call it on a locked thread (skel mains lock the
// main thread; ns.Do locks its own).
func writeSysctl(key, value string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// checkPlumbing verifies, against what ADD would have built, the host veth
// and its routes in the node netns and the pod end inside podNS.
func checkPlumbing(podNS ns.NetNS, p plumbing, want plumbed) error {
	host, err := linkByName(p.HostIfname)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", p.HostIfname, err)
	}
	if _, ok := host.(*netlink.Veth); !ok {
		return fmt.Errorf("host interface %s is a %s, not a veth", p.HostIfname, host.Type())
	}
	if host.Attrs().OperState != netlink.OperUp && host.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down", p.HostIfname)
	}
	if want.HostMAC != nil && host.Attrs().HardwareAddr.String() != want.HostMAC.String() {
		return fmt.Errorf("host veth %s has MAC %s, the result says %s", p.HostIfname, host.Attrs().HardwareAddr, want.HostMAC)
	}
	if host.Attrs().MTU != p.MTU {
		return fmt.Errorf("host veth %s has MTU %d, the netconf says %d", p.HostIfname, host.Attrs().MTU, p.MTU)
	}
	peerIndex, err := netlink.VethPeerIndex(host.(*netlink.Veth))
	if err != nil {
		return fmt.Errorf("host veth %s: peer: %w", p.HostIfname, err)
	}
	if err := checkRoutes(host.Attrs().Index, hostRoutes(host.Attrs().Index, p)); err != nil {
		return fmt.Errorf("node netns: %w", err)
	}
	if p.IPv6.IsValid() {
		if err := checkAddrs(host, []netip.Prefix{netip.PrefixFrom(GatewayIPv6, 64)}); err != nil {
			return fmt.Errorf("host veth %s: %w", p.HostIfname, err)
		}
	}

	return podNS.Do(func(ns.NetNS) error {
		l, err := linkByName(p.PodIfname)
		if err != nil {
			return fmt.Errorf("pod interface %s: %w", p.PodIfname, err)
		}
		if _, ok := l.(*netlink.Veth); !ok {
			return fmt.Errorf("pod interface %s is a %s, not a veth", p.PodIfname, l.Type())
		}
		if l.Attrs().Index != peerIndex {
			return fmt.Errorf("pod interface %s (index %d) is not the peer of %s (peer index %d)", p.PodIfname, l.Attrs().Index, p.HostIfname, peerIndex)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("pod interface %s is down", p.PodIfname)
		}
		if want.PodMAC != nil && l.Attrs().HardwareAddr.String() != want.PodMAC.String() {
			return fmt.Errorf("pod interface %s has MAC %s, the result says %s", p.PodIfname, l.Attrs().HardwareAddr, want.PodMAC)
		}
		if l.Attrs().MTU != p.MTU {
			return fmt.Errorf("pod interface %s has MTU %d, the netconf says %d", p.PodIfname, l.Attrs().MTU, p.MTU)
		}
		var addrs []netip.Prefix
		if p.IPv4.IsValid() {
			addrs = append(addrs, netip.PrefixFrom(p.IPv4, 32))
		}
		if p.IPv6.IsValid() {
			addrs = append(addrs, netip.PrefixFrom(p.IPv6, 128))
		}
		if err := checkAddrs(l, addrs); err != nil {
			return fmt.Errorf("pod interface %s: %w", p.PodIfname, err)
		}
		if err := checkRoutes(l.Attrs().Index, podRoutes(l.Attrs().Index, p)); err != nil {
			return fmt.Errorf("pod netns: %w", err)
		}
		return nil
	})
}

func checkAddrs(l netlink.Link, want []netip.Prefix) error {
	have, err := addrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, w := range want {
		found := false
		for _, a := range have {
			ones, _ := a.Mask.Size()
			addr, ok := netip.AddrFromSlice(a.IP)
			if ok && addr.Unmap() == w.Addr() && ones == w.Bits() {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("address %s missing", w)
		}
	}
	return nil
}

// checkRoutes finds each wanted route in the main table on linkIndex.
func checkRoutes(linkIndex int, want []netlink.Route) error {
	for _, w := range want {
		filter := &netlink.Route{LinkIndex: linkIndex}
		have, err := routeListFiltered(w.Family, filter, netlink.RT_FILTER_OIF)
		if err != nil {
			return fmt.Errorf("list routes: %w", err)
		}
		found := false
		for _, h := range have {
			if sameDst(h.Dst, w.Dst) && h.Gw.Equal(w.Gw) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("route %s via %v missing", w.Dst, w.Gw)
		}
	}
	return nil
}

// sameDst compares destinations, where a default route may come back from
// the kernel as nil or as 0.0.0.0/0.
func sameDst(a, b *net.IPNet) bool {
	isDefault := func(n *net.IPNet) bool {
		if n == nil {
			return true
		}
		ones, _ := n.Mask.Size()
		return ones == 0
	}
	if isDefault(a) || isDefault(b) {
		return isDefault(a) && isDefault(b)
	}
	ao, _ := a.Mask.Size()
	bo, _ := b.Mask.Size()
	return a.IP.Equal(b.IP) && ao == bo
}

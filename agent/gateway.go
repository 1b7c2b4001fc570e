package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Gateway link names. The node's gateway addresses live on loupe_host, one
// end of a veth pair whose other end, loupe_net, only keeps it up (the
// pair mirrors Cilium's cilium_host/cilium_net). A veth rather than a
// dummy because veth is always there where a CNI runs, while dummy is a
// module some kernels lack.
const (
	GatewayLink     = "loupe_host"
	GatewayPeerLink = "loupe_net"
)

// SetupGateway makes the node own its pod gateways: gw4 as /32 and gw6 as
// /128 (no DAD) on loupe_host, created if missing. With the default
// arp_ignore=0, every host veth then answers ARP for gw4, which pods route
// their default through onlink. No subnet route is added: each pod gets
// its own /32 route from the CNI plugin. Global addresses on loupe_host
// other than the gateways (left by an earlier pod CIDR) are removed.
// h selects the netns (nil: the calling thread's).
func SetupGateway(h *netlink.Handle, gw4, gw6 netip.Addr) error {
	if h == nil {
		h = &netlink.Handle{}
	}
	link, err := h.LinkByName(GatewayLink)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: GatewayLink}, PeerName: GatewayPeerLink}
		if err := h.LinkAdd(veth); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("gateway: create %s: %w", GatewayLink, err)
		}
		link, err = h.LinkByName(GatewayLink)
	}
	if err != nil {
		return fmt.Errorf("gateway: find %s: %w", GatewayLink, err)
	}
	if link.Type() != "veth" && link.Type() != "dummy" {
		return fmt.Errorf("gateway: %s exists and is a %s, not a veth", GatewayLink, link.Type())
	}
	if link.Type() == "veth" {
		peer, err := h.LinkByName(GatewayPeerLink)
		if err != nil {
			return fmt.Errorf("gateway: find %s: %w", GatewayPeerLink, err)
		}
		if err := h.LinkSetUp(peer); err != nil {
			return fmt.Errorf("gateway: set %s up: %w", GatewayPeerLink, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("gateway: set %s up: %w", GatewayLink, err)
	}
	want := map[netip.Addr]bool{}
	for _, gw := range []netip.Addr{gw4, gw6} {
		if !gw.IsValid() {
			continue
		}
		want[gw] = true
		bits := 32
		var flags int
		if gw.Is6() {
			bits, flags = 128, unix.IFA_F_NODAD
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(bits, bits)}, Flags: flags}
		if err := h.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("gateway: add %s to %s: %w", gw, GatewayLink, err)
		}
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("gateway: list addresses of %s: %w", GatewayLink, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.Scope != int(netlink.SCOPE_UNIVERSE) || want[ip.Unmap()] {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("gateway: remove stale %s from %s: %w", ip, GatewayLink, err)
		}
	}
	return nil
}

// EnableForwarding turns on IPv4 and IPv6 forwarding in the calling
// thread's network namespace (a new netns starts with both off). A kernel
// without IPv6 is an error only when requireIPv6 is set.
func EnableForwarding(requireIPv6 bool) error {
	if err := writeSysctl("/proc/sys/net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	err := writeSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")
	if err != nil && !requireIPv6 && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// writeSysctl leaves a sysctl that already has the value alone: an
// unprivileged container sees /proc/sys read-only, and a node prepared as
// kubeadm requires has forwarding on already.
func writeSysctl(path, value string) error {
	if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w (without privileges /proc/sys is read-only: set it on the node)", path, value, err)
	}
	return nil
}

// LoopbackUp sets lo up in the calling thread's netns.
func LoopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback: set up: %w", err)
	}
	return nil
}

package cni

import (
	"github.com/vishvananda/netlink"

	"github.com/loupe-project/loupe/internal/nlsafe"
)

// Netlink lookups that dump, retried when concurrent pod changes interrupt
// the dump (see internal/nlsafe).

func linkByName(name string) (netlink.Link, error) {
	return nlsafe.Dump(func() (netlink.Link, error) { return netlink.LinkByName(name) })
}

func linkList() ([]netlink.Link, error) { return nlsafe.LinkList() }

func addrList(l netlink.Link, family int) ([]netlink.Addr, error) { return nlsafe.AddrList(l, family) }

func routeListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return nlsafe.RouteListFiltered(family, filter, mask)
}

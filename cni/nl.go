package cni

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// Netlink dumps can be interrupted by concurrent changes (many pods come
// and go at once); the kernel then flags the dump and netlink returns
// ErrDumpInterrupted with partial data. Retry a few times, as the
// containernetworking netlinksafe package does.
const dumpRetries = 10

func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func linkByName(name string) (netlink.Link, error) {
	return retryDump(func() (netlink.Link, error) { return netlink.LinkByName(name) })
}

func linkList() ([]netlink.Link, error) {
	return retryDump(netlink.LinkList)
}

func addrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, family) })
}

func routeListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return retryDump(func() ([]netlink.Route, error) { return netlink.RouteListFiltered(family, filter, mask) })
}

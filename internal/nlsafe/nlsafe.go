// Package nlsafe retries netlink dumps that concurrent changes interrupted.
//
// When links, addresses or routes change during a dump (pods and labs come
// and go at once), the kernel flags it and vishvananda/netlink returns
// ErrDumpInterrupted with partial data. Acting on a partial list can leave
// links behind, so dumps are retried, as containernetworking's netlinksafe
// package does.
package nlsafe

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// Retries is how many times a dump is attempted.
const Retries = 10

// Dump calls f until it returns something other than ErrDumpInterrupted,
// at most Retries times.
func Dump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range Retries {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// LinkList lists every link of the calling thread's netns.
func LinkList() ([]netlink.Link, error) { return Dump(netlink.LinkList) }

// AddrList lists the addresses of link (nil: all links).
func AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) })
}

// RouteListFiltered lists the routes that match filter under mask.
func RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return Dump(func() ([]netlink.Route, error) { return netlink.RouteListFiltered(family, filter, mask) })
}

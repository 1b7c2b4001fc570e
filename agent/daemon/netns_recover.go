package daemon

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netnsDir is where runtimes (and the lab) bind-mount pod namespaces.
const netnsDir = "/run/netns"

// netnsOfHostVeth finds the inode of the network namespace at the other
// end of a host veth, for endpoints that lost their netns path (rebuilt
// from the datapath after endpoints.json was lost): the kernel-event rule
// needs it. It matches the veth's peer namespace id with the ids of the
// namespaces under /run/netns, without entering any of them. Call it in
// the node's namespace.
func netnsOfHostVeth(hostIfname string) (uint64, error) {
	l, err := netlink.LinkByName(hostIfname)
	if err != nil {
		return 0, err
	}
	want := l.Attrs().NetNsID
	if want < 0 {
		return 0, fmt.Errorf("%s: peer in the same namespace or unknown", hostIfname)
	}
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		p := filepath.Join(netnsDir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		id, err := netlink.GetNetNsIdByFd(int(f.Fd()))
		if err == nil && id == want {
			var st unix.Stat_t
			err = unix.Fstat(int(f.Fd()), &st)
			f.Close()
			if err != nil {
				return 0, err
			}
			return st.Ino, nil
		}
		f.Close()
	}
	return 0, fmt.Errorf("%s: no namespace under %s has its peer", hostIfname, netnsDir)
}

package daemon

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// An endpoint rebuilt without its netns path still finds its namespace
// through the host veth's peer, so kernel events stay the pod's.
func TestPrivilegedNetnsOfHostVeth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	defer netns.Set(orig)

	pid := os.Getpid()
	podName := fmt.Sprintf("tcp17-pod-%d", pid)
	pod, err := netns.NewNamed(podName) // also enters it
	if err != nil {
		t.Fatal(err)
	}
	defer func() { pod.Close(); _ = netns.DeleteNamed(podName) }()
	var st unix.Stat_t
	if err := unix.Fstat(int(pod), &st); err != nil {
		t.Fatal(err)
	}
	nodeName := fmt.Sprintf("tcp17-node-%d", pid)
	node, err := netns.NewNamed(nodeName)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { node.Close(); _ = netns.DeleteNamed(nodeName) }()

	host := fmt.Sprintf("t17h%d", pid%100000)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pod))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	got, err := netnsOfHostVeth(host)
	if err != nil {
		t.Fatal(err)
	}
	if got != st.Ino {
		t.Errorf("namespace inode %d, want the pod's %d", got, st.Ino)
	}
	if _, err := netnsOfHostVeth("lo"); err == nil {
		t.Error("lo has no peer namespace, yet one was found")
	}
}

package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/loupe-project/loupe/agent"
	rpb "github.com/loupe-project/loupe/api/resources/v1"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// inode is a file's inode number, as the kernel's keys carry them (a
// cgroup's id is its directory's inode on the cgroup v2 file system).
func inode(t *testing.T, p string) uint64 {
	t.Helper()
	ino, err := fileInode(p)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// A namespace's inode is read only from a namespace: the empty file a
// namespace is mounted on (what a container without mount propagation
// sees) is refused, not taken for one.
func TestNetnsInodeRefusesPlainFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cni-1234")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if ino, err := netnsInode(f); err == nil {
		t.Fatalf("a plain file read as namespace %d", ino)
	}
	own, err := netnsInode("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil || st.Ino != own {
		t.Fatalf("own namespace %d, stat says %d (%v)", own, st.Ino, err)
	}
}

// fileInode stands in for netnsInode where plain files stand in for
// namespaces.
func fileInode(p string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// The kernel's keys go to rows: a pod endpoint's netns to that pod; in
// the node's namespace, the cgroups of a host-network pod (two containers
// and the pod's own cgroup, systemd and cgroupfs names) to that pod, the
// other cgroups (a system service's, a pod's of another node, one gone)
// to the node. A host-network pod not counted yet still has a row. A
// namespace that is no endpoint's goes to the pod of this node whose
// process in it is in the pod's kubelet cgroup.
func TestResourcesReadAttributesCgroups(t *testing.T) {
	root := t.TempDir()
	const hostUID, idleUID, otherUID = "0d5a7c1e-2b3f-4c5d-8e9f-0a1b2c3d4e5f", "11111111-2222-3333-4444-555555555555", "99999999-2222-3333-4444-555555555555"
	podDir := mkdir(t, filepath.Join(root, "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d5a7c1e_2b3f_4c5d_8e9f_0a1b2c3d4e5f.slice"))
	ctrA := mkdir(t, filepath.Join(podDir, "cri-containerd-aaaa.scope"))
	ctrB := mkdir(t, filepath.Join(podDir, "cri-containerd-bbbb.scope"))
	other := mkdir(t, filepath.Join(root, "kubepods/besteffort/pod"+otherUID))
	system := mkdir(t, filepath.Join(root, "system.slice/containerd.service"))
	netns := filepath.Join(t.TempDir(), "pod-netns")
	if err := os.WriteFile(netns, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	nodeNetns := filepath.Join(t.TempDir(), "node-netns")
	if err := os.WriteFile(nodeNetns, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	podIno, nodeIno := inode(t, netns), inode(t, nodeNetns)
	// A pod's namespace that is no endpoint's, found through a process of
	// the pod in a /proc of the test's.
	const strayUID = "22222222-3333-4444-5555-666666666666"
	proc := t.TempDir()
	mkdir(t, filepath.Join(proc, "4242/ns"))
	for name, body := range map[string]string{"4242/ns/net": "", "4242/cgroup": "1:cpu:/\n0::/kubepods/besteffort/pod" + strayUID + "/ctr\n"} {
		if err := os.WriteFile(filepath.Join(proc, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	strayIno := inode(t, filepath.Join(proc, "4242/ns/net"))

	cg := func(p string) uint64 { return inode(t, p) | datapath.ResKeyCgroup }
	st := func(cpu uint64) datapath.ResourceStats { return datapath.ResourceStats{CPUNs: cpu, RunqCount: 1} }
	snap := map[uint64]datapath.ResourceStats{
		podIno:                            st(1),
		cg(ctrA):                          st(10),
		cg(ctrB):                          st(20),
		cg(podDir):                        st(40),
		cg(other):                         st(100),
		cg(system):                        st(1000),
		(1 << 40) | datapath.ResKeyCgroup: st(10000), // a cgroup gone since
		4026530000:                        st(1e5),   // another node's pod: no one's here
		strayIno:                          st(1e6),   // a pod of this node in a namespace no endpoint has
	}
	pod := func(ns, name, uid, node string, host bool) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
			Spec: corev1.PodSpec{NodeName: node, HostNetwork: host}}
	}
	meta := metadata.Static{Snap: &metadata.Snapshot{Pods: []*corev1.Pod{
		pod("x", "a", "aaaaaaaa-2222-3333-4444-555555555555", "n1", false),
		pod("kube-system", "agent", hostUID, "n1", true),
		pod("kube-system", "idle", idleUID, "n1", true),
		pod("y", "elsewhere", otherUID, "n2", false),
		pod("z", "stray", strayUID, "n1", false),
	}}}
	eps := func() []agent.Endpoint {
		return []agent.Endpoint{{PodNamespace: "x", PodName: "a", Netns: netns}}
	}
	r := &podResources{node: "n1", nodeIno: nodeIno, pods: &netnsPods{eps: eps, meta: meta, inode: fileInode}, meta: meta,
		cgroups: newPodCgroups(root), netns: newNetnsCgroups(proc),
		snapshot: func() (map[uint64]datapath.ResourceStats, error) { return snap, nil }}
	rows, err := r.read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*rpb.PodResources{}
	for _, row := range rows {
		got[row.Namespace+"/"+row.Pod] = row
	}
	for name, want := range map[string]struct{ cpu, waits, ino uint64 }{
		"x/a":               {1, 1, podIno},
		"kube-system/agent": {70, 3, nodeIno},
		"kube-system/idle":  {0, 0, nodeIno},
		"/":                 {11100, 3, nodeIno},
	} {
		row := got[name]
		if row == nil {
			t.Errorf("no row for %q in %v", name, rows)
			continue
		}
		if row.CpuNs != want.cpu || row.Runqueue.Count != want.waits || row.NetnsInode != want.ino || row.Node != "n1" {
			t.Errorf("%s: cpu %d, %d waits, netns %d; want %d, %d, %d", name, row.CpuNs, row.Runqueue.Count, row.NetnsInode,
				want.cpu, want.waits, want.ino)
		}
	}
	if len(rows) != 5 {
		t.Errorf("%d rows, want 5: %v", len(rows), rows)
	}
	if last := rows[len(rows)-1]; last.Pod != "" {
		t.Errorf("the node's row is not last: %v", last)
	}
}

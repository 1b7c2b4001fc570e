package daemon

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestPodUIDOfCgroup(t *testing.T) {
	const uid = "0d5a7c1e-2b3f-4c5d-8e9f-0a1b2c3d4e5f"
	const ctr = "4f9a2d1c0b3e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c"
	for _, c := range []struct{ path, want string }{
		// cgroupfs driver, each QoS class
		{"/kubepods/pod" + uid, uid},
		{"/kubepods/pod" + uid + "/" + ctr, uid},
		{"/kubepods/burstable/pod" + uid + "/" + ctr, uid},
		{"/kubepods/besteffort/pod" + uid, uid},
		// systemd driver: dashes become underscores in the slice name
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + ctr + ".scope", uid},
		{"/kubepods.slice/kubepods-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice", uid},
		// kind's kubelet.slice, a --cgroup-root
		{"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice", uid},
		{"/custom/root/kubepods/burstable/pod" + uid + "/" + ctr, uid},
		// a static pod: its config hash
		{"/kubepods/burstable/pod0123456789abcdef0123456789abcdef/" + ctr, "0123456789abcdef0123456789abcdef"},
		// not pods
		{"/", ""},
		{"/kubepods", ""},
		{"/kubepods/burstable", ""},
		{"/system.slice/containerd.service", ""},
		{"/pod" + uid, ""},                         // not under kubepods
		{"/kubepods/burstable/pod" + uid[:35], ""}, // short
		{"/kubepods/burstable/xpod" + uid, ""},
		{"/kubepods/burstable/pod" + uid + ".scope", ""},
		{"/kubepods/burstable/pod" + strings.ToUpper(uid), ""},
	} {
		if got := podUIDOfCgroup(c.path); got != c.want {
			t.Errorf("podUIDOfCgroup(%q) = %q, want %q", c.path, got, c.want)
		}
	}
}

var uidRE = regexp.MustCompile(`^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$`)

func FuzzPodUIDOfCgroup(f *testing.F) {
	f.Add("/kubepods/burstable/pod0d5a7c1e-2b3f-4c5d-8e9f-0a1b2c3d4e5f/abc")
	f.Add("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d5a7c1e_2b3f_4c5d_8e9f_0a1b2c3d4e5f.slice")
	f.Add("/system.slice")
	f.Fuzz(func(t *testing.T, p string) {
		uid := podUIDOfCgroup(p)
		if uid == "" {
			return
		}
		// A UID, spelled in the path (with _ for - under systemd), under a
		// kubepods cgroup.
		if !uidRE.MatchString(uid) {
			t.Fatalf("%q: %q is not a UID", p, uid)
		}
		i := strings.Index(p, "kubepods")
		if i < 0 || !strings.Contains(strings.ReplaceAll(p[i:], "_", "-"), uid) {
			t.Fatalf("%q: UID %q not under kubepods in the path", p, uid)
		}
	})
}

// A cgroup made after a walk is found by the next one; one removed keeps
// what it was (ids are not reused); an id never seen is no pod's.
func TestPodCgroupsWalk(t *testing.T) {
	root := t.TempDir()
	const a, b = "0d5a7c1e-2b3f-4c5d-8e9f-0a1b2c3d4e5f", "11111111-2222-3333-4444-555555555555"
	ctr := strings.Repeat("c", 64)
	dirA := mkdir(t, filepath.Join(root, "kubepods/burstable/pod"+a, ctr))
	inoA := inode(t, dirA)
	c := newPodCgroups(root)
	if got := c.pod(inoA); got.uid != a || got.container != ctr[:12] {
		t.Fatalf("pod A's container cgroup: %+v", got)
	}
	dirB := mkdir(t, filepath.Join(root, "kubepods/pod"+b))
	c.last = time.Time{} // the next miss may walk again
	if got := c.pod(inode(t, dirB)); got.uid != b || got.container != "" {
		t.Errorf("pod B, made after the first walk: %+v", got)
	}
	if err := os.RemoveAll(filepath.Join(root, "kubepods/burstable")); err != nil {
		t.Fatal(err)
	}
	c.last = time.Time{}
	if got := c.pod(inoA); got.uid != a {
		t.Errorf("pod A's removed cgroup: %+v", got)
	}
	if got := c.pod(1 << 40); got.uid != "" {
		t.Errorf("an id never seen: %+v", got)
	}
	if got := newPodCgroups("").pod(inoA); got.uid != "" {
		t.Errorf("without a cgroup v2 mount: %+v", got)
	}
}

func TestPodUIDOfProcCgroup(t *testing.T) {
	const uid = "0d5a7c1e-2b3f-4c5d-8e9f-0a1b2c3d4e5f"
	for _, c := range []struct{ file, want string }{
		{"0::/kubepods/burstable/pod" + uid + "/abc\n", uid},
		// cgroup v1 (hybrid): any hierarchy's path names the pod
		{"12:memory:/kubepods/burstable/pod" + uid + "/abc\n11:cpu,cpuacct:/kubepods/burstable/pod" + uid + "/abc\n0::/\n", uid},
		{"1:name=systemd:/\n0::/system.slice/containerd.service\n", ""},
		// in the agent's own cgroup namespace, others' paths go up first
		{"0::/../../kubepods.slice/kubepods-pod0d5a7c1e_2b3f_4c5d_8e9f_0a1b2c3d4e5f.slice/cri-containerd-abc.scope", uid},
		{"", ""},
		{"garbage", ""},
		{"0:/kubepods/pod" + uid, ""}, // one field short
	} {
		if got := podUIDOfProcCgroup([]byte(c.file)); got != c.want {
			t.Errorf("podUIDOfProcCgroup(%q) = %q, want %q", c.file, got, c.want)
		}
	}
}

func FuzzPodUIDOfProcCgroup(f *testing.F) {
	f.Add([]byte("0::/kubepods/burstable/pod0d5a7c1e-2b3f-4c5d-8e9f-0a1b2c3d4e5f/abc\n"))
	f.Add([]byte("4:memory:/process_api/f3ca\n0::/\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if uid := podUIDOfProcCgroup(b); uid != "" && !uidRE.MatchString(uid) {
			t.Fatalf("%q: %q is not a UID", b, uid)
		}
	})
}

// A namespace is a pod's when one of its processes is in the pod's
// cgroup; one with no such process is no pod's.
func TestNetnsCgroupsScan(t *testing.T) {
	const uid = "0d5a7c1e-2b3f-4c5d-8e9f-0a1b2c3d4e5f"
	proc := t.TempDir()
	write := func(name, body string) uint64 {
		p := filepath.Join(proc, name)
		mkdir(t, filepath.Dir(p))
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return inode(t, p)
	}
	pod := write("10/ns/net", "")
	write("10/cgroup", "0::/kubepods/pod"+uid+"/ctr\n")
	other := write("11/ns/net", "")
	write("11/cgroup", "0::/system.slice/x.service\n")
	write("self/ns/net", "") // not a pid
	c := newNetnsCgroups(proc)
	if got := c.podUID(pod); got != uid {
		t.Errorf("the pod's namespace: %q", got)
	}
	if got := c.podUID(other); got != "" {
		t.Errorf("a system service's namespace: %q", got)
	}
	if got := c.podUID(1 << 40); got != "" {
		t.Errorf("a namespace with no process: %q", got)
	}
}

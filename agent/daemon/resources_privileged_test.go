package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/loupe-project/loupe/agent"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// loadNodeResources loads the resource programs with this process's
// network namespace as the node's, and returns them (closed when the test
// ends) with the cgroup v2 mount; it skips without root or cgroup v2.
func loadNodeResources(t *testing.T) (k *datapath.Resources, root string, nodeIno uint64) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if root = cgroup2Root(); root == "" {
		t.Skip("no cgroup v2 mount")
	}
	nodeIno, err := netnsInode("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if k, err = datapath.LoadResources(nodeIno); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k, root, nodeIno
}

// A host-network pod's process, in the node's network namespace, is
// counted for the pod through the real programs: the test makes a cgroup
// v2 tree named as the kubelet's systemd driver names a pod's container,
// starts a shell in it that spins for 300 ms and sleeps ten times, and
// reads the agent's rows. The pod's on-CPU time is the shell's (and its
// children's, up to their exits) own CPU time from wait4, and its
// run-queue waits at least the sleeps' wake-ups.
// makeCgroup creates the cgroup ctr and its parents up to top, removes
// them when the test ends, and returns ctr opened, for
// SysProcAttr.CgroupFD.
func makeCgroup(t *testing.T, top, ctr string) *os.File {
	t.Helper()
	if err := os.MkdirAll(ctr, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for p := ctr; strings.HasPrefix(p, top); p = filepath.Dir(p) {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("remove cgroup %s: %v", p, err)
			}
		}
	})
	fd, err := os.Open(ctr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() })
	return fd
}

func TestPrivilegedResourcesHostNetworkPodByCgroup(t *testing.T) {
	k, root, nodeIno := loadNodeResources(t)

	const uid = "5e1f0c2a-7b3d-4e8f-9a0b-1c2d3e4f5a6b"
	top := filepath.Join(root, fmt.Sprintf("loupe-test-%d.slice", os.Getpid()))
	podDir := filepath.Join(top, "kubepods-burstable.slice", "kubepods-burstable-pod"+strings.ReplaceAll(uid, "-", "_")+".slice")
	ctr := filepath.Join(podDir, "cri-containerd-"+strings.Repeat("ab", 32)+".scope")
	fd := makeCgroup(t, top, ctr)
	cmd := exec.Command("/bin/sh", "-c", `timeout 0.3 sh -c 'while :; do :; done'; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.01; done`)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	used := time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))

	meta := metadata.Static{Snap: &metadata.Snapshot{Pods: []*corev1.Pod{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "hostnet", UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: "n1", HostNetwork: true}}}}}
	r := &podResources{node: "n1", nodeIno: nodeIno, pods: &netnsPods{eps: func() []agent.Endpoint { return nil }, meta: meta}, meta: meta,
		cgroups: newPodCgroups(root), snapshot: k.Snapshot}
	settleCPUs()
	rows, err := r.read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, row := range rows {
		if row.Pod != "hostnet" {
			continue
		}
		found = true
		cpu := time.Duration(row.CpuNs)
		t.Logf("pod row: cpu %v (wait4 says %v), %d waits summing %v", cpu, used, row.Runqueue.Count, time.Duration(row.Runqueue.SumNs))
		if cpu < used*9/10-5*time.Millisecond || cpu > used*11/10+5*time.Millisecond {
			t.Errorf("pod's on-CPU %v, its processes used %v", cpu, used)
		}
		if row.Runqueue.Count < 10 {
			t.Errorf("%d run-queue waits for ten sleeps", row.Runqueue.Count)
		}
		if row.NetnsInode != nodeIno {
			t.Errorf("row's netns %d, the node's is %d", row.NetnsInode, nodeIno)
		}
	}
	if !found {
		t.Fatalf("no row for the pod: %v", rows)
	}
}

// settleCPUs makes every CPU switch away from a thread of the test's,
// sleeping: what the switch program still holds for another key goes to
// the map.
func settleCPUs() {
	var wg sync.WaitGroup
	for cpu := range runtime.NumCPU() {
		wg.Go(func() {
			runtime.LockOSThread() // ends with the goroutine, affinity and all
			var set unix.CPUSet
			set.Set(cpu)
			_ = unix.SchedSetaffinity(0, &set)
			_ = unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
		})
	}
	wg.Wait()
}

// A pod whose network namespace is no endpoint's is found through its
// process: the test makes a namespace and a cgroup v2 tree named as the
// kubelet's cgroupfs driver names a pod's container, starts a shell in
// both that spins for 200 ms and then sleeps (as a pod's processes stay),
// and reads the agent's rows: the pod's row has the namespace's inode
// and the shell's CPU time (from /proc/PID/stat, in clock ticks).
func TestPrivilegedResourcesPodNetnsByProcCgroup(t *testing.T) {
	k, root, nodeIno := loadNodeResources(t)
	name := fmt.Sprintf("loupe-res-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	netnsIno, err := netnsInode("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}

	const uid = "6f2a1d3b-8c4e-4f90-a1b2-c3d4e5f6a7b8"
	top := filepath.Join(root, fmt.Sprintf("loupe-test-%d", os.Getpid()))
	ctr := filepath.Join(top, "kubepods", "besteffort", "pod"+uid, strings.Repeat("cd", 32))
	fd := makeCgroup(t, top, ctr)
	cmd := exec.Command("ip", "netns", "exec", name, "/bin/sh", "-c",
		`timeout 0.2 sh -c 'while :; do :; done'; echo spun; exec sleep 60`)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Registered after the cgroups' removal: runs before it.
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatalf("the shell did not spin: %v", err)
	}
	used := procCPU(t, cmd.Process.Pid)

	meta := metadata.Static{Snap: &metadata.Snapshot{Pods: []*corev1.Pod{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "stray", UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: "n1"}}}}}
	r := &podResources{node: "n1", nodeIno: nodeIno, pods: &netnsPods{eps: func() []agent.Endpoint { return nil }, meta: meta},
		meta: meta, cgroups: newPodCgroups(root), netns: newNetnsCgroups("/proc"), snapshot: k.Snapshot}
	settleCPUs()
	rows, err := r.read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		if row.Pod != "stray" {
			continue
		}
		cpu := time.Duration(row.CpuNs)
		t.Logf("pod row: netns %d, cpu %v (/proc says %v), %d waits", row.NetnsInode, cpu, used, row.Runqueue.Count)
		if row.NetnsInode != netnsIno {
			t.Errorf("row's netns %d, the pod's is %d", row.NetnsInode, netnsIno)
		}
		// /proc counts in ticks (10 ms here).
		if cpu < used*9/10-20*time.Millisecond || cpu > used*11/10+20*time.Millisecond {
			t.Errorf("pod's on-CPU %v, its processes used %v", cpu, used)
		}
		return
	}
	t.Fatalf("no row for the pod: %v", rows)
}

// procCPU is a process's CPU time and its waited-for children's, from
// /proc/PID/stat (utime, stime, cutime, cstime).
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // fields 14-17, counting from 1 with pid and comm
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			t.Fatalf("stat field %d: %v", i, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

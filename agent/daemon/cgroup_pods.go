package daemon

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The kubelet names a pod's cgroup after the pod's UID, under a
// "kubepods" cgroup, with either cgroup driver:
//
//	cgroupfs: /kubepods/burstable/pod<uid>/<container>
//	systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _ for ->.slice/cri-containerd-<id>.scope
//
// (with a --cgroup-root or kind's kubelet.slice in front). A static pod's
// UID is the 32 hex digits of its config hash, which its mirror pod carries
// in the kubernetes.io/config.mirror annotation.
var podCgroupRE = regexp.MustCompile(`^(?:.*-)?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})(?:\.slice)?$`)

// podUIDOfCgroup returns the UID of the pod whose cgroup path (relative to
// the cgroup v2 mount) p is, or is under; "" when p is no pod's.
func podUIDOfCgroup(p string) string {
	parts := strings.Split(p, "/")
	for i, part := range parts {
		if !strings.Contains(part, "kubepods") {
			continue
		}
		// The pod's cgroup is below the first kubepods one.
		for _, q := range parts[i+1:] {
			if m := podCgroupRE.FindStringSubmatch(q); m != nil {
				return strings.ReplaceAll(m[1], "_", "-")
			}
		}
		return ""
	}
	return ""
}

// cgroup2Root is where the cgroup v2 hierarchy (whose ids the kernel
// reports) is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a
// hybrid (v1 and v2) host; in a container, the node's under /host first
// (the container's own shows only its cgroup); "" when none is.
func cgroup2Root() string {
	for _, p := range []string{"/host/sys/fs/cgroup", "/host/sys/fs/cgroup/unified", "/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	return ""
}

// cgroupPod is what a cgroup's path says about it: the UID of the pod the
// kubelet made it for ("" when none) and the container's id (its first 12
// digits, "" when the path names none).
type cgroupPod struct {
	uid, container string
}

// podCgroups maps cgroup v2 ids to the pods the kubelet made them for,
// by walking the cgroup tree again when an id is not known (at most every
// endpointNetnsRefresh). A cgroup's id is its directory's inode number on
// the cgroup v2 file system; ids are not reused, so what a walk found (or
// did not: a cgroup gone since) stays true, until the table is too big.
type podCgroups struct {
	root string
	scanTable[cgroupPod]
}

// maxPodCgroups bounds the table: past it, it starts again.
const maxPodCgroups = 65536

func newPodCgroups(root string) *podCgroups {
	return &podCgroups{root: root, scanTable: newScanTable[cgroupPod](endpointNetnsRefresh)}
}

// scanTable is what a scan (of the cgroup tree, of /proc) says about ids:
// a miss scans again, at most every `every`; an id no scan found reads as
// V's zero value until the table outgrows maxPodCgroups and starts again.
type scanTable[V any] struct {
	every time.Duration
	mu    sync.Mutex
	m     map[uint64]V
	last  time.Time
}

func newScanTable[V any](every time.Duration) scanTable[V] {
	return scanTable[V]{every: every, m: map[uint64]V{}}
}

// get returns id's value, calling scan to fill the table on a miss when
// the last scan is old enough.
func (t *scanTable[V]) get(id uint64, scan func(m map[uint64]V)) V {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.m[id]; ok || time.Since(t.last) < t.every {
		return v
	}
	t.last = time.Now()
	if len(t.m) > maxPodCgroups {
		clear(t.m)
	}
	scan(t.m)
	v, ok := t.m[id]
	if !ok {
		t.m[id] = v // gone before the scan, or never anyone's
	}
	return v
}

// pod returns what cgroup id's path says (zero for a cgroup that is no
// pod's, or not found).
func (c *podCgroups) pod(id uint64) cgroupPod {
	if c == nil || c.root == "" {
		return cgroupPod{}
	}
	return c.get(id, c.walk)
}

// walk adds the tree's cgroups that ids lacks.
func (c *podCgroups) walk(ids map[uint64]cgroupPod) {
	_ = filepath.WalkDir(c.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			return nil
		}
		if _, ok := ids[st.Ino]; ok {
			return nil
		}
		rel := strings.TrimPrefix(p, c.root)
		var cp cgroupPod
		if cp.uid = podUIDOfCgroup(rel); cp.uid != "" {
			if m := containerIDRE.FindAllString(rel, -1); len(m) > 0 {
				cp.container = m[len(m)-1][:12]
			}
		}
		ids[st.Ino] = cp
		return nil
	})
}

// podUIDOfProcCgroup returns the pod UID in a /proc/PID/cgroup file's
// paths ("ID:CONTROLLERS:PATH" lines, cgroup v2's "0::PATH" and any v1
// hierarchy's), or "".
func podUIDOfProcCgroup(b []byte) string {
	for _, line := range strings.Split(string(b), "\n") {
		_, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if _, path, ok := strings.Cut(rest, ":"); ok {
			if uid := podUIDOfCgroup(path); uid != "" {
				return uid
			}
		}
	}
	return ""
}

// netnsCgroups maps network namespaces that are no endpoint's (a pod's
// made before the agent knew it, say) to the pods the kubelet runs in
// them, through a process in each: its /proc/PID/ns/net and the kubelet's
// cgroup in its /proc/PID/cgroup. /proc is scanned again when a namespace
// is not known, at most every netnsScanEvery; a namespace no scan found a
// pod process in stays no pod's until the table is too big.
type netnsCgroups struct {
	proc string
	scanTable[string]
}

const netnsScanEvery = 10 * time.Second

func newNetnsCgroups(proc string) *netnsCgroups {
	return &netnsCgroups{proc: proc, scanTable: newScanTable[string](netnsScanEvery)}
}

// podUID returns the UID of the pod whose processes are in network
// namespace ino, or "".
func (c *netnsCgroups) podUID(ino uint64) string {
	if c == nil {
		return ""
	}
	return c.get(ino, c.scan)
}

// scan adds the namespaces of /proc's processes, with their pods' UIDs.
func (c *netnsCgroups) scan(uids map[uint64]string) {
	entries, _ := os.ReadDir(c.proc)
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join(c.proc, e.Name(), "ns/net"), &st) != nil {
			continue
		}
		if uid, ok := uids[st.Ino]; ok && uid != "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.proc, e.Name(), "cgroup"))
		if err != nil {
			continue
		}
		// A pod's namespace holds only its processes: the first that
		// names a pod does.
		if uid := podUIDOfProcCgroup(b); uid != "" {
			uids[st.Ino] = uid
		} else if _, ok := uids[st.Ino]; !ok {
			uids[st.Ino] = ""
		}
	}
}

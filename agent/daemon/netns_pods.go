package daemon

import (
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/loupe-project/loupe/agent"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer"
)

// netnsPod is the pod that owns a network namespace: what a kernel-wide
// event (a security event, a resource counter) is attributed to.
type netnsPod struct {
	namespace, name, netnsName string
	key                        string // namespace/name
	workload                   string
	labels                     map[string]string
	ips                        []netip.Addr
}

// netnsPods maps the agent's endpoints' network namespace inodes to their
// pods, rebuilt from the endpoint list at most every endpointNetnsRefresh
// on a miss.
type netnsPods struct {
	eps  func() []agent.Endpoint
	meta metadata.Source
	// inode finds a namespace file's inode: netnsInode when nil (tests
	// give plain files).
	inode func(path string) (uint64, error)

	mu    sync.Mutex
	byIno map[uint64]*netnsPod
	built time.Time
}

// pod returns the pod whose namespace has inode inum, or nil.
func (t *netnsPods) pod(inum uint64) *netnsPod {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.byIno[inum]; ok || time.Since(t.built) < endpointNetnsRefresh {
		return p
	}
	t.rebuild()
	return t.byIno[inum]
}

// all rebuilds the table and returns it (the caller must not change it).
func (t *netnsPods) all() map[uint64]*netnsPod {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rebuild()
	return t.byIno
}

func (t *netnsPods) rebuild() {
	snap := t.meta.Current()
	t.byIno = map[uint64]*netnsPod{}
	inode := t.inode
	if inode == nil {
		inode = netnsInode
	}
	for _, e := range t.eps() {
		ino, err := inode(e.Netns)
		if err != nil {
			continue
		}
		p := &netnsPod{namespace: e.PodNamespace, name: e.PodName, key: e.PodNamespace + "/" + e.PodName,
			netnsName: filepath.Base(e.Netns), workload: e.PodName}
		for _, a := range []netip.Addr{e.IPv4, e.IPv6} {
			if a.IsValid() {
				p.ips = append(p.ips, a)
			}
		}
		for _, mp := range snap.Pods {
			if mp.Namespace == e.PodNamespace && mp.Name == e.PodName {
				p.labels = mp.Labels
				if w := observer.PodWorkload(mp); w != "" {
					p.workload = w
				}
			}
		}
		t.byIno[ino] = p
	}
	t.built = time.Now()
}

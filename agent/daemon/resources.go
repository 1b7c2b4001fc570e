package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"

	"github.com/loupe-project/loupe/agent"
	rpb "github.com/loupe-project/loupe/api/resources/v1"
	spb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/resources"
)

// OOM kills go to the security events stream (loupe events) under this
// rule name, at this priority.
const (
	oomRule      = "OOM kill"
	oomEventType = "oom_kill"
)

// podResources is the agent's per-pod resource observation: the kernel's
// counters, attributed to the agent's pods and its node
// (contract.ReportsNetns), served on the Resources gRPC service. The
// kernel keys a task by its network namespace, or in the node's own
// namespace by its cgroup: those of a pod's cgroups (a host-network pod's)
// count for the pod, the others for the node.
type podResources struct {
	node    string
	nodeIno uint64
	log     *slog.Logger
	kernel  *datapath.Resources
	// snapshot reads the kernel's counters by key (kernel.Snapshot).
	snapshot func() (map[uint64]datapath.ResourceStats, error)
	pods     *netnsPods
	meta     metadata.Source
	cgroups  *podCgroups
	netns    *netnsCgroups
	svc      *resources.Service
	// oom receives OOM kill events (the security events' store); nil
	// when security events are off: the kills are then only counted.
	oom func(*spb.GetEventsResponse)
}

// startResources loads the resource tracepoints. A kernel without them
// costs the feature, not the agent.
func startResources(cfg *Config, eps func() []agent.Endpoint, meta metadata.Source, log *slog.Logger) (*podResources, error) {
	r := &podResources{node: cfg.NodeName, log: log, pods: &netnsPods{eps: eps, meta: meta}, meta: meta,
		cgroups: newPodCgroups(cgroup2Root()), netns: newNetnsCgroups("/proc")}
	if err := cfg.inNetNS(func() error {
		var err error
		r.nodeIno, err = netnsInode("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		return nil, fmt.Errorf("node netns: %w", err)
	}
	k, err := datapath.LoadResources(r.nodeIno)
	if err != nil {
		log.Warn("per-pod resources off", "err", err)
		return nil, nil
	}
	r.kernel, r.snapshot = k, k.Snapshot
	r.svc = resources.NewService(r.read)
	log.Info("per-pod resources on")
	return r, nil
}

func (r *podResources) register(s grpc.ServiceRegistrar) { r.svc.Register(s) }

func (r *podResources) Close() error { return r.kernel.Close() }

// read is every pod of the agent, every host-network pod of its node (with
// zeros for a pod the kernel has not counted yet), the pods of its node
// found in namespaces that are no endpoint's, and the node's own row.
func (r *podResources) read(context.Context) ([]*rpb.PodResources, error) {
	snap, err := r.snapshot()
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixNano()
	rows := map[string]*resRow{}
	row := func(ns, name, workload string, ino uint64) *resRow {
		k := ns + "/" + name
		if rows[k] == nil {
			rows[k] = &resRow{ns: ns, name: name, workload: workload, ino: ino}
		}
		return rows[k]
	}
	// Each pod is the agent's own endpoint: this agent, and only it,
	// reports it (contract.ReportsNetns).
	pods := r.pods.all()
	for ino, p := range pods {
		row(p.namespace, p.name, p.workload, ino).s.Add(snap[ino])
	}
	// A cgroup key is a task of this node's namespace, so this agent's.
	byUID := r.nodePods()
	for _, p := range byUID {
		if p.hostNetwork {
			row(p.namespace, p.name, p.workload, r.nodeIno)
		}
	}
	// The node's own tasks: what the kernel keyed by the node's netns
	// (nothing, unless loaded without it) and the cgroups of no pod; a pod
	// that shares the node's namespace as an endpoint takes them.
	var node datapath.ResourceStats
	nodePod, shared := pods[r.nodeIno]
	if !shared {
		node.Add(snap[r.nodeIno])
	}
	for key, s := range snap {
		if key&datapath.ResKeyCgroup == 0 {
			continue
		}
		if p, ok := byUID[r.cgroups.pod(key&^datapath.ResKeyCgroup).uid]; ok {
			row(p.namespace, p.name, p.workload, r.nodeIno).s.Add(s)
		} else {
			node.Add(s)
		}
	}
	if shared {
		row(nodePod.namespace, nodePod.name, nodePod.workload, r.nodeIno).s.Add(node)
	}
	// A namespace that is no endpoint's but a pod of this node's (its
	// processes in the kubelet's cgroups for the pod): the pod's.
	for key, s := range snap {
		if _, ok := pods[key]; ok || key&datapath.ResKeyCgroup != 0 || key == r.nodeIno {
			continue
		}
		if p, ok := byUID[r.netns.podUID(key)]; ok {
			rw := row(p.namespace, p.name, p.workload, key)
			rw.ino = key // its own, though its cgroups' counts from the node's came first
			rw.s.Add(s)
		}
	}
	out := make([]*rpb.PodResources, 0, len(rows)+1)
	for _, p := range rows {
		out = append(out, podRow(r.node, p.ns, p.name, p.workload, p.ino, now, p.s))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Pod < b.Pod
	})
	if !shared {
		out = append(out, podRow(r.node, "", "", "", r.nodeIno, now, node))
	}
	return out, nil
}

// resRow is one pod's counts, summed over its keys.
type resRow struct {
	ns, name, workload string
	ino                uint64
	s                  datapath.ResourceStats
}

// nodePod is a pod of the agent's node, as the metadata has it.
type nodePod struct {
	namespace, name, workload string
	hostNetwork               bool
}

// nodePods is the node's pods by the UID their cgroups are named after
// (a static pod's: its mirror pod's config hash).
func (r *podResources) nodePods() map[string]nodePod {
	out := map[string]nodePod{}
	if r.meta == nil {
		return out
	}
	for _, p := range r.meta.Current().Pods {
		if p.Spec.NodeName != r.node || p.UID == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		np := nodePod{namespace: p.Namespace, name: p.Name, workload: p.Name, hostNetwork: p.Spec.HostNetwork}
		if w := observer.PodWorkload(p); w != "" {
			np.workload = w
		}
		out[string(p.UID)] = np
		if h := p.Annotations[mirrorPodAnnotation]; h != "" {
			out[h] = np
		}
	}
	return out
}

// mirrorPodAnnotation holds a static pod's config hash on its mirror pod:
// the UID the kubelet knows the pod by, and names its cgroup after.
const mirrorPodAnnotation = "kubernetes.io/config.mirror"

func podRow(node, ns, pod, workload string, ino uint64, now int64, s datapath.ResourceStats) *rpb.PodResources {
	return &rpb.PodResources{Namespace: ns, Pod: pod, Node: node, Workload: workload, TimeUnixNano: now, NetnsInode: ino,
		CpuNs:      s.CPUNs,
		Runqueue:   &rpb.Histogram{Buckets: s.Runq[:], Count: s.RunqCount, SumNs: s.RunqSumNs},
		BlockIo:    &rpb.Histogram{Buckets: s.IO[:], Count: s.IOOps, SumNs: s.IOSumNs},
		IoBytes:    s.IOBytes,
		PageFaults: s.PageFaults,
		OomKills:   s.OOMKills}
}

// run reads OOM records until ctx ends.
func (r *podResources) run(ctx context.Context) error {
	return r.kernel.ReadOOM(ctx, r.handleOOM)
}

func (r *podResources) handleOOM(raw []byte) {
	rec, err := datapath.DecodeOOMRecord(raw)
	if err != nil {
		r.log.Debug("oom record", "err", err)
		return
	}
	var pod *netnsPod
	if !contract.ReportsNetns(rec.NetnsIno, r.nodeIno, func(i uint64) bool {
		pod = r.pods.pod(i)
		return pod != nil
	}) {
		return
	}
	page := uint64(os.Getpagesize())
	rss := (rec.AnonRSS + rec.FileRSS + rec.ShmemRSS) * page
	where, by, ns, name, cid := "node "+r.node, "node", "", "", "host"
	switch {
	case pod != nil:
		where, by, ns, name, cid = "pod "+pod.namespace+"/"+pod.name, "netns", pod.namespace, pod.name, pod.netnsName
	case rec.NetnsIno == r.nodeIno:
		// In the node's namespace: a host-network pod's, by its cgroup.
		cp := r.cgroups.pod(rec.CgroupID)
		if p, ok := r.nodePods()[cp.uid]; ok && cp.uid != "" {
			where, by, ns, name, cid = "pod "+p.namespace+"/"+p.name, "cgroup", p.namespace, p.name, cp.container
		}
	}
	r.log.Warn("OOM kill", "namespace", ns, "pod", name, "process", rec.Comm, "pid", rec.PID, "rss_bytes", rss)
	if r.oom == nil {
		return
	}
	t := bootToWall(rec.TimeNs)
	out := fmt.Sprintf("Process killed by the OOM killer (%s process=%s pid=%d rss=%dkB anon=%dkB file=%dkB shmem=%dkB total_vm=%dkB)",
		where, rec.Comm, rec.PID, rss>>10, rec.AnonRSS*page>>10, rec.FileRSS*page>>10, rec.ShmemRSS*page>>10, rec.TotalVM*page>>10)
	ev := &spb.SecurityEvent{TimeUnixNano: t.UnixNano(), NodeName: r.node, Rule: oomRule, Priority: "Warning", Output: out,
		Tags: []string{"resources", "memory"}, Namespace: ns, Pod: name, ContainerId: cid, EventType: oomEventType,
		NetnsInode: rec.NetnsIno, CgroupId: rec.CgroupID, AttributedBy: by,
		Process: &spb.Process{Name: rec.Comm, Pid: rec.PID, Uid: rec.UID}}
	r.oom(&spb.GetEventsResponse{NodeName: r.node, TimeUnixNano: ev.TimeUnixNano, ResponseTypes: &spb.GetEventsResponse_Event{Event: ev}})
}

// newResourceLossCollector exports what the resource programs could not
// count, so that a shortfall in a pod's numbers can be told from a quiet pod.
func newResourceLossCollector(counters func() (datapath.ResourceCounters, error)) *counterCollector {
	return newCounterCollector("loupe_resources_not_counted_total",
		"Kernel observations the per-pod resource programs could not count: oom_ring_full (OOM records lost), netns_table_full (no room for a new network namespace or cgroup key), request_not_seen (block completions of requests not seen starting), program_skipped (the kernel skipped a program because another BPF program ran on its CPU)",
		"reason", func() ([]labeledCount, error) {
			s, err := counters()
			return []labeledCount{{"oom_ring_full", s.OOMLost}, {"netns_table_full", s.NetnsFull},
				{"request_not_seen", s.RQMissed}, {"program_skipped", s.Skipped}}, err
		})
}

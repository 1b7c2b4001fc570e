package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/loupe-project/loupe/agent"
	pb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/secevents"
	"github.com/loupe-project/loupe/secevents/server"
)

// Lost-event sources of the security tracepoints (api/secevents/v1).
const (
	lostKernelRateLimit = "kernel_rate_limit"
	lostKernelRingFull  = "kernel_ring_full"
	secStatsPoll        = time.Second
	rulesReloadDelay    = 200 * time.Millisecond
)

// securityEvents is the agent's runtime-security pipeline: rules, the
// tracepoints, attribution, the event buffer and its gRPC service.
type securityEvents struct {
	cfg     *Config
	log     *slog.Logger
	nodeIno uint64
	engine  *secevents.Engine
	kernel  *datapath.SecurityEvents
	store   *server.Store
	svc     *server.Service
	num     atomic.Uint64
	cgroups *cgroupNames
	caps    secevents.Capabilities
	acts    *secActions
	net     *netState
	byIP    atomic.Pointer[map[netip.Addr]*netnsPod] // local pods, for flows
	scratch netEventScratch                          // netEvent's, under the observer's lock

	pods *netnsPods
}

// loadRules compiles the default rules (unless off) and the rules dir's
// files. Errors name the file and line; the good files still load, and a
// file that went bad keeps its previous version.
func (s *securityEvents) loadRules(prev *secevents.Rules) (*secevents.Rules, error) {
	var srcs []secevents.Source
	if !s.cfg.NoDefaultRules {
		srcs = append(srcs, secevents.DefaultRules())
	}
	var errs []error
	if s.cfg.RulesDir != "" {
		dir, err := secevents.ReadDir(s.cfg.RulesDir)
		errs = append(errs, err)
		srcs = append(srcs, dir...)
	}
	rs, err := secevents.CompileFor(srcs, prev, s.caps)
	return rs, errors.Join(append(errs, err)...)
}

// startSecurityEvents loads the rules and the tracepoints. With no rules
// at all nothing is loaded. A kernel without the tracepoints costs the
// feature, not the agent.
func startSecurityEvents(cfg *Config, eps func() []agent.Endpoint, meta metadata.Source, log *slog.Logger) (*securityEvents, error) {
	if cfg.NoDefaultRules && cfg.RulesDir == "" {
		return nil, nil
	}
	s := &securityEvents{cfg: cfg, log: log, pods: &netnsPods{eps: eps, meta: meta}, store: server.NewStore(0), cgroups: newCgroupNames()}
	s.svc = server.NewService(s.store, cfg.NodeName)
	// deny needs BPF LSM: tried here, so a rule asking for it is refused
	// with what the kernel lacks rather than downgraded.
	s.caps.BPFLSM = datapath.ProbeBPFLSM()
	if s.caps.BPFLSM != nil {
		log.Info("security action deny unavailable", "reason", s.caps.BPFLSM)
	}
	s.acts = newSecActions()
	s.net = newNetState()
	rs, err := s.loadRules(nil)
	if err != nil {
		log.Error("security rules refused; the others are loaded", "err", err)
	}
	s.engine = secevents.NewEngine(rs)
	if err := cfg.inNetNS(func() error {
		var err error
		s.nodeIno, err = netnsInode("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		return nil, fmt.Errorf("node netns: %w", err)
	}
	filter := rs.KernelFilter()
	s.kernel, err = datapath.LoadSecurityEvents(datapath.SecurityEventsConfig{Filter: filter, EventsPerSecond: cfg.SecurityEventsPerSecond})
	if err != nil {
		log.Warn("security events off", "err", err)
		return nil, nil
	}
	if err := s.setKills(nil, rs); err != nil {
		s.kernel.Close()
		return nil, fmt.Errorf("security kill rules: %w", err)
	}
	log.Info("security events on", "rules", len(rs.List()), "rules_dir", cfg.RulesDir, "default_rules", !cfg.NoDefaultRules,
		"all_execs", filter.AllExecs, "exec_names", len(filter.ExecNames), "all_opens", filter.AllOpens, "prefixes", len(filter.Prefixes))
	return s, nil
}

// register adds the SecurityEvents service to each Observer listener.
func (s *securityEvents) register(r grpc.ServiceRegistrar) { s.svc.Register(r) }

func (s *securityEvents) Close() error { return s.kernel.Close() }

// run reads the tracepoints' ring, polls their loss counters and reloads
// the rules when the rules dir changes, until ctx ends.
func (s *securityEvents) run(ctx context.Context) error {
	errc := make(chan error, 4)
	go func() { errc <- s.kernel.Read(ctx, s.handle) }()
	go func() { errc <- s.pollLosses(ctx) }()
	go func() { errc <- s.watchRules(ctx) }()
	go func() { errc <- s.syncKillPods(ctx) }()
	for range 4 {
		if err := <-errc; err != nil {
			return err
		}
	}
	return nil
}

func (s *securityEvents) handle(raw []byte) {
	rec, err := datapath.DecodeSecurityRecord(raw)
	if err != nil {
		s.log.Debug("security record", "err", err)
		return
	}
	var pod *netnsPod
	if !contract.ReportsNetns(rec.NetnsIno, s.nodeIno, func(i uint64) bool {
		pod = s.pods.pod(i)
		return pod != nil
	}) {
		return
	}
	ev := s.event(rec, pod)
	m, ok := s.engine.Match(ev)
	if !ok {
		return
	}
	s.acts.count(m.Rule)
	s.store.Add(s.response(rec, ev, m, pod))
}

// event turns a record into what rules see.
func (s *securityEvents) event(rec datapath.SecurityRecord, pod *netnsPod) *secevents.Event {
	ev := secevents.FromRecord(rec)
	ev.Num, ev.Time, ev.Node, ev.ContainerID = s.num.Add(1), bootToWall(rec.TimeNs), s.cfg.NodeName, secevents.HostContainerID
	if pod != nil {
		ev.Namespace, ev.Pod, ev.Labels = pod.namespace, pod.name, pod.labels
		// A container runtime's id from the cgroup where there is one (a
		// real node); else the pod's netns name (the lab's pods).
		ev.ContainerID = pod.netnsName
		if id := s.cgroups.containerID(rec.CgroupID); id != "" {
			ev.ContainerID = id
		}
	}
	return ev
}

func (s *securityEvents) response(rec datapath.SecurityRecord, ev *secevents.Event, m secevents.Match, pod *netnsPod) *pb.GetEventsResponse {
	by := "node"
	if pod != nil {
		by = "netns"
	}
	se := &pb.SecurityEvent{TimeUnixNano: ev.Time.UnixNano(), NodeName: s.cfg.NodeName, Rule: m.Rule.Name,
		Priority: m.Rule.Priority.String(), Output: m.Output, Tags: m.Rule.Tags, Namespace: ev.Namespace, Pod: ev.Pod,
		ContainerId: ev.ContainerID, File: ev.File, FileRelative: ev.Relative, FileTarget: ev.File2, EventType: ev.Type, Result: ev.Ret,
		NetnsInode: rec.NetnsIno, CgroupId: rec.CgroupID, AttributedBy: by, Action: actionOf(ev),
		Process: &pb.Process{Name: ev.Name, Exe: ev.Exe(), ExePath: ev.ExePath, Argv: ev.Argv, Pid: ev.PID, Ppid: ev.PPID,
			Uid: ev.UID, ParentName: ev.PName, ArgvTruncated: rec.EvFlags&datapath.SecevFlagArgvTrunc != 0}}
	return &pb.GetEventsResponse{NodeName: s.cfg.NodeName, TimeUnixNano: se.TimeUnixNano, ResponseTypes: &pb.GetEventsResponse_Event{Event: se}}
}

// pollLosses turns the tracepoints' loss counters into LostEvents.
func (s *securityEvents) pollLosses(ctx context.Context) error {
	var last datapath.SecurityStats
	t := time.NewTicker(secStatsPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st, err := s.kernel.Stats()
		if err != nil {
			continue
		}
		for _, l := range []struct {
			src      string
			now, was uint64
		}{{lostKernelRateLimit, st.Limited, last.Limited}, {lostKernelRingFull, st.Full, last.Full}} {
			if l.now > l.was {
				s.store.Add(&pb.GetEventsResponse{NodeName: s.cfg.NodeName, TimeUnixNano: time.Now().UnixNano(),
					ResponseTypes: &pb.GetEventsResponse_LostEvents{LostEvents: &pb.LostEvents{Source: l.src, Count: l.now - l.was}}})
			}
		}
		last = st
	}
}

// watchRules reloads the rules when a file of the rules dir changes
// (ConfigMap volumes swap a symlink: the folder is watched, not files).
func (s *securityEvents) watchRules(ctx context.Context) error {
	if s.cfg.RulesDir == "" {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("rules dir not watched", "err", err)
		return nil
	}
	defer w.Close()
	if err := w.Add(s.cfg.RulesDir); err != nil {
		s.log.Warn("rules dir not watched", "err", err)
		return nil
	}
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Events:
			timer = time.After(rulesReloadDelay)
		case err := <-w.Errors:
			s.log.Warn("rules dir watch", "err", err)
		case <-timer:
			s.reload()
		}
	}
}

func (s *securityEvents) reload() {
	rs, err := s.loadRules(s.engine.Rules())
	if err != nil {
		s.log.Error("security rules refused; the rules loaded before keep running", "err", err)
	}
	// The kernel filter widens before the engine gets rules that need it.
	if ferr := s.kernel.SetFilter(rs.KernelFilter()); ferr != nil {
		s.log.Error("security filter not updated; rules unchanged", "err", ferr)
		return
	}
	if kerr := s.setKills(s.engine.Rules(), rs); kerr != nil {
		s.log.Error("security kill rules not updated", "err", kerr)
	}
	s.engine.SetRules(rs)
	s.log.Info("security rules reloaded", "rules", len(rs.List()))
}

// bootToWall converts a CLOCK_BOOTTIME stamp to wall-clock time.
func bootToWall(ns uint64) time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(ts.Nano() - int64(ns)))
}

// cgroupNames finds a container id (64 hex digits, as containerd, CRI-O
// and Docker name their cgroups) in the path of a cgroup v2 id, by
// walking the cgroup tree once per unknown id (rate-limited).
type cgroupNames struct {
	root string
	mu   sync.Mutex
	ids  map[uint64]string
	last time.Time
}

var containerIDRE = regexp.MustCompile(`[0-9a-f]{64}`)

func newCgroupNames() *cgroupNames {
	return &cgroupNames{root: "/sys/fs/cgroup", ids: map[uint64]string{}}
}

func (c *cgroupNames) containerID(id uint64) string {
	if id == 0 {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.ids[id]; ok {
		return v
	}
	if time.Since(c.last) < endpointNetnsRefresh {
		return ""
	}
	c.last = time.Now()
	if len(c.ids) > 65536 {
		clear(c.ids) // bounded memory: start again
	}
	_ = filepath.WalkDir(c.root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			return nil
		}
		if _, ok := c.ids[st.Ino]; !ok {
			m := containerIDRE.FindAllString(strings.TrimPrefix(p, c.root), -1)
			v := ""
			if len(m) > 0 {
				v = m[len(m)-1][:12] // Falco's container.id: the first 12 digits
			}
			c.ids[st.Ino] = v
		}
		return nil
	})
	if _, ok := c.ids[id]; !ok {
		c.ids[id] = ""
	}
	return c.ids[id]
}

// newSecurityCollector exports the tracepoints' counters.
func newSecurityCollector(stats func() (datapath.SecurityStats, error)) *counterCollector {
	return newCounterCollector("loupe_security_kernel_events_total",
		"Kernel events of the security tracepoints: sent (to the agent), filtered (kept in the kernel: no rule could match), rate_limited and ring_full (lost; sent as LostEvents)",
		"outcome", func() ([]labeledCount, error) {
			s, err := stats()
			return []labeledCount{{"sent", s.Sent}, {"filtered", s.Filtered}, {"rate_limited", s.Limited}, {"ring_full", s.Full}}, err
		})
}

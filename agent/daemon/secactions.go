package daemon

import (
	"context"
	"maps"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loupe-project/loupe/secevents"
)

// killSyncEvery is how often the kill rules' pod selection follows the
// pods that come and go (a new pod is protected within this time).
const killSyncEvery = 250 * time.Millisecond

// secActions holds what the agent does beside reporting: the kill rules
// in the kernel with the pods they select, and the events counter.
type secActions struct {
	mu     sync.Mutex
	rules  *secevents.Rules  // whose kill rules the kernel holds
	netns  map[uint64]uint64 // last selection written
	events *prometheus.CounterVec
}

func newSecActions() *secActions {
	return &secActions{events: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "loupe_security_events_total",
		Help: "Security events reported by this agent, by rule and priority (Falco's spelling)",
	}, []string{"rule", "priority"})}
}

func (a *secActions) count(r *secevents.Rule) {
	a.events.WithLabelValues(r.Name, r.Priority.String()).Inc()
}

func actionOf(ev *secevents.Event) string {
	if ev.Killed {
		return secevents.ActionKill
	}
	return ""
}

// setKills moves the kernel from old's kill rules to rs's. When the rules
// (and so their bits) change, no pod is selected while the kernel's data
// changes: a kill by a stale rule is worse than a moment without one.
func (s *securityEvents) setKills(old, rs *secevents.Rules) error {
	s.acts.mu.Lock()
	defer s.acts.mu.Unlock()
	next := rs.KillSet()
	if old == nil || !reflect.DeepEqual(old.KillSet(), next) || !sameKillRules(old, rs) {
		if err := s.kernel.SetKillNetns(nil); err != nil {
			return err
		}
		s.acts.netns = nil
		if err := s.kernel.SetKills(next); err != nil {
			return err
		}
	}
	s.acts.rules = rs
	return s.selectPodsLocked()
}

func sameKillRules(a, b *secevents.Rules) bool {
	ka, kb := a.KillRules(), b.KillRules()
	if len(ka) != len(kb) {
		return false
	}
	for i := range ka {
		if ka[i] != kb[i] {
			return false
		}
	}
	return true
}

// selectPodsLocked writes the netns of every local pod each kill rule
// selects, and refreshes the local pods by address (for network rules).
func (s *securityEvents) selectPodsLocked() error {
	rs := s.acts.rules
	sel := map[uint64]uint64{}
	byIP := map[netip.Addr]*netnsPod{}
	for ino, p := range s.pods.all() {
		for _, a := range p.ips {
			byIP[a] = p
		}
		if rs == nil || len(rs.KillRules()) == 0 {
			continue
		}
		if m := rs.KillSelection(p.namespace, p.name, p.labels, p.netnsName); m != 0 {
			sel[ino] = m
		}
	}
	s.byIP.Store(&byIP)
	if maps.Equal(sel, s.acts.netns) {
		return nil
	}
	if err := s.kernel.SetKillNetns(sel); err != nil {
		return err
	}
	s.acts.netns = sel
	return nil
}

// syncKillPods keeps the kill rules' pods in step with the endpoints.
func (s *securityEvents) syncKillPods(ctx context.Context) error {
	t := time.NewTicker(killSyncEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s.acts.mu.Lock()
		err := s.selectPodsLocked()
		s.acts.mu.Unlock()
		if err != nil {
			s.log.Warn("kill rules: pod selection not updated", "err", err)
		}
	}
}

// collectors are the security pipeline's metrics: the kernel counters and
// the events by rule (both reach OTLP with the rest of /metrics).
func (s *securityEvents) collectors() []prometheus.Collector {
	kills := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "loupe_security_kills_total",
		Help: "Processes the kill rules sent SIGKILL, in the kernel, on this agent's pods",
	}, func() float64 {
		n, _ := s.kernel.Kills()
		return float64(n)
	})
	return []prometheus.Collector{newSecurityCollector(s.kernel.Stats), s.acts.events, kills}
}

package secevents

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/loupe-project/loupe/datapath"
)

// Rule actions, beside Falco's keys: without one a rule only reports.
const (
	ActionKill = "kill" // SIGKILL the process at the event, in the kernel
	ActionDeny = "deny" // refuse the operation with EPERM (BPF LSM)
)

// Capabilities is what the running kernel allows of the actions.
type Capabilities struct {
	// BPFLSM is nil when the kernel runs BPF LSM programs (deny needs
	// them), else why it does not (datapath.ProbeBPFLSM's error).
	BPFLSM error
}

// errLSMNotProbed is the capability of a Compile that was told nothing
// about the kernel: deny is refused.
var errLSMNotProbed = errors.New("the kernel's BPF LSM support was not probed")

// killPlan is a kill rule compiled for the kernel. The kernel decides
// what happens (which file, which program, read or write); the agent
// decides in which pods, with pod, and writes their namespaces.
type killPlan struct {
	exec      bool     // kills execs of execs, else opens of paths
	execs     []string // program names (comm, up to 15 bytes)
	paths     []datapath.KillPath
	needRead  bool
	needWrite bool
	pod       matcher // over the pod's namespace, name and labels
}

// podFields are decided per pod in the agent; every other term of a kill
// rule must be one the kernel decides at the event.
func isPodField(name string) bool {
	return name == "k8s.ns.name" || name == "k8s.pod.name" || name == "container.id" || strings.HasPrefix(name, "k8s.pod.label")
}

func onlyPodFields(n *node) bool {
	if n.kind == nCmp {
		return isPodField(n.field)
	}
	for _, k := range n.kids {
		if !onlyPodFields(k) {
			return false
		}
	}
	return len(n.kids) > 0
}

func conjuncts(n *node) []*node {
	if n.kind == nAnd {
		return append(conjuncts(n.kids[0]), conjuncts(n.kids[1])...)
	}
	return []*node{n}
}

// compileKill turns a kill rule's condition into a killPlan, or says
// which term the kernel cannot decide exactly at the event. A kill is
// never wider or narrower than the rule: what cannot be decided there is
// refused, not dropped.
func compileKill(cond *node) (*killPlan, error) {
	p := &killPlan{}
	var podTerms []*node
	var types []string
	var pathTerm, nameTerm *node
	for _, t := range conjuncts(cond) {
		if onlyPodFields(t) {
			podTerms = append(podTerms, t)
			continue
		}
		if t.kind != nCmp {
			return nil, fmt.Errorf("action kill: the kernel decides a conjunction (and) of comparisons; an or/not over event fields cannot be decided there (only over k8s.* and container.id)")
		}
		switch t.field {
		case "evt.type":
			if t.op != "=" && t.op != "in" {
				return nil, fmt.Errorf("action kill: evt.type %s: use = or in", t.op)
			}
			if types != nil {
				return nil, fmt.Errorf("action kill: evt.type named twice")
			}
			types = slices.Clone(t.values)
		case "fd.name", "fd.directory":
			if pathTerm != nil {
				return nil, fmt.Errorf("action kill: one path comparison (fd.name or fd.directory) per kill rule")
			}
			pathTerm = t
		case "proc.name":
			if t.op != "=" && t.op != "in" {
				return nil, fmt.Errorf("action kill: proc.name %s: use = or in", t.op)
			}
			nameTerm = t
		case "evt.is_open_read", "evt.is_open_write":
			if t.op != "=" || len(t.values) != 1 || t.values[0] != "true" {
				return nil, fmt.Errorf("action kill: %s: only %s = true is decided in the kernel", t.field, t.field)
			}
			if t.field == "evt.is_open_read" {
				p.needRead = true
			} else {
				p.needWrite = true
			}
		default:
			return nil, fmt.Errorf("action kill: %s cannot be decided in the kernel at the event (a kill acts at the syscall's entry, before any result); kill rules use evt.type, fd.name, fd.directory, proc.name, evt.is_open_read/write and pod fields", t.field)
		}
	}
	if len(podTerms) == 0 {
		return nil, fmt.Errorf("action kill: the rule must select its pods (k8s.ns.name, k8s.pod.name, k8s.pod.label.KEY, or container.id != host for every pod); loupe never kills on the node")
	}
	var pod *node
	for _, t := range podTerms {
		if pod == nil {
			pod = t
		} else {
			pod = &node{kind: nAnd, kids: []*node{pod, t}}
		}
	}
	var err error
	if p.pod, err = compile(pod); err != nil {
		return nil, err
	}
	isExec := slices.Equal(types, []string{"execve"})
	isOpen := len(types) > 0 && !slices.ContainsFunc(types, func(s string) bool { return !slices.Contains(openTypes, s) })
	switch {
	case isExec:
		if pathTerm != nil || p.needRead || p.needWrite {
			return nil, fmt.Errorf("action kill: an execve has no fd.* or evt.is_open_* fields")
		}
		if nameTerm == nil {
			return nil, fmt.Errorf("action kill: an execve kill rule names its programs (proc.name = X or proc.name in (...))")
		}
		for _, v := range nameTerm.values {
			if v == "" || len(v) > datapath.SecevNameMax-1 {
				return nil, fmt.Errorf("action kill: proc.name %q: the kernel tells programs apart by their first %d bytes", v, datapath.SecevNameMax-1)
			}
			p.execs = append(p.execs, v)
		}
		p.exec = true
	case isOpen:
		if got := uniq(types); !slices.Equal(got, openTypes) {
			return nil, fmt.Errorf("action kill: the kernel kills on open, openat and openat2 alike: name all three (evt.type in (open, openat, openat2))")
		}
		if nameTerm != nil {
			return nil, fmt.Errorf("action kill: proc.name of an open is not decided in the kernel")
		}
		if pathTerm == nil {
			return nil, fmt.Errorf("action kill: an open kill rule names its files (fd.name or fd.directory)")
		}
		if p.paths, err = killPaths(pathTerm); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("action kill: evt.type must be execve, or open, openat and openat2")
	}
	if err := (datapath.KillSet{Paths: p.paths}).Validate(); err != nil {
		return nil, fmt.Errorf("action kill: %w", err)
	}
	return p, nil
}

func killPaths(t *node) ([]datapath.KillPath, error) {
	var out []datapath.KillPath
	exact := func(v string) { out = append(out, datapath.KillPath{Path: v}) }
	prefix := func(v string) { out = append(out, datapath.KillPath{Path: v, Prefix: true}) }
	switch {
	case t.field == "fd.name" && (t.op == "=" || t.op == "in"):
		for _, v := range t.values {
			exact(v)
		}
	case t.field == "fd.name" && t.op == "startswith":
		prefix(t.values[0])
	case (t.field == "fd.name" || t.field == "fd.directory") && t.op == "pmatch":
		for _, v := range t.values {
			v = strings.TrimSuffix(v, "/")
			if t.field == "fd.name" {
				exact(v)
			}
			prefix(v + "/")
		}
	default:
		return nil, fmt.Errorf("action kill: %s %s is not decided in the kernel (fd.name =, in, startswith, pmatch; fd.directory pmatch)", t.field, t.op)
	}
	return out, nil
}

// checkAction validates a rule's action against the kernel.
func (r *Rule) checkAction(caps Capabilities) error {
	switch r.Action {
	case "":
		r.kill = nil
		return nil
	case ActionKill:
		p, err := compileKill(r.expanded)
		if err != nil {
			return err
		}
		r.kill = p
		return nil
	case ActionDeny:
		if caps.BPFLSM != nil {
			return fmt.Errorf("action deny needs BPF LSM, which this kernel does not run: %v; the rule is refused, not downgraded (use action: kill, or no action to report only)", caps.BPFLSM)
		}
		return fmt.Errorf("action deny: enforcement through BPF LSM is not built in this loupe yet; the rule is refused, not downgraded (use action: kill)")
	}
	return fmt.Errorf("unknown action %q (want kill or deny)", r.Action)
}

// KillRules returns the enabled kill rules, in load order: rule i owns
// bit 1<<i of KillSet and of KillSelection.
func (rs *Rules) KillRules() []*Rule {
	var out []*Rule
	for _, r := range rs.list {
		if r.Enabled && r.kill != nil {
			out = append(out, r)
		}
	}
	return out
}

// KillSet is what the kernel needs to decide the kill rules.
func (rs *Rules) KillSet() datapath.KillSet {
	k := datapath.KillSet{Execs: map[string]uint64{}}
	for i, r := range rs.KillRules() {
		bit := uint64(1) << i
		for _, n := range r.kill.execs {
			k.Execs[n] |= bit
		}
		for _, p := range r.kill.paths {
			p.Rules = bit
			k.Paths = append(k.Paths, p)
		}
		if r.kill.needRead {
			k.NeedRead |= bit
		}
		if r.kill.needWrite {
			k.NeedWrite |= bit
		}
	}
	return k
}

// KillSelection is the kill rules (bits) that select a pod.
func (rs *Rules) KillSelection(namespace, pod string, labels map[string]string, containerID string) uint64 {
	e := &Event{Namespace: namespace, Pod: pod, Labels: labels, ContainerID: containerID}
	var m uint64
	for i, r := range rs.KillRules() {
		if r.kill.pod(e) {
			m |= 1 << i
		}
	}
	return m
}

package secevents

import (
	"slices"
	"strings"

	"github.com/loupe-project/loupe/datapath"
)

// The in-kernel filter is derived from the rules: for each kind of kernel
// event (exec, open, exit) the set of values some enabled rule could match
// (exec: process names; open: path prefixes), or "any". It is sound by
// construction: every step widens (an "and" keeps one side's restriction,
// an "or" unites, a "not" gives up), so no event a rule could match is
// kept in the kernel.

type kind int

const (
	kExec kind = iota
	kOpen
	kExit
	nKinds
)

var kindTypes = [nKinds][]string{kExec: {"execve"}, kOpen: {"open", "openat", "openat2"}, kExit: {"procexit"}}

// restriction: any, or a set of values (empty: nothing passes).
type restriction struct {
	any  bool
	vals []string
}

type kernelSet [nKinds]restriction

func allAny() kernelSet {
	var k kernelSet
	for i := range k {
		k[i].any = true
	}
	return k
}

func (r restriction) none() bool { return !r.any && len(r.vals) == 0 }

func and(a, b restriction) restriction {
	switch {
	case a.none() || b.none():
		return restriction{}
	case a.any:
		return b
	case b.any:
		return a
	case len(b.vals) < len(a.vals):
		return b
	}
	return a
}

func or(a, b restriction) restriction {
	if a.any || b.any {
		return restriction{any: true}
	}
	return restriction{vals: append(append([]string(nil), a.vals...), b.vals...)}
}

// analyze computes what node n could match, per kind.
func analyze(n *node) kernelSet {
	switch n.kind {
	case nAnd, nOr:
		l, r := analyze(n.kids[0]), analyze(n.kids[1])
		var out kernelSet
		for i := range out {
			if n.kind == nAnd {
				out[i] = and(l[i], r[i])
			} else {
				out[i] = or(l[i], r[i])
			}
		}
		return out
	case nCmp:
		return analyzeCmp(n)
	}
	return allAny()
}

func analyzeCmp(n *node) kernelSet {
	out := allAny()
	switch n.field {
	case "evt.type":
		if n.op != "=" && n.op != "in" {
			return out
		}
		for k := range out {
			out[k] = restriction{any: slices.ContainsFunc(kindTypes[k], func(t string) bool { return slices.Contains(n.values, t) })}
		}
	case "proc.name":
		if n.op == "=" || n.op == "in" {
			var names []string
			for _, v := range n.values {
				names = append(names, commOf(v))
			}
			out[kExec] = restriction{vals: names}
		}
	case "fd.name":
		switch n.op {
		case "=", "in", "startswith", "pmatch":
			out[kOpen] = restriction{vals: n.values}
		case "glob":
			lit := n.values[0]
			if i := strings.IndexAny(lit, "*?["); i >= 0 {
				lit = lit[:i]
			}
			out[kOpen] = restriction{vals: []string{lit}}
		}
		// Events without the field match no comparison.
		out[kExec], out[kExit] = restriction{}, restriction{}
	case "fd.directory":
		switch n.op {
		case "=", "in", "pmatch":
			var p []string
			for _, v := range n.values {
				p = append(p, strings.TrimSuffix(v, "/")+"/")
			}
			out[kOpen] = restriction{vals: p}
		}
		out[kExec], out[kExit] = restriction{}, restriction{}
	}
	return out
}

// commOf is a name as the kernel's comm holds it: cut to 15 bytes.
func commOf(name string) string {
	if len(name) > datapath.SecevNameMax-1 {
		return name[:datapath.SecevNameMax-1]
	}
	return name
}

// KernelFilter is the in-kernel filter for the enabled rules.
func (rs *Rules) KernelFilter() datapath.SecurityFilter {
	var all kernelSet
	for _, r := range rs.list {
		if !r.Enabled || r.Source == SourceNetwork {
			continue // network rules see flows, not the kernel's events
		}
		k := analyze(r.expanded)
		for i := range all {
			all[i] = or(all[i], k[i])
		}
	}
	var f datapath.SecurityFilter
	f.AllExecs = all[kExec].any
	if !f.AllExecs {
		f.ExecNames = uniq(all[kExec].vals)
	}
	f.AllOpens = all[kOpen].any
	if !f.AllOpens {
		for _, p := range uniq(all[kOpen].vals) {
			if strings.HasPrefix(p, "/") {
				f.Prefixes = append(f.Prefixes, p)
			} else {
				f.Relative = true
			}
		}
	}
	f.Exits = !all[kExit].none()
	return f
}

func uniq(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

package secevents

import (
	"slices"
	"strings"

	"github.com/loupe-project/loupe/datapath"
)

// The in-kernel filter is derived from the rules: for each kind of kernel
// event (exec, open, exit, rename, unlink, chmod) the set of values some
// enabled rule could match (exec: process names; file events: path
// prefixes), or "any". It is sound by
// construction: every step widens (an "and" keeps one side's restriction,
// an "or" unites, a "not" gives up), so no event a rule could match is
// kept in the kernel.

type kind int

const (
	kExec kind = iota
	kOpen
	kExit
	kRename
	kUnlink
	kChmod
	nKinds
)

var kindTypes = [nKinds][]string{kExec: {"execve"}, kOpen: openTypes, kExit: {"procexit"}, kRename: renameTypes,
	kUnlink: unlinkTypes, kChmod: chmodTypes}

// pathFields are the fields that hold a file event's path, and the kinds
// of event that have them (for some of their syscalls: a comparison on a
// field an event lacks is false, so the kind may still be restricted).
var pathFields = map[string][]kind{
	"fd.name": {kOpen, kChmod}, "fd.directory": {kOpen, kChmod},
	"fs.path.name": {kOpen, kUnlink, kChmod}, "fs.path.source": {kRename}, "fs.path.target": {kRename},
	"evt.arg.name": {kOpen, kUnlink}, "evt.arg.path": {kUnlink}, "evt.arg.filename": {kChmod},
	"evt.arg.oldpath": {kRename}, "evt.arg.newpath": {kRename},
}

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
	}
	kinds, ok := pathFields[n.field]
	if !ok {
		return out
	}
	prefixes, restricted := pathPrefixes(n)
	for k := range out {
		switch {
		case !slices.Contains(kinds, kind(k)):
			out[k] = restriction{} // events without the field match no comparison
		case restricted:
			out[k] = restriction{vals: prefixes}
		}
	}
	return out
}

// pathPrefixes are the prefixes a path must have to satisfy a comparison
// on a path field, when the operator gives some.
func pathPrefixes(n *node) ([]string, bool) {
	if n.field == "fd.directory" {
		switch n.op {
		case "=", "in", "pmatch":
			var p []string
			for _, v := range n.values {
				p = append(p, strings.TrimSuffix(v, "/")+"/")
			}
			return p, true
		}
		return nil, false
	}
	switch n.op {
	case "=", "in", "startswith", "pmatch":
		return n.values, true
	case "glob":
		lit := n.values[0]
		if i := strings.IndexAny(lit, "*?["); i >= 0 {
			lit = lit[:i]
		}
		return []string{lit}, true
	}
	return nil, false
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
		f.Prefixes = absolute(all[kOpen].vals, &f.Relative)
	}
	f.Exits = !all[kExit].none()
	for k, dst := range map[kind]*datapath.FileOpFilter{kRename: &f.Renames, kUnlink: &f.Unlinks, kChmod: &f.Chmods} {
		dst.All = all[k].any
		if !dst.All {
			dst.Prefixes = absolute(all[k].vals, &f.Relative)
		}
	}
	return f
}

// absolute keeps the absolute prefixes; a relative one (a rule naming a
// path as given) asks for paths the kernel could not resolve.
func absolute(vals []string, relative *bool) []string {
	var out []string
	for _, p := range uniq(vals) {
		if strings.HasPrefix(p, "/") {
			out = append(out, p)
		} else {
			*relative = true
		}
	}
	return out
}

func uniq(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

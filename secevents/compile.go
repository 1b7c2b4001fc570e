package secevents

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// matcher is a compiled condition.
type matcher func(e *Event) bool

// env is what a condition may name: lists (items already expanded) and
// macros (parsed, expanded when a rule is compiled).
type env struct {
	lists  map[string][]string
	macros map[string]*node
}

// expandValues replaces list names among values with their items.
func (en *env) expandValues(vals []string) []string {
	var out []string
	for _, v := range vals {
		if items, ok := en.lists[v]; ok {
			out = append(out, items...)
			continue
		}
		out = append(out, v)
	}
	return out
}

// maxExpandedNodes bounds a condition after macro expansion: macros that
// each name the one before twice double in size at every step.
const maxExpandedNodes = 100000

// expand replaces macros by their conditions and list names by their
// items, and checks every field. A macro that names itself, directly or
// not, is refused, as is a condition grown past maxExpandedNodes.
func (en *env) expand(n *node, _ int) (*node, error) {
	budget := maxExpandedNodes
	return en.expandIn(n, map[string]bool{}, &budget)
}

func (en *env) expandIn(n *node, stack map[string]bool, budget *int) (*node, error) {
	if *budget--; *budget < 0 {
		return nil, fmt.Errorf("condition too large after macro expansion (over %d terms)", maxExpandedNodes)
	}
	switch n.kind {
	case nMacro:
		m, ok := en.macros[n.name]
		if !ok {
			return nil, fmt.Errorf("undefined macro %q", n.name)
		}
		if stack[n.name] {
			return nil, fmt.Errorf("macro %q refers to itself", n.name)
		}
		stack[n.name] = true
		defer delete(stack, n.name)
		x, err := en.expandIn(m, stack, budget)
		if err != nil {
			return nil, fmt.Errorf("in macro %s: %w", n.name, err)
		}
		return x, nil
	case nCmp:
		if _, ok := lookupField(n.field); !ok {
			return nil, fmt.Errorf("unsupported field %q", n.field)
		}
		c := *n
		c.values = en.expandValues(n.values)
		return &c, nil
	}
	c := *n
	c.kids = make([]*node, len(n.kids))
	for i, k := range n.kids {
		var err error
		if c.kids[i], err = en.expandIn(k, stack, budget); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

// compile turns an expanded condition into a matcher.
func compile(n *node) (matcher, error) { return compileWith(n, lookupField) }

// compileWith is compile with the fields lookup finds (tests compare
// fields with and without their typed getters).
func compileWith(n *node, lookup func(string) (field, bool)) (matcher, error) {
	switch n.kind {
	case nAnd, nOr:
		l, err := compileWith(n.kids[0], lookup)
		if err != nil {
			return nil, err
		}
		r, err := compileWith(n.kids[1], lookup)
		if err != nil {
			return nil, err
		}
		if n.kind == nAnd {
			return func(e *Event) bool { return l(e) && r(e) }, nil
		}
		return func(e *Event) bool { return l(e) || r(e) }, nil
	case nNot:
		k, err := compileWith(n.kids[0], lookup)
		if err != nil {
			return nil, err
		}
		return func(e *Event) bool { return !k(e) }, nil
	case nCmp:
		return compileCmp(n, lookup)
	}
	return nil, fmt.Errorf("internal: unexpanded macro %q", n.name)
}

func compileCmp(n *node, lookup func(string) (field, bool)) (matcher, error) {
	f, _ := lookup(n.field)
	get := f.get
	if n.op == "exists" {
		return func(e *Event) bool { _, ok := get(e); return ok }, nil
	}
	if len(n.values) == 0 && n.op != "in" && n.op != "pmatch" {
		return nil, fmt.Errorf("%s %s: no value", n.field, n.op)
	}
	if n.list && !(n.op == "in" || n.op == "pmatch") {
		return nil, fmt.Errorf("%s %s: a list needs in or pmatch", n.field, n.op)
	}
	if f.cidr {
		ps, err := parsePrefixes(n.values)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.field, err)
		}
		addr := f.addr
		if addr == nil {
			addr = func(e *Event) (netip.Addr, bool) {
				s, ok := get(e)
				a, err := netip.ParseAddr(s)
				return a, ok && err == nil
			}
		}
		in := func(e *Event) bool {
			a, ok := addr(e)
			return ok && slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
		}
		switch n.op {
		case "=", "in":
			return in, nil
		case "!=":
			return func(e *Event) bool { _, ok := get(e); return ok && !in(e) }, nil
		}
		return nil, fmt.Errorf("%s %s: use =, != or in with CIDRs", n.field, n.op)
	}
	one := ""
	if len(n.values) > 0 {
		one = n.values[0]
	}
	var want int64
	if f.numeric {
		for _, v := range n.values {
			x, err := strconv.ParseInt(v, 0, 64)
			if err != nil {
				return nil, fmt.Errorf("%s is a number, %q is not", n.field, v)
			}
			want = x
		}
	}
	value := f.int
	if value == nil {
		value = func(e *Event) (int64, bool) {
			s, present := get(e)
			if !present {
				return 0, false
			}
			a, err := strconv.ParseInt(s, 10, 64)
			return a, err == nil
		}
	}
	numCmp := func(ok func(a, b int64) bool) matcher {
		return func(e *Event) bool {
			a, present := value(e)
			return present && ok(a, want)
		}
	}
	strCmp := func(ok func(s string) bool) matcher {
		return func(e *Event) bool {
			s, present := get(e)
			return present && ok(s)
		}
	}
	switch n.op {
	case "=":
		if f.numeric {
			return numCmp(func(a, b int64) bool { return a == b }), nil
		}
		return strCmp(func(s string) bool { return s == one }), nil
	case "!=":
		if f.numeric {
			return numCmp(func(a, b int64) bool { return a != b }), nil
		}
		return strCmp(func(s string) bool { return s != one }), nil
	case "<", "<=", ">", ">=":
		if !f.numeric {
			return nil, fmt.Errorf("%s %s: the field is not a number", n.field, n.op)
		}
		return numCmp(map[string]func(a, b int64) bool{
			"<": func(a, b int64) bool { return a < b }, "<=": func(a, b int64) bool { return a <= b },
			">": func(a, b int64) bool { return a > b }, ">=": func(a, b int64) bool { return a >= b },
		}[n.op]), nil
	case "in":
		if f.numeric && f.int != nil {
			set := make(map[int64]bool, len(n.values))
			for _, v := range n.values {
				x, _ := strconv.ParseInt(v, 0, 64)
				set[x] = true
			}
			return func(e *Event) bool { a, ok := value(e); return ok && set[a] }, nil
		}
		set := make(map[string]bool, len(n.values))
		for _, v := range n.values {
			if f.numeric {
				x, _ := strconv.ParseInt(v, 0, 64)
				v = strconv.FormatInt(x, 10)
			}
			set[v] = true
		}
		return strCmp(func(s string) bool { return set[s] }), nil
	case "startswith":
		return strCmp(func(s string) bool { return strings.HasPrefix(s, one) }), nil
	case "endswith":
		return strCmp(func(s string) bool { return strings.HasSuffix(s, one) }), nil
	case "contains":
		return strCmp(func(s string) bool { return strings.Contains(s, one) }), nil
	case "icontains":
		low := strings.ToLower(one)
		return strCmp(func(s string) bool { return strings.Contains(strings.ToLower(s), low) }), nil
	case "pmatch":
		vals := n.values
		return strCmp(func(s string) bool {
			for _, p := range vals {
				if pathUnder(s, p) {
					return true
				}
			}
			return false
		}), nil
	case "glob":
		re, err := globRegexp(one)
		if err != nil {
			return nil, fmt.Errorf("%s glob %q: %w", n.field, one, err)
		}
		return strCmp(re.MatchString), nil
	}
	return nil, fmt.Errorf("unsupported operator %q", n.op)
}

// pathUnder is pmatch: s is p or a path below it.
func pathUnder(s, p string) bool {
	p = strings.TrimSuffix(p, "/")
	return s == p || strings.HasPrefix(s, p+"/") || p == ""
}

// globRegexp translates a glob (* ? [...]; * also crosses /, as Falco's
// glob does) to an anchored regexp.
func globRegexp(g string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(g); i++ {
		switch c := g[i]; c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			j := strings.IndexByte(g[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unclosed [")
			}
			cls := g[i+1 : i+j]
			if strings.HasPrefix(cls, "!") {
				cls = "^" + cls[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(cls, `\`, `\\`) + "]")
			i += j
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

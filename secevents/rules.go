package secevents

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"github.com/loupe-project/loupe/datapath"
)

// Source is one rules file: its name (for errors) and its bytes.
type Source struct {
	Name string
	Data []byte
}

// Priority is a rule's severity, as Falco prints it.
type Priority int

// Falco's priorities, most severe first.
const (
	Emergency Priority = iota
	Alert
	Critical
	Error
	Warning
	Notice
	Informational
	Debug
)

var priorityNames = []string{"Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug"}

func (p Priority) String() string {
	if p < 0 || int(p) >= len(priorityNames) {
		return "Unknown"
	}
	return priorityNames[p]
}

// ParsePriority reads a priority in any case; INFO is Informational.
func ParsePriority(s string) (Priority, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if u == "INFO" {
		return Informational, nil
	}
	for i, n := range priorityNames {
		if strings.ToUpper(n) == u {
			return Priority(i), nil
		}
	}
	return 0, fmt.Errorf("unknown priority %q (want one of %s)", s, strings.Join(priorityNames, ", "))
}

// Rule is a loaded rule.
type Rule struct {
	Name     string
	Desc     string
	Priority Priority
	Tags     []string
	Enabled  bool
	File     string
	Line     int
	// Action is "" (report only), ActionKill or ActionDeny.
	Action string
	// Source is "syscall" (processes and files) or SourceNetwork.
	Source string
	scan   bool // a network rule that reads the scan counters

	kill *killPlan // ActionKill: the rule as the kernel decides it

	cond     string // the condition's text (append adds to it)
	output   string
	match    matcher
	expanded *node
	out      []outputPart
}

// Output fills the rule's output template from e: absent fields print as
// <NA>, as in Falco.
func (r *Rule) Output(e *Event) string {
	var b strings.Builder
	for _, p := range r.out {
		if p.get == nil {
			b.WriteString(p.text)
			continue
		}
		v, ok := p.get(e)
		if !ok || v == "" {
			v = "<NA>"
		}
		b.WriteString(v)
	}
	return b.String()
}

type outputPart struct {
	text string
	get  func(*Event) (string, bool)
}

var outputField = regexp.MustCompile(`%([a-zA-Z_][a-zA-Z0-9_.]*(\[[^\]]*\])?)`)

func compileOutput(s string) ([]outputPart, error) {
	var parts []outputPart
	last := 0
	for _, m := range outputField.FindAllStringSubmatchIndex(s, -1) {
		name := s[m[2]:m[3]]
		f, ok := lookupField(name)
		if !ok {
			return nil, fmt.Errorf("unsupported field %q in output", name)
		}
		parts = append(parts, outputPart{text: s[last:m[0]]}, outputPart{get: f.get})
		last = m[1]
	}
	return append(parts, outputPart{text: s[last:]}), nil
}

// ruleSet is the state while loading: what later files may name.
type ruleSet struct {
	env
	caps  Capabilities
	rules map[string]*Rule
	order []string
}

func (s *ruleSet) clone() *ruleSet {
	c := &ruleSet{env: env{lists: maps.Clone(s.lists), macros: maps.Clone(s.macros)}, caps: s.caps, rules: map[string]*Rule{}, order: append([]string(nil), s.order...)}
	for k, r := range s.rules {
		rc := *r
		c.rules[k] = &rc
	}
	return c
}

// item is one YAML list element of a rules file.
type item struct {
	node *yaml.Node
	keys map[string]*yaml.Node
}

func (it item) str(k string) (string, bool, error) {
	n, ok := it.keys[k]
	if !ok {
		return "", false, nil
	}
	if n.Kind != yaml.ScalarNode {
		return "", true, fmt.Errorf("%d: %s must be a string", n.Line, k)
	}
	return n.Value, true, nil
}

func (it item) boolean(k string) (bool, bool, error) {
	n, ok := it.keys[k]
	if !ok {
		return false, false, nil
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		return false, true, fmt.Errorf("%d: %s must be true or false", n.Line, k)
	}
	return b, true, nil
}

func (it item) strings(k string) ([]string, error) {
	n, ok := it.keys[k]
	if !ok {
		return nil, nil
	}
	var out []string
	if err := n.Decode(&out); err != nil {
		return nil, fmt.Errorf("%d: %s must be a list of strings", n.Line, k)
	}
	return out, nil
}

// Keys each kind of item may have. Anything else is refused rather than
// ignored: a key loupe does not know could change what a rule means.
var allowedKeys = map[string]map[string]bool{
	"rule":  {"action": true, "rule": true, "desc": true, "condition": true, "output": true, "priority": true, "tags": true, "enabled": true, "append": true, "source": true, "exceptions": true, "override": true, "warn_evttypes": true, "skip-if-unknown-filter": true},
	"macro": {"macro": true, "condition": true, "append": true, "override": true},
	"list":  {"list": true, "items": true, "append": true, "override": true},
	// Version requirements are about Falco's engine and plugins: noted,
	// not enforced.
	"required_engine_version":  {"required_engine_version": true},
	"required_plugin_versions": {"required_plugin_versions": true},
}

// parseFile reads the items of one rules file.
func parseFile(src Source) ([]item, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src.Data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", src.Name, err)
	}
	if doc.Kind == 0 {
		return nil, nil // empty file
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if root.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s:%d: a rules file is a YAML list of rule, macro and list items", src.Name, root.Line)
	}
	var out []item
	for _, n := range root.Content {
		if n.Kind != yaml.MappingNode || len(n.Content) < 2 {
			return nil, fmt.Errorf("%s:%d: an item must be a mapping with rule, macro or list", src.Name, n.Line)
		}
		it := item{node: n, keys: map[string]*yaml.Node{}}
		for i := 0; i+1 < len(n.Content); i += 2 {
			it.keys[n.Content[i].Value] = n.Content[i+1]
		}
		out = append(out, it)
	}
	return out, nil
}

func (it item) kind() string {
	for _, k := range []string{"rule", "macro", "list", "required_engine_version", "required_plugin_versions"} {
		if _, ok := it.keys[k]; ok {
			return k
		}
	}
	return ""
}

// apply adds one file's items to s, or returns the first error with the
// file and line. s is left half-changed on error: callers apply to a clone.
func (s *ruleSet) apply(file string, items []item) error {
	errAt := func(line int, format string, a ...any) error {
		return fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, a...))
	}
	// Lists and macros first, so rules may name those defined below them.
	for pass := 0; pass < 2; pass++ {
		for _, it := range items {
			k := it.kind()
			if k == "" {
				return errAt(it.node.Line, "an item must have rule, macro or list")
			}
			for key, v := range it.keys {
				if !allowedKeys[k][key] {
					return errAt(v.Line, "unsupported key %q in a %s", key, k)
				}
			}
			if (pass == 0) != (k == "list" || k == "macro") {
				continue
			}
			var err error
			switch k {
			case "list":
				err = s.applyList(it)
			case "macro":
				err = s.applyMacro(it)
			case "rule":
				err = s.applyRule(file, it)
			}
			if err != nil {
				return fmt.Errorf("%s:%w", file, err)
			}
		}
	}
	return nil
}

// mode reads append: true and override: {key: append|replace}.
func (it item) mode(key string) (bool, error) {
	app, _, err := it.boolean("append")
	if err != nil {
		return false, err
	}
	if ov, ok := it.keys["override"]; ok {
		var m map[string]string
		if err := ov.Decode(&m); err != nil {
			return false, fmt.Errorf("%d: override must map keys to append or replace", ov.Line)
		}
		switch m[key] {
		case "append":
			app = true
		case "replace", "":
		default:
			return false, fmt.Errorf("%d: override %s: %q is neither append nor replace", ov.Line, key, m[key])
		}
	}
	return app, nil
}

func (s *ruleSet) applyList(it item) error {
	name, _, err := it.str("list")
	if err != nil {
		return err
	}
	vals, err := it.strings("items")
	if err != nil {
		return err
	}
	app, err := it.mode("items")
	if err != nil {
		return err
	}
	for i, v := range vals {
		// Falco quotes items that the condition syntax would split
		// ('"(systemd)"'); the quotes are not part of the value.
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			vals[i] = v[1 : len(v)-1]
		}
	}
	vals = s.expandValues(vals)
	if app {
		old, ok := s.lists[name]
		if !ok {
			return fmt.Errorf("%d: list %s: append to a list not defined before", it.node.Line, name)
		}
		vals = append(append([]string(nil), old...), vals...)
	}
	s.lists[name] = vals
	return nil
}

// macroText keeps macros' condition text for append.
func (s *ruleSet) applyMacro(it item) error {
	name, _, err := it.str("macro")
	if err != nil {
		return err
	}
	cond, ok, err := it.str("condition")
	if err != nil || !ok {
		return fmt.Errorf("%d: macro %s has no condition", it.node.Line, name)
	}
	app, err := it.mode("condition")
	if err != nil {
		return err
	}
	line := it.keys["condition"].Line
	n, err := parseCondition(cond)
	if err != nil {
		return fmt.Errorf("%d: macro %s: %w", line, name, err)
	}
	if app {
		old, ok := s.macros[name]
		if !ok {
			return fmt.Errorf("%d: macro %s: append to a macro not defined before", it.node.Line, name)
		}
		// Falco appends the text; "old and X" parses as old and (X...).
		n, err = parseAppended(old, cond)
		if err != nil {
			return fmt.Errorf("%d: macro %s: %w", line, name, err)
		}
	}
	s.macros[name] = n
	return nil
}

// parseAppended joins a condition and appended text (which starts with an
// operator such as "and not ...") as Falco does, by text.
func parseAppended(old *node, text string) (*node, error) {
	// Wrap the old condition as a macro-free placeholder: parse
	// "__old__ <text>" and put the old tree in its place.
	n, err := parseCondition("__loupe_appended__ " + text)
	if err != nil {
		return nil, err
	}
	var walk func(*node) *node
	walk = func(x *node) *node {
		if x.kind == nMacro && x.name == "__loupe_appended__" {
			return old
		}
		for i, k := range x.kids {
			x.kids[i] = walk(k)
		}
		return x
	}
	return walk(n), nil
}

func (s *ruleSet) applyRule(file string, it item) error {
	name, _, err := it.str("rule")
	if err != nil {
		return err
	}
	line := it.node.Line
	source := "syscall"
	if src, ok, _ := it.str("source"); ok {
		if src != "syscall" && src != SourceNetwork {
			return fmt.Errorf("%d: rule %s: source %q is not supported (syscall or network)", line, name, src)
		}
		source = src
	}
	if ex, ok := it.keys["exceptions"]; ok && len(ex.Content) > 0 {
		return fmt.Errorf("%d: rule %s: exceptions are not supported; write them into the condition", ex.Line, name)
	}
	cond, hasCond, err := it.str("condition")
	if err != nil {
		return err
	}
	enabled, hasEnabled, err := it.boolean("enabled")
	if err != nil {
		return err
	}
	app, err := it.mode("condition")
	if err != nil {
		return err
	}
	old := s.rules[name]
	if !hasCond {
		// Falco's way to turn a rule on or off: rule and enabled only.
		if old == nil || !hasEnabled {
			return fmt.Errorf("%d: rule %s has no condition", line, name)
		}
		old.Enabled = enabled
		return nil
	}
	r := &Rule{Name: name, File: file, Line: line, Enabled: true, cond: cond}
	if app {
		if old == nil {
			return fmt.Errorf("%d: rule %s: append to a rule not defined before", line, name)
		}
		rc := *old
		r = &rc
		r.cond = "(" + old.cond + ") " + cond
	} else {
		for _, k := range []string{"output", "priority"} {
			if _, ok := it.keys[k]; !ok {
				return fmt.Errorf("%d: rule %s has no %s", line, name, k)
			}
		}
	}
	if hasEnabled {
		r.Enabled = enabled
	}
	if v, ok, err := it.str("desc"); err != nil {
		return err
	} else if ok {
		r.Desc = v
	}
	if v, ok, err := it.str("output"); err != nil {
		return err
	} else if ok {
		r.output = strings.TrimSpace(v)
	}
	if v, ok, err := it.str("priority"); err != nil {
		return err
	} else if ok {
		if r.Priority, err = ParsePriority(v); err != nil {
			return fmt.Errorf("%d: rule %s: %w", it.keys["priority"].Line, name, err)
		}
	}
	if v, ok, err := it.str("action"); err != nil {
		return err
	} else if ok {
		r.Action = v
	}
	if tags, err := it.strings("tags"); err != nil {
		return err
	} else if tags != nil {
		r.Tags = tags
	}
	cline := it.keys["condition"].Line
	n, err := parseCondition(r.cond)
	if err != nil {
		return fmt.Errorf("%d: rule %s: %w", cline, name, err)
	}
	if r.expanded, err = s.expand(n, 0); err != nil {
		skip, _, _ := it.boolean("skip-if-unknown-filter")
		if skip && strings.Contains(err.Error(), "unsupported field") {
			return nil // the rule asks to be left out, as Falco does
		}
		return fmt.Errorf("%d: rule %s: %w", cline, name, err)
	}
	if app && old.Source != source {
		if _, ok := it.keys["source"]; ok {
			return fmt.Errorf("%d: rule %s: an append cannot change the source", line, name)
		}
		source = old.Source
	}
	r.Source, r.scan = source, source == SourceNetwork && usesScan(r.expanded)
	if r.Source == SourceNetwork && r.Action != "" {
		return fmt.Errorf("%d: rule %s: network rules only report; action %q acts on processes (use a syscall rule)", line, name, r.Action)
	}
	if r.match, err = compile(r.expanded); err != nil {
		return fmt.Errorf("%d: rule %s: %w", cline, name, err)
	}
	if err := r.checkAction(s.caps); err != nil {
		l := line
		if a, ok := it.keys["action"]; ok {
			l = a.Line
		}
		return fmt.Errorf("%d: rule %s: %w", l, name, err)
	}
	if r.kill != nil && r.Enabled {
		n := 1
		for _, o := range s.rules {
			if o.Name != name && o.kill != nil && o.Enabled {
				n++
			}
		}
		if n > datapath.MaxKillRules {
			return fmt.Errorf("%d: rule %s: more than %d enabled kill rules", line, name, datapath.MaxKillRules)
		}
	}
	if r.out, err = compileOutput(r.output); err != nil {
		l := line
		if o, ok := it.keys["output"]; ok {
			l = o.Line
		}
		return fmt.Errorf("%d: rule %s: %w", l, name, err)
	}
	if old == nil {
		s.order = append(s.order, name)
	}
	s.rules[name] = r
	return nil
}

// relink compiles every rule again against the final lists and macros, as
// Falco resolves them once all files are read: a later file that appends
// to a list (allowed_outbound_cidrs) changes the rules of earlier files
// that name it. A rule that no longer compiles keeps its earlier form,
// and the error says so.
func (s *ruleSet) relink() []error {
	var errs []error
	for _, name := range s.order {
		r := s.rules[name]
		n, err := parseCondition(r.cond)
		if err != nil {
			continue // it parsed when applied; the text did not change
		}
		c := *r
		if c.expanded, err = s.expand(n, 0); err == nil {
			if c.match, err = compile(c.expanded); err == nil {
				err = c.checkAction(s.caps)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: rule %s: with the lists and macros of later files: %w (its earlier form is kept)", r.File, r.Line, name, err))
			continue
		}
		c.scan = c.Source == SourceNetwork && usesScan(c.expanded)
		s.rules[name] = &c
	}
	return errs
}

// Rules is a compiled, immutable set of rules, in load order.
type Rules struct {
	list  []*Rule
	files map[string][]item // each file's last good items, for a reload
}

// List returns the rules in load order (disabled ones included).
func (rs *Rules) List() []*Rule { return rs.list }

// Compile loads sources in order (later ones may name lists and macros of
// earlier ones, and replace or append to their rules). A source with an
// error is refused whole, with its file and line; if prev held a good
// version of it, that version is used instead, so the rules already
// loaded keep running. The returned set is never nil.
func Compile(srcs []Source, prev *Rules) (*Rules, error) {
	return CompileFor(srcs, prev, Capabilities{BPFLSM: errLSMNotProbed})
}

// CompileFor is Compile for a kernel with caps: a rule whose action the
// kernel cannot carry out is refused with its file and line.
func CompileFor(srcs []Source, prev *Rules, caps Capabilities) (*Rules, error) {
	s := &ruleSet{env: env{lists: map[string][]string{}, macros: map[string]*node{}}, caps: caps, rules: map[string]*Rule{}}
	out := &Rules{files: map[string][]item{}}
	var errs []error
	for _, src := range srcs {
		items, err := parseFile(src)
		if err == nil {
			c := s.clone()
			if err = c.apply(src.Name, items); err == nil {
				s = c
				out.files[src.Name] = items
				continue
			}
		}
		errs = append(errs, err)
		if prev != nil {
			if old, ok := prev.files[src.Name]; ok {
				c := s.clone()
				if c.apply(src.Name, old) == nil {
					s = c
					out.files[src.Name] = old
				}
			}
		}
	}
	errs = append(errs, s.relink()...)
	kills := 0
	for _, n := range s.order {
		r := s.rules[n]
		if r.kill != nil && r.Enabled {
			if kills++; kills > datapath.MaxKillRules {
				rc := *r
				rc.Enabled = false
				r = &rc
				errs = append(errs, fmt.Errorf("%s:%d: rule %s: disabled: more than %d enabled kill rules", r.File, r.Line, r.Name, datapath.MaxKillRules))
			}
		}
		out.list = append(out.list, r)
	}
	return out, errors.Join(errs...)
}

package secevents

import (
	"fmt"
	"strings"
	"unicode"
)

// The condition language: Falco's syntax, for the fields and operators in
// fields.go. The parser builds an AST (node); compile.go turns it into a
// closure and filter.go into the in-kernel filter.

type nodeKind int

const (
	nAnd nodeKind = iota
	nOr
	nNot
	nCmp   // field op value(s)
	nMacro // a macro's name, replaced by its condition when compiled
)

type node struct {
	kind   nodeKind
	kids   []*node
	field  string   // nCmp
	op     string   // nCmp
	values []string // nCmp: one value, or a list's items (names of lists expanded later)
	list   bool     // nCmp: values came in parentheses
	name   string   // nMacro
}

// operators, longest first where one is a prefix of another. The
// unsupported ones are recognized so that the error names them.
var (
	symbolOps      = []string{"==", "!=", "<=", ">=", "=", "<", ">"}
	wordOps        = map[string]bool{"in": true, "startswith": true, "endswith": true, "contains": true, "icontains": true, "pmatch": true, "glob": true, "exists": true}
	unsupportedOps = map[string]bool{"intersects": true, "bcontains": true, "bstartswith": true, "regex": true, "iglob": true}
)

type token struct {
	s      string
	quoted bool
	pos    int
}

// lex splits a condition into words, quoted strings and the punctuation
// ( ) , and comparison symbols. Bare words run until space, a parenthesis,
// a comma or a comparison symbol, so paths need no quotes, as in Falco.
func lex(s string) ([]token, error) {
	var out []token
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case unicode.IsSpace(rune(c)):
			i++
		case c == '(' || c == ')' || c == ',':
			out = append(out, token{s: string(c), pos: i})
			i++
		case c == '"' || c == '\'':
			j := i + 1
			var b strings.Builder
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at column %d", i+1)
			}
			out = append(out, token{s: b.String(), quoted: true, pos: i})
			i = j + 1
		default:
			if op := symbolAt(s[i:]); op != "" {
				out = append(out, token{s: op, pos: i})
				i += len(op)
				continue
			}
			j := i
			depth := 0 // brackets, as in k8s.pod.label[app]
			for j < len(s) {
				d := s[j]
				if d == '[' {
					depth++
				} else if d == ']' && depth > 0 {
					depth--
				} else if depth == 0 && (unicode.IsSpace(rune(d)) || d == '(' || d == ')' || d == ',' || symbolAt(s[j:]) != "") {
					break
				}
				j++
			}
			out = append(out, token{s: s[i:j], pos: i})
			i = j
		}
	}
	return out, nil
}

func symbolAt(s string) string {
	for _, op := range symbolOps {
		if strings.HasPrefix(s, op) {
			return op
		}
	}
	return ""
}

type parser struct {
	toks []token
	i    int
}

// parseCondition parses a whole condition.
func parseCondition(s string) (*node, error) {
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("empty condition")
	}
	p := &parser{toks: toks}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		return nil, fmt.Errorf("unexpected %q at column %d", p.toks[p.i].s, p.toks[p.i].pos+1)
	}
	return n, nil
}

func (p *parser) peek() (token, bool) {
	if p.i < len(p.toks) {
		return p.toks[p.i], true
	}
	return token{}, false
}

func (p *parser) keyword(w string) bool {
	t, ok := p.peek()
	if ok && !t.quoted && t.s == w {
		p.i++
		return true
	}
	return false
}

func (p *parser) or() (*node, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.keyword("or") {
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = &node{kind: nOr, kids: []*node{l, r}}
	}
	return l, nil
}

func (p *parser) and() (*node, error) {
	l, err := p.not()
	if err != nil {
		return nil, err
	}
	for p.keyword("and") {
		r, err := p.not()
		if err != nil {
			return nil, err
		}
		l = &node{kind: nAnd, kids: []*node{l, r}}
	}
	return l, nil
}

func (p *parser) not() (*node, error) {
	if p.keyword("not") {
		k, err := p.not()
		if err != nil {
			return nil, err
		}
		return &node{kind: nNot, kids: []*node{k}}, nil
	}
	return p.primary()
}

func (p *parser) primary() (*node, error) {
	t, ok := p.peek()
	if !ok {
		return nil, fmt.Errorf("condition ends early")
	}
	if t.s == "(" && !t.quoted {
		p.i++
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		if !p.keyword(")") {
			return nil, fmt.Errorf("missing ) for ( at column %d", t.pos+1)
		}
		return n, nil
	}
	if t.quoted || t.s == ")" || t.s == "," {
		return nil, fmt.Errorf("unexpected %q at column %d", t.s, t.pos+1)
	}
	p.i++
	op, ok := p.peek()
	if !ok || op.quoted || !(wordOps[op.s] || unsupportedOps[op.s] || symbolAt(op.s) == op.s && op.s != "") {
		// A bare name: a macro.
		if !isIdent(t.s) {
			return nil, fmt.Errorf("%q at column %d is neither a macro name nor followed by an operator", t.s, t.pos+1)
		}
		return &node{kind: nMacro, name: t.s}, nil
	}
	p.i++
	if unsupportedOps[op.s] {
		return nil, fmt.Errorf("unsupported operator %q at column %d", op.s, op.pos+1)
	}
	n := &node{kind: nCmp, field: t.s, op: op.s}
	if op.s == "==" {
		n.op = "="
	}
	if op.s == "exists" {
		return n, nil
	}
	if v, ok := p.peek(); ok && v.s == "(" && !v.quoted {
		p.i++
		n.list = true
		for {
			v, ok := p.peek()
			if !ok {
				return nil, fmt.Errorf("missing ) in the list at column %d", op.pos+1)
			}
			p.i++
			if v.s == ")" && !v.quoted {
				break
			}
			if v.s == "," && !v.quoted {
				continue
			}
			n.values = append(n.values, v.s)
		}
		return n, nil
	}
	v, ok := p.peek()
	if !ok || (!v.quoted && (v.s == ")" || v.s == ",")) {
		return nil, fmt.Errorf("operator %q at column %d has no value", op.s, op.pos+1)
	}
	p.i++
	n.values = []string{v.s}
	return n, nil
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r == '-' || r == '.' || unicode.IsLetter(r) || (i > 0 && unicode.IsDigit(r))) {
			return false
		}
	}
	return true
}

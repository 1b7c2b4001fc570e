package filters

import (
	"strings"
	"unicode"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	k8slabels "k8s.io/apimachinery/pkg/labels"
)

// Label selectors use the full Kubernetes syntax on Cilium-style labels
// ("k8s:app=web"). A key with a source ("k8s:app") matches only labels of
// that source; a bare key ("app") matches any source. Keys are rewritten to
// "source.key" so that the Kubernetes parser accepts them.

// translateSelector rewrites every key of a selector: "k8s:app in (a,b),x"
// becomes "k8s.app in (a,b),any.x".
func translateSelector(sel string) string {
	var out strings.Builder
	rs := []rune(sel)
	i := 0
	for i < len(rs) {
		// Up to the key: spaces and the "!" of "!key".
		for i < len(rs) && (unicode.IsSpace(rs[i]) || rs[i] == '!') {
			out.WriteRune(rs[i])
			i++
		}
		start := i
		for i < len(rs) && !unicode.IsSpace(rs[i]) && !strings.ContainsRune("=!,()", rs[i]) {
			i++
		}
		if key := string(rs[start:i]); key != "" {
			src, k, ok := strings.Cut(key, ":")
			if !ok {
				src, k = "any", key
			}
			out.WriteString(src + "." + k)
		}
		// Up to the next selector: a comma outside parentheses.
		depth := 0
		for i < len(rs) {
			r := rs[i]
			out.WriteRune(r)
			i++
			if r == '(' {
				depth++
			} else if r == ')' {
				depth--
			} else if r == ',' && depth <= 0 {
				break
			}
		}
	}
	return out.String()
}

// flowLabels adapts a flow's label list to the Kubernetes Labels interface;
// keys asked for are "source.key".
type flowLabels []string

func (ls flowLabels) Lookup(q string) (string, bool) {
	qsrc, qkey, _ := strings.Cut(q, ".")
	for _, l := range ls {
		src, rest, ok := strings.Cut(l, ":")
		if !ok {
			src, rest = "unspec", l
		}
		k, v, _ := strings.Cut(rest, "=")
		if k == qkey && (qsrc == "any" || qsrc == src) {
			return v, true
		}
	}
	return "", false
}

func (ls flowLabels) Has(key string) bool {
	_, ok := ls.Lookup(key)
	return ok
}

func (ls flowLabels) Get(key string) string {
	v, _ := ls.Lookup(key)
	return v
}

func labelMatcher(field string, sels []string, get func(*flowpb.Flow) []string) (FilterFunc, error) {
	parsed := make([]k8slabels.Selector, 0, len(sels))
	for _, s := range sels {
		sel, err := k8slabels.Parse(translateSelector(s))
		if err != nil {
			return nil, fieldErrf(field, "selector %q: %w", s, err)
		}
		parsed = append(parsed, sel)
	}
	return func(f *flowpb.Flow) bool {
		ls := flowLabels(get(f))
		for _, sel := range parsed {
			if sel.Matches(ls) {
				return true
			}
		}
		return false
	}, nil
}

func buildLabels(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	for _, c := range []struct {
		field string
		sels  []string
		get   func(*flowpb.Flow) []string
	}{
		{"source_label", ff.GetSourceLabel(), func(f *flowpb.Flow) []string { return f.GetSource().GetLabels() }},
		{"destination_label", ff.GetDestinationLabel(), func(f *flowpb.Flow) []string { return f.GetDestination().GetLabels() }},
	} {
		if len(c.sels) == 0 {
			continue
		}
		fn, err := labelMatcher(c.field, c.sels, c.get)
		if err != nil {
			return nil, err
		}
		fs = append(fs, fn)
	}
	return fs, nil
}

func buildNodeLabels(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	if len(ff.GetNodeLabels()) == 0 {
		return nil, nil
	}
	fn, err := labelMatcher("node_labels", ff.GetNodeLabels(), (*flowpb.Flow).GetNodeLabels)
	if err != nil {
		return nil, err
	}
	return []FilterFunc{fn}, nil
}

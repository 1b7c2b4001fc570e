package yaml12

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

type got struct {
	Index, Line int
	JSON, Err   string
}

func readAll(data string) []got {
	var out []got
	for d, err := range Documents([]byte(data)) {
		g := got{Index: d.Index, Line: d.Line, JSON: string(d.JSON)}
		if err != nil {
			g.Err = err.Error()
		}
		out = append(out, g)
	}
	return out
}

func TestDocuments(t *testing.T) {
	in := `---
# a comment-only document counts but yields nothing
---
a: 1
---
---
b: "x --- y"
c: |
  ---
  not a separator
d: ---
---- : plain key
--- {e: 2}
--- # only null
null
---
--- [f]
...
`
	want := []got{
		{Index: 1, Line: 4, JSON: `{"a":1}`},
		{Index: 2, Line: 7, JSON: `{"----":"plain key","b":"x --- y","c":"---\nnot a separator\n","d":"---"}`},
		{Index: 3, Line: 13, JSON: `{"e":2}`},
		{Index: 5, Line: 17, JSON: `["f"]`},
	}
	if g := readAll(in); !reflect.DeepEqual(g, want) {
		t.Fatalf("got  %+v\nwant %+v", g, want)
	}
	if g := readAll("\n# nothing\n---\n---\n"); g != nil {
		t.Fatalf("empty stream gave %+v", g)
	}
	// CRLF files split the same way.
	crlf := readAll("a: 1\r\n---\r\nb: 2\r\n")
	if len(crlf) != 2 || crlf[1].JSON != `{"b":2}` || crlf[1].Line != 3 {
		t.Fatalf("CRLF: %+v", crlf)
	}
}

// A bad document is named by its index and stream line numbers, and does not
// hide the documents after it. Content after a `...` end marker is an error,
// not dropped.
func TestDocumentsErrors(t *testing.T) {
	in := "a: 1\n---\nb: 2\nc: [\n---\nd: 1\nd: 2\n---\ne: 1\n...\nf: 2\n---\ng: 3\n"
	g := readAll(in)
	want := []got{
		{Index: 0, Line: 1, JSON: `{"a":1}`},
		{Index: 1, Line: 3, Err: "yaml: line 4: did not find expected node content"},
		{Index: 2, Line: 6, Err: "yaml: unmarshal errors:\n  line 7: mapping key \"d\" already defined at line 6"},
		{Index: 3, Line: 9, Err: "yaml: line 10: did not find expected <document start>"},
		{Index: 4, Line: 13, JSON: `{"g":3}`},
	}
	if !reflect.DeepEqual(g, want) {
		t.Fatalf("got  %+v\nwant %+v", g, want)
	}
	// Stopping early stops the reading.
	n := 0
	for range Documents([]byte(in)) {
		n++
		break
	}
	if n != 1 {
		t.Fatalf("%d documents after break", n)
	}
}

// The policy from the issue: a bare y is a namespace, not true.
func TestDocumentsYAML12Scalars(t *testing.T) {
	in := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: y}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y, on: off, yes: no}}}]}]
`
	g := readAll(in)
	want := `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",` +
		`"metadata":{"name":"from-y","namespace":"y"},` +
		`"spec":{"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"ns":"y","on":"off","yes":"no"}}}]}],"podSelector":{}}}`
	if len(g) != 1 || g[0].JSON != want {
		t.Fatalf("got %+v\nwant %s", g, want)
	}
}

// FuzzDocuments: every document yielded is JSON that reads back, as YAML
// through Documents, to the same value; indexes and lines only grow.
func FuzzDocuments(f *testing.F) {
	f.Add("a: y\n---\n# c\n---\nb: [1, 2.5, null, {c: d}]\n--- x\n")
	f.Add("a: |\n  ---\n---\nb: \"\\x85\"\n...\nc: 1\n")
	f.Add("a: [\n---\nd: 1\nd: 2\n---\n-0.0\n---\n1e400\n")
	f.Add("? [a]\n: b\n---\nk: &a [*a]\n")
	f.Fuzz(func(t *testing.T, data string) {
		lastIndex, lastLine := -1, 0
		for d, err := range Documents([]byte(data)) {
			if d.Index <= lastIndex || d.Line <= lastLine || d.Line > strings.Count(data, "\n")+1 {
				t.Fatalf("document %d at line %d after %d at line %d", d.Index, d.Line, lastIndex, lastLine)
			}
			lastIndex, lastLine = d.Index, d.Line
			if err != nil {
				if d.JSON != nil {
					t.Fatal("JSON with an error")
				}
				continue
			}
			var v any
			if err := json.Unmarshal(d.JSON, &v); err != nil {
				t.Fatalf("not JSON: %s: %v", d.JSON, err)
			}
			var n int
			for b, err := range Documents(d.JSON) {
				n++
				if err != nil {
					t.Fatalf("%s does not read back: %v", d.JSON, err)
				}
				var w any
				if err := json.Unmarshal(b.JSON, &w); err != nil || !reflect.DeepEqual(v, w) {
					t.Fatalf("%s read back as %s (%v)", d.JSON, b.JSON, err)
				}
			}
			if n != 1 {
				t.Fatalf("%s read back as %d documents", d.JSON, n)
			}
		}
	})
}

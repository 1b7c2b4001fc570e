// Package yaml12 reads Kubernetes manifests with YAML 1.2 scalars.
//
// sigs.k8s.io/yaml resolves scalars the YAML 1.1 way, so a bare `y`, `n`,
// `yes`, `no`, `on` or `off` becomes a boolean, and `namespace: y` or a
// selector `ns: y` silently turns into "true". The e2e NetworkPolicy model
// lives in namespaces x, y and z, so that would rewrite people's policies.
// YAML 1.2 keeps those words strings; only true and false are booleans.
//
// Documents reads a multi-document stream; ToJSON converts one document.
package yaml12

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// ToJSON converts one YAML document to JSON. JSON is valid YAML, so the
// result can go to sigs.k8s.io/yaml or encoding/json unchanged. An empty
// document gives null; more than one document is an error.
func ToJSON(doc []byte) ([]byte, error) {
	j, err := convert(doc)
	if err == nil && j == nil {
		j = []byte("null")
	}
	return j, err
}

// errManyDocuments is input to ToJSON that holds more than one document.
// Reading only the first, as yaml.Unmarshal does, would drop the rest
// without a word.
var errManyDocuments = errors.New("more than one document; separate documents with a --- line")

// convert is ToJSON, but gives nil for a document without a value (only
// comments, or null).
func convert(doc []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	var n yaml.Node
	if err := dec.Decode(&n); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	switch err := dec.Decode(new(yaml.Node)); {
	case err == nil:
		return nil, errManyDocuments
	case !errors.Is(err, io.EOF):
		return nil, err
	}
	untagDates(&n)
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	if v == nil {
		return nil, nil
	}
	v, err := jsonable(v)
	if err != nil {
		return nil, err
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return yamlSafe(j), nil
}

// untagDates keeps plain scalars that look like dates strings: YAML 1.2 has
// no timestamp type, and yaml.v3 would turn a label value 2024-01-01 into
// "2024-01-01T00:00:00Z". An explicit !!timestamp tag is left alone.
func untagDates(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!timestamp" && n.Style&yaml.TaggedStyle == 0 {
		n.Tag = "!!str"
	}
	// Alias nodes are not followed: their anchors are in the tree too.
	for _, c := range n.Content {
		untagDates(c)
	}
}

// jsonable turns maps with non-string keys (`80: x`) into string-keyed maps,
// as YAML-to-JSON conversion in Kubernetes does.
func jsonable(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
		return x, nil
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			switch k.(type) {
			case string, int, int64, uint64, float64, bool:
			default:
				return nil, fmt.Errorf("unsupported map key %v of type %T", k, k)
			}
			// An int key 1 and a float key 1.0 are two keys to yaml but
			// one string here: keeping either value would be a coin
			// toss (map order), so the document is refused.
			s := fmt.Sprint(k)
			if _, dup := m[s]; dup {
				return nil, fmt.Errorf("map keys collide: more than one key reads %q", s)
			}
			m[s] = c
		}
		return m, nil
	case []any:
		for i, e := range x {
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
		return x, nil
	default:
		return v, nil
	}
}

// yamlSafe escapes the characters encoding/json writes raw but a YAML
// reader rejects (DEL, C1 controls, U+FFFE, U+FFFF) or folds into a space
// (NEL), so the JSON means the same when read back as YAML, as
// sigs.k8s.io/yaml does. They only occur inside JSON strings.
func yamlSafe(j []byte) []byte {
	var out []byte
	last := 0
	for i := 0; i < len(j); {
		r, size := utf8.DecodeRune(j[i:])
		if r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0xfeff || r == 0xfffe || r == 0xffff {
			out = append(out, j[last:i]...)
			out = fmt.Appendf(out, `\u%04x`, r)
			last = i + size
		}
		i += size
	}
	if out == nil {
		return j
	}
	return append(out, j[last:]...)
}

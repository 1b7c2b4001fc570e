// Package yaml12 reads Kubernetes manifests with YAML 1.2 scalars.
//
// sigs.k8s.io/yaml resolves scalars the YAML 1.1 way, so a bare `y`, `n`,
// `yes`, `no`, `on` or `off` becomes a boolean, and `namespace: y` or a
// selector `ns: y` silently turns into "true". The e2e NetworkPolicy model
// lives in namespaces x, y and z, so that would rewrite people's policies.
// YAML 1.2 keeps those words strings; only true and false are booleans.
package yaml12

import (
	"encoding/json"
	"fmt"

	yaml "go.yaml.in/yaml/v3"
)

// ToJSON converts one YAML document to JSON. JSON is valid YAML, so the
// result can go to sigs.k8s.io/yaml or encoding/json unchanged.
func ToJSON(doc []byte) ([]byte, error) {
	var v any
	if err := yaml.Unmarshal(doc, &v); err != nil {
		return nil, err
	}
	v, err := jsonable(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
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

package metadata

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loupe-project/loupe/internal/yaml12"
)

// maxListDepth bounds nested List objects so hostile input cannot recurse
// without limit.
const maxListDepth = 4

// ParseManifests parses a multi-document YAML (or JSON) stream into typed
// objects appended to into. Documents of kinds the agent does not use are
// reported in skipped as "apiVersion/kind" and otherwise ignored. A document
// that fails to parse is reported in err (all failures joined) while the
// other documents are still added, so one bad object never hides the rest.
// Errors count documents from 0.
func ParseManifests(data []byte, into *Snapshot) (skipped []string, err error) {
	var errs []error
	for d, rerr := range yaml12.Documents(data) {
		if rerr != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", d.Index, rerr))
			continue
		}
		s, derr := addJSON(d.JSON, into, 0)
		skipped = append(skipped, s...)
		if derr != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", d.Index, derr))
		}
	}
	return skipped, errors.Join(errs...)
}

// addJSON decodes one JSON object, dispatching on its kind.
func addJSON(j []byte, into *Snapshot, depth int) (skipped []string, err error) {
	j = bytes.TrimSpace(j)
	if len(j) == 0 || bytes.Equal(j, []byte("null")) {
		return nil, nil // a null List item; Documents skips empty documents
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return nil, fmt.Errorf("read kind: %w", err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return nil, fmt.Errorf("object needs apiVersion and kind (got %q, %q)", tm.APIVersion, tm.Kind)
	}
	gvk := tm.APIVersion + "/" + tm.Kind
	switch gvk {
	case "v1/Namespace":
		return nil, decodeInto(j, &into.Namespaces)
	case "v1/Pod":
		return nil, decodeInto(j, &into.Pods)
	case "v1/Service":
		return nil, decodeInto(j, &into.Services)
	case "v1/Node":
		return nil, decodeInto(j, &into.Nodes)
	case "discovery.k8s.io/v1/EndpointSlice":
		return nil, decodeInto(j, &into.EndpointSlices)
	case "networking.k8s.io/v1/NetworkPolicy":
		return nil, decodeInto(j, &into.NetworkPolicies)
	case "v1/List":
		if depth >= maxListDepth {
			return nil, fmt.Errorf("list nested deeper than %d", maxListDepth)
		}
		var l struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(j, &l); err != nil {
			return nil, fmt.Errorf("decode list: %w", err)
		}
		var errs []error
		for i, it := range l.Items {
			s, err := addJSON(it, into, depth+1)
			skipped = append(skipped, s...)
			if err != nil {
				errs = append(errs, fmt.Errorf("item %d: %w", i, err))
			}
		}
		return skipped, errors.Join(errs...)
	default:
		return []string{gvk}, nil
	}
}

// named is what every decoded object offers.
type named interface {
	GetName() string
}

func decodeInto[T any](j []byte, list *[]*T) error {
	obj := new(T)
	if err := json.Unmarshal(j, obj); err != nil {
		return fmt.Errorf("decode %T: %w", obj, err)
	}
	if n, ok := any(obj).(named); !ok || n.GetName() == "" {
		return fmt.Errorf("%T has no metadata.name", obj)
	}
	*list = append(*list, obj)
	return nil
}

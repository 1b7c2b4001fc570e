package filters

import (
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// nsName is one "namespace/prefix" value: an empty namespace matches any
// namespace, an empty prefix any name ("ns/" selects a namespace).
type nsName struct{ ns, prefix string }

// parseNamespacedNames accepts "name", "ns/name", "ns/" and "/name". A value
// without a slash is a name prefix in any namespace, as in Hubble.
func parseNamespacedNames(field string, vals []string) ([]nsName, error) {
	out := make([]nsName, 0, len(vals))
	for _, v := range vals {
		if v == "" {
			return nil, fieldErrf(field, "name must not be empty")
		}
		ns, name, found := strings.Cut(v, "/")
		if !found {
			ns, name = "", v
		}
		out = append(out, nsName{ns: ns, prefix: name})
	}
	return out, nil
}

func matchNamespacedName(want []nsName, ns, name string) bool {
	if ns == "" && name == "" {
		return false
	}
	for _, w := range want {
		if (w.ns == "" || w.ns == ns) && strings.HasPrefix(name, w.prefix) {
			return true
		}
	}
	return false
}

func buildPod(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	if v := ff.GetSourcePod(); len(v) > 0 {
		want, err := parseNamespacedNames("source_pod", v)
		if err != nil {
			return nil, err
		}
		fs = append(fs, func(f *flowpb.Flow) bool {
			ep := f.GetSource()
			return matchNamespacedName(want, ep.GetNamespace(), ep.GetPodName())
		})
	}
	if v := ff.GetDestinationPod(); len(v) > 0 {
		want, err := parseNamespacedNames("destination_pod", v)
		if err != nil {
			return nil, err
		}
		fs = append(fs, func(f *flowpb.Flow) bool {
			ep := f.GetDestination()
			return matchNamespacedName(want, ep.GetNamespace(), ep.GetPodName())
		})
	}
	return fs, nil
}

package observer

import (
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of flow.proto that the prefilter reads from a stored flow's
// wire bytes without decoding the rest: Flow.source and Flow.destination,
// and in their Endpoint, namespace and pod_name.
const (
	flowSourceField      = 8
	flowDestinationField = 9
	endpointNamespace    = 3
	endpointPodName      = 5
)

// podWant is one "ns/prefix" pod filter value: an empty ns is any
// namespace, an empty prefix any name (as observer/filters reads them).
type podWant struct{ ns, prefix string }

// podPrefilter returns a test on a stored flow's wire bytes that is false
// only for flows the whitelist cannot match, so the history read skips
// decoding most flows of other pods; nil when the whitelist gives no such
// test (a filter without pod fields may match any flow). Each filter's
// source_pod and destination_pod are checked exactly as the filter does.
func podPrefilter(wl []*flowpb.FlowFilter) func([]byte) bool {
	if len(wl) == 0 {
		return nil
	}
	type need struct{ src, dst []podWant }
	needs := make([]need, 0, len(wl))
	for _, ff := range wl {
		n := need{src: podWants(ff.GetSourcePod()), dst: podWants(ff.GetDestinationPod())}
		if n.src == nil && n.dst == nil {
			return nil
		}
		needs = append(needs, n)
	}
	return func(b []byte) bool {
		sns, spod, dns, dpod, ok := endpointNames(b)
		if !ok {
			return true // let the decoder judge
		}
		for _, n := range needs {
			if (n.src == nil || podMatches(n.src, sns, spod)) && (n.dst == nil || podMatches(n.dst, dns, dpod)) {
				return true
			}
		}
		return false
	}
}

func podWants(vals []string) []podWant {
	if len(vals) == 0 {
		return nil
	}
	out := make([]podWant, 0, len(vals))
	for _, v := range vals {
		ns, name, found := strings.Cut(v, "/")
		if !found {
			ns, name = "", v
		}
		out = append(out, podWant{ns, name})
	}
	return out
}

func podMatches(want []podWant, ns, pod []byte) bool {
	if len(ns) == 0 && len(pod) == 0 {
		return false
	}
	for _, w := range want {
		if (w.ns == "" || w.ns == string(ns)) && strings.HasPrefix(string(pod), w.prefix) {
			return true
		}
	}
	return false
}

// endpointNames reads the source's and destination's namespace and pod
// name from a Flow's wire bytes.
func endpointNames(b []byte) (sns, spod, dns, dpod []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, nil, nil, false
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == flowSourceField || num == flowDestinationField) {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, nil, nil, nil, false
			}
			ns, pod, ok := nsPod(v)
			if !ok {
				return nil, nil, nil, nil, false
			}
			if num == flowSourceField {
				sns, spod = ns, pod
			} else {
				dns, dpod = ns, pod
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, nil, nil, nil, false
		}
		b = b[m:]
	}
	return sns, spod, dns, dpod, true
}

func nsPod(b []byte) (ns, pod []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, false
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == endpointNamespace || num == endpointPodName) {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, nil, false
			}
			if num == endpointNamespace {
				ns = v
			} else {
				pod = v
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, nil, false
		}
		b = b[m:]
	}
	return ns, pod, true
}

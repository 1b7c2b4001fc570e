package hubblemetrics

import (
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// A context identifier says what the source or destination label holds.
// Their cardinality, from low to high: namespace; reserved-identity (a
// dozen values); workload, workload-name, app (one per workload); pod,
// pod-name (one per pod: grows with pod churn); identity (one per label
// set); ip and dns (one per address or name: unbounded with world
// traffic). Prefer the lowest that answers the question.
type contextID uint8

const (
	ctxIdentity contextID = iota + 1
	ctxNamespace
	ctxPod
	ctxPodName
	ctxDNS
	ctxIP
	ctxReservedIdentity
	ctxWorkload
	ctxWorkloadName
	ctxApp
)

var contextIDs = map[string]contextID{
	"identity":          ctxIdentity,
	"namespace":         ctxNamespace,
	"pod":               ctxPod,
	"pod-name":          ctxPodName,
	"dns":               ctxDNS,
	"ip":                ctxIP,
	"reserved-identity": ctxReservedIdentity,
	"workload":          ctxWorkload,
	"workload-name":     ctxWorkloadName,
	"app":               ctxApp,
}

func contextIDNames() []string {
	var out []string
	for k := range contextIDs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// contextLabelNames are labelsContext's labels, in the order Hubble adds
// them whatever order the option lists them in.
var contextLabelNames = []string{
	"source_ip", "source_pod", "source_namespace", "source_workload", "source_workload_kind", "source_app",
	"destination_ip", "destination_pod", "destination_namespace", "destination_workload", "destination_workload_kind", "destination_app",
	"traffic_direction",
}

var contextKeys = []string{
	"sourcecontext", "sourceegresscontext", "sourceingresscontext",
	"destinationcontext", "destinationegresscontext", "destinationingresscontext",
}

func isContextKey(lk string) bool { return slices.Contains(contextKeys, lk) }

// contexts is a family's compiled context options: which labels it adds
// and how to fill them from a flow.
type contexts struct {
	labels                []int // indexes into contextLabelNames, in that order
	src, srcIn, srcEg     []contextID
	dst, dstIn, dstEg     []contextID
	hasSource, hasDestLbl bool

	// byEndpoints caches the values of contexts that read only the
	// endpoints and the direction (not IPs or DNS names): the decoder
	// shares one immutable Endpoint between the flows of a pod, so the
	// pair of pointers names the values, and joining and concatenating
	// them per flow was most of a family's cost. Nil when not cacheable.
	byEndpoints map[endpointsKey][]string
}

type endpointsKey struct {
	src, dst *flowpb.Endpoint
	dir      flowpb.TrafficDirection
}

func newContexts(opts []Option) *contexts {
	c := &contexts{}
	ids := func(vals []string) []contextID {
		out := make([]contextID, 0, len(vals))
		for _, v := range vals {
			out = append(out, contextIDs[strings.ToLower(v)])
		}
		return out
	}
	for _, o := range opts {
		switch strings.ToLower(o.Key) {
		case "labelscontext":
			for i, l := range contextLabelNames {
				if slices.Contains(o.Values, l) {
					c.labels = append(c.labels, i)
				}
			}
		case "sourcecontext":
			c.src = ids(o.Values)
		case "sourceingresscontext":
			c.srcIn = ids(o.Values)
		case "sourceegresscontext":
			c.srcEg = ids(o.Values)
		case "destinationcontext":
			c.dst = ids(o.Values)
		case "destinationingresscontext":
			c.dstIn = ids(o.Values)
		case "destinationegresscontext":
			c.dstEg = ids(o.Values)
		}
	}
	c.hasSource = len(c.src)+len(c.srcIn)+len(c.srcEg) > 0
	c.hasDestLbl = len(c.dst)+len(c.dstIn)+len(c.dstEg) > 0
	if c.endpointsOnly() {
		c.byEndpoints = make(map[endpointsKey][]string)
	}
	return c
}

// endpointsOnly says whether every value comes from the endpoints and the
// direction alone.
func (c *contexts) endpointsOnly() bool {
	for _, i := range c.labels {
		if strings.HasSuffix(contextLabelNames[i], "_ip") {
			return false
		}
	}
	for _, ids := range [][]contextID{c.src, c.srcIn, c.srcEg, c.dst, c.dstIn, c.dstEg} {
		if slices.Contains(ids, ctxIP) || slices.Contains(ids, ctxDNS) {
			return false
		}
	}
	return true
}

// names are the label names the contexts add: labelsContext's first, then
// source and destination, as Hubble orders them.
func (c *contexts) names() []string {
	var out []string
	for _, i := range c.labels {
		out = append(out, contextLabelNames[i])
	}
	if c.hasSource {
		out = append(out, "source")
	}
	if c.hasDestLbl {
		out = append(out, "destination")
	}
	return out
}

// values appends the label values for f to out, in names' order.
func (c *contexts) values(out []string, f *flowpb.Flow) []string {
	if c.byEndpoints == nil {
		return c.compute(out, f)
	}
	k := endpointsKey{src: f.GetSource(), dst: f.GetDestination(), dir: f.GetTrafficDirection()}
	if v, ok := c.byEndpoints[k]; ok {
		return append(out, v...)
	}
	n := len(out)
	out = c.compute(out, f)
	if len(c.byEndpoints) >= maxCached {
		clear(c.byEndpoints)
	}
	c.byEndpoints[k] = slices.Clone(out[n:])
	return out
}

func (c *contexts) compute(out []string, f *flowpb.Flow) []string {
	src, dst := f.GetSource(), f.GetDestination()
	for _, i := range c.labels {
		out = append(out, labelValue(contextLabelNames[i], f, src, dst))
	}
	dir := f.GetTrafficDirection()
	if c.hasSource {
		ids := c.src
		if c.srcIn != nil && dir == flowpb.TrafficDirection_INGRESS {
			ids = c.srcIn
		} else if c.srcEg != nil && dir == flowpb.TrafficDirection_EGRESS {
			ids = c.srcEg
		}
		out = append(out, firstNonEmpty(ids, f, src, true))
	}
	if c.hasDestLbl {
		ids := c.dst
		if c.dstIn != nil && dir == flowpb.TrafficDirection_INGRESS {
			ids = c.dstIn
		} else if c.dstEg != nil && dir == flowpb.TrafficDirection_EGRESS {
			ids = c.dstEg
		}
		out = append(out, firstNonEmpty(ids, f, dst, false))
	}
	return out
}

func labelValue(name string, f *flowpb.Flow, src, dst *flowpb.Endpoint) string {
	ep, ip := src, f.GetIP().GetSource()
	if strings.HasPrefix(name, "destination_") {
		ep, ip = dst, f.GetIP().GetDestination()
	}
	switch name[strings.IndexByte(name, '_')+1:] {
	case "ip":
		return ip
	case "pod":
		return ep.GetPodName()
	case "namespace":
		return ep.GetNamespace()
	case "workload":
		if w := ep.GetWorkloads(); len(w) > 0 {
			return w[0].GetName()
		}
	case "workload_kind":
		if w := ep.GetWorkloads(); len(w) > 0 {
			return w[0].GetKind()
		}
	case "app":
		return appLabel(ep.GetLabels())
	case "direction": // traffic_direction
		if d := f.GetTrafficDirection(); d != flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN {
			return strings.ToLower(d.String())
		}
		return "unknown"
	}
	return ""
}

// firstNonEmpty is the first identifier that yields a value, as Hubble
// falls back along "a|b|c".
func firstNonEmpty(ids []contextID, f *flowpb.Flow, ep *flowpb.Endpoint, source bool) string {
	for _, id := range ids {
		if v := contextValue(id, f, ep, source); v != "" {
			return v
		}
	}
	return ""
}

func contextValue(id contextID, f *flowpb.Flow, ep *flowpb.Endpoint, source bool) string {
	switch id {
	case ctxNamespace:
		return ep.GetNamespace()
	case ctxIdentity:
		return strings.Join(ep.GetLabels(), ",")
	case ctxPod:
		if ns := ep.GetNamespace(); ns != "" {
			return ns + "/" + ep.GetPodName()
		}
		return ep.GetPodName()
	case ctxPodName:
		return ep.GetPodName()
	case ctxDNS:
		if source {
			return strings.Join(f.GetSourceNames(), ",")
		}
		return strings.Join(f.GetDestinationNames(), ",")
	case ctxIP:
		if source {
			return f.GetIP().GetSource()
		}
		return f.GetIP().GetDestination()
	case ctxReservedIdentity:
		return reservedLabel(ep.GetLabels())
	case ctxWorkload, ctxWorkloadName:
		w := ep.GetWorkloads()
		if len(w) == 0 || w[0].GetName() == "" {
			return ""
		}
		if ns := ep.GetNamespace(); id == ctxWorkload && ns != "" {
			return ns + "/" + w[0].GetName()
		}
		return w[0].GetName()
	case ctxApp:
		return appLabel(ep.GetLabels())
	}
	return ""
}

// reservedLabel prefers reserved:kube-apiserver, then the first reserved
// label, as Hubble's reserved-identity context.
func reservedLabel(labels []string) string {
	if slices.Contains(labels, "reserved:kube-apiserver") {
		return "reserved:kube-apiserver"
	}
	for _, l := range labels {
		if strings.HasPrefix(l, "reserved:") {
			return l
		}
	}
	return ""
}

// appLabels are the pod labels Hubble's app context reads; the first of
// the endpoint's labels that is one of them wins.
var appLabels = []string{"k8s:app.kubernetes.io/name=", "k8s:k8s-app=", "k8s:app="}

func appLabel(labels []string) string {
	for _, l := range labels {
		for _, p := range appLabels {
			if v, ok := strings.CutPrefix(l, p); ok && v != "" {
				return v
			}
		}
	}
	return ""
}

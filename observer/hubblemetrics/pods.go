package hubblemetrics

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PodGrace is how long Hubble keeps the series of a deleted pod before
// removing them: long enough for the last scrape to see their final
// counts.
const PodGrace = time.Minute

// DeletePod removes the series bound to the pod namespace/name, as Hubble
// does a minute after a pod goes: those whose source or destination label
// is the pod (a "pod" context), and those whose labelsContext pod and
// namespace labels name it. Without it, pod contexts would keep a series
// for every pod that ever ran. Call it from the goroutine that calls
// Observe, or with the same lock held.
func (s *Set) DeletePod(namespace, name string) {
	ref := namespace + "/" + name
	for _, h := range s.handlers {
		for _, v := range vecsOf(h) {
			deletePod(h.contexts(), v, ref, namespace, name)
		}
		if hh, ok := h.(*httpHandler); ok {
			deletePodHistogram(hh.ctx, hh.duration, ref, namespace, name)
		}
	}
}

func deletePod(c *contexts, v *vec, ref, namespace, name string) {
	n := 0
	if slices.Contains(c.src, ctxPod) || slices.Contains(c.srcIn, ctxPod) || slices.Contains(c.srcEg, ctxPod) {
		n += v.cv.DeletePartialMatch(prometheus.Labels{"source": ref})
	}
	if slices.Contains(c.dst, ctxPod) || slices.Contains(c.dstIn, ctxPod) || slices.Contains(c.dstEg, ctxPod) {
		n += v.cv.DeletePartialMatch(prometheus.Labels{"destination": ref})
	}
	for _, side := range []string{"source_", "destination_"} {
		if c.hasLabel(side+"pod") && c.hasLabel(side+"namespace") {
			n += v.cv.DeletePartialMatch(prometheus.Labels{side + "namespace": namespace, side + "pod": name})
		}
	}
	if n > 0 {
		clear(v.cache) // its counters may be the deleted ones
		clear(v.byKey)
		clear(v.byOwn)
	}
}

func (c *contexts) hasLabel(name string) bool {
	for _, i := range c.labels {
		if contextLabelNames[i] == name {
			return true
		}
	}
	return false
}

// deletePodHistogram is deletePod for the http family's histogram.
func deletePodHistogram(c *contexts, hv *prometheus.HistogramVec, ref, namespace, name string) {
	if slices.Contains(c.src, ctxPod) || slices.Contains(c.srcIn, ctxPod) || slices.Contains(c.srcEg, ctxPod) {
		hv.DeletePartialMatch(prometheus.Labels{"source": ref})
	}
	if slices.Contains(c.dst, ctxPod) || slices.Contains(c.dstIn, ctxPod) || slices.Contains(c.dstEg, ctxPod) {
		hv.DeletePartialMatch(prometheus.Labels{"destination": ref})
	}
	for _, side := range []string{"source_", "destination_"} {
		if c.hasLabel(side+"pod") && c.hasLabel(side+"namespace") {
			hv.DeletePartialMatch(prometheus.Labels{side + "namespace": namespace, side + "pod": name})
		}
	}
}

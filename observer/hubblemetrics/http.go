package hubblemetrics

import (
	"strconv"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
)

// httpHandler is the http family (Hubble's v1): hubble_http_requests_total
// {method, protocol, reporter, contexts...}, hubble_http_responses_total
// {method, protocol, status, reporter, contexts...} and the histogram
// hubble_http_request_duration_seconds{method, reporter, contexts...} of
// responses' l7.latency_ns. reporter is "client" for flows reported at the
// client's side (traffic direction egress), "server" at the server's.
type httpHandler struct {
	ctx                 *contexts
	requests, responses *vec
	duration            *prometheus.HistogramVec
	lv                  []string
}

func newHTTPHandler(ctx *contexts, _ map[string]bool) handler {
	return &httpHandler{
		ctx:       ctx,
		requests:  newVec("http_requests_total", "Count of HTTP requests", append([]string{"method", "protocol", "reporter"}, ctx.names()...)),
		responses: newVec("http_responses_total", "Count of HTTP responses", append([]string{"method", "protocol", "status", "reporter"}, ctx.names()...)),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "hubble", Name: "http_request_duration_seconds",
			Help: "Quantiles of HTTP request duration in seconds",
		}, append([]string{"method", "reporter"}, ctx.names()...)),
	}
}

func (h *httpHandler) vec() *vec                          { return h.requests }
func (h *httpHandler) more() []*vec                       { return []*vec{h.responses} }
func (h *httpHandler) collectors() []prometheus.Collector { return []prometheus.Collector{h.duration} }
func (h *httpHandler) contexts() *contexts                { return h.ctx }

func (h *httpHandler) observe(f *flowpb.Flow) {
	l7 := f.GetL7()
	hp := l7.GetHttp()
	if hp == nil {
		return
	}
	reporter := "unknown"
	switch f.GetTrafficDirection() {
	case flowpb.TrafficDirection_EGRESS:
		reporter = "client"
	case flowpb.TrafficDirection_INGRESS:
		reporter = "server"
	}
	switch l7.GetType() {
	case flowpb.L7FlowType_REQUEST:
		v := h.requests
		v.lv = h.ctx.values(append(v.lv[:0], hp.GetMethod(), hp.GetProtocol(), reporter), f)
		v.inc(v.lv)
	case flowpb.L7FlowType_RESPONSE:
		v := h.responses
		v.lv = h.ctx.values(append(v.lv[:0], hp.GetMethod(), hp.GetProtocol(), strconv.Itoa(int(hp.GetCode())), reporter), f)
		v.inc(v.lv)
		h.lv = h.ctx.values(append(h.lv[:0], hp.GetMethod(), reporter), f)
		if o, err := h.duration.GetMetricWithLabelValues(h.lv...); err == nil {
			o.Observe(float64(l7.GetLatencyNs()) / float64(time.Second))
		} else {
			h.responses.errs++
		}
	}
}

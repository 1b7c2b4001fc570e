package observer

import (
	"net/http"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/loupe-project/loupe/observer/hubblemetrics"
)

// metrics is the observer's registry: Hubble's flow metrics
// (hubblemetrics, as --metrics enables them) and loupe's own counters.
type metrics struct {
	reg          *prometheus.Registry
	hubble       *hubblemetrics.Set
	lost         prometheus.Counter
	decodeErrors prometheus.Counter
}

func newMetrics(specs []hubblemetrics.Spec) (*metrics, error) {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Name: "events_lost_total",
			Help: "Datapath events lost before the observer read them (ring buffer full or short records)",
		}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Name: "decode_errors_total",
			Help: "Datapath records the observer could not decode",
		}),
	}
	m.reg.MustRegister(m.lost, m.decodeErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var err error
	if m.hubble, err = hubblemetrics.New(m.reg, specs); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func (m *metrics) observe(f *flowpb.Flow) { m.hubble.Observe(f) }

package daemon

import "github.com/prometheus/client_golang/prometheus"

// labeledCount is one series of a counterCollector: its label value and
// the kernel's count.
type labeledCount struct {
	label string
	n     uint64
}

// counterCollector exports counters the kernel keeps (a datapath
// program's own outcomes and losses), read on each scrape, as one counter
// family with one label. A failed read is an invalid metric, so the scrape
// says so rather than showing stale numbers.
type counterCollector struct {
	desc *prometheus.Desc
	read func() ([]labeledCount, error)
}

func newCounterCollector(name, help, label string, read func() ([]labeledCount, error)) *counterCollector {
	return &counterCollector{desc: prometheus.NewDesc(name, help, []string{label}, nil), read: read}
}

func (c *counterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *counterCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, x := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(x.n), x.label)
	}
}

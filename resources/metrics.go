package resources

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/loupe-project/loupe/api/resources/v1"
)

// Histogram buckets exported to Prometheus: the kernel's log2 buckets
// whose upper bounds run from 1 µs (2^10 ns) to 34 s (2^35 ns).
const (
	promFirstBucket = 9
	promLastBucket  = 34
	scrapeTimeout   = 5 * time.Second
)

// Collector exports the pods' counters per workload (not per pod, so that
// pods coming and going do not grow the series): run-queue and block I/O
// latency histograms, and CPU, bytes, page fault and OOM kill counters.
// The node's own row is not a workload and is left out.
type Collector struct {
	src                                 Source
	runq, io, cpu, ioBytes, faults, oom *prometheus.Desc
}

// NewCollector reads src at each scrape.
func NewCollector(src Source) *Collector {
	l := []string{"namespace", "workload"}
	return &Collector{src: src,
		runq:    prometheus.NewDesc("loupe_workload_runqueue_latency_seconds", "Time the workload's tasks waited in the run queue, from wake-up or preemption to running", l, nil),
		io:      prometheus.NewDesc("loupe_workload_block_io_latency_seconds", "Latency of the block requests the workload's tasks submitted, from insert or issue to completion", l, nil),
		cpu:     prometheus.NewDesc("loupe_workload_cpu_seconds_total", "On-CPU time of the workload's tasks", l, nil),
		ioBytes: prometheus.NewDesc("loupe_workload_block_io_bytes_total", "Bytes of the block requests the workload's tasks submitted", l, nil),
		faults:  prometheus.NewDesc("loupe_workload_page_faults_total", "User page faults of the workload's tasks (major and minor: the tracepoint cannot tell them apart)", l, nil),
		oom:     prometheus.NewDesc("loupe_workload_oom_kills_total", "OOM kills of the workload's tasks", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.runq, c.io, c.cpu, c.ioBytes, c.faults, c.oom} {
		ch <- d
	}
}

type workloadSum struct {
	runq, io                       []uint64
	runqN, ioN, runqSum, ioSum     uint64
	cpu, ioBytes, faults, oomKills uint64
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	rows, err := c.src(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.runq, err)
		return
	}
	type key struct{ ns, w string }
	sums := map[key]*workloadSum{}
	for _, r := range rows {
		if r.GetPod() == "" {
			continue
		}
		k := key{r.GetNamespace(), r.GetWorkload()}
		if k.w == "" {
			k.w = r.GetPod()
		}
		s := sums[k]
		if s == nil {
			s = &workloadSum{}
			sums[k] = s
		}
		s.runq = addBuckets(s.runq, r.GetRunqueue())
		s.io = addBuckets(s.io, r.GetBlockIo())
		s.runqN += r.GetRunqueue().GetCount()
		s.runqSum += r.GetRunqueue().GetSumNs()
		s.ioN += r.GetBlockIo().GetCount()
		s.ioSum += r.GetBlockIo().GetSumNs()
		s.cpu += r.GetCpuNs()
		s.ioBytes += r.GetIoBytes()
		s.faults += r.GetPageFaults()
		s.oomKills += r.GetOomKills()
	}
	for k, s := range sums {
		ch <- prometheus.MustNewConstHistogram(c.runq, s.runqN, float64(s.runqSum)/1e9, cumulative(s.runq), k.ns, k.w)
		ch <- prometheus.MustNewConstHistogram(c.io, s.ioN, float64(s.ioSum)/1e9, cumulative(s.io), k.ns, k.w)
		ch <- prometheus.MustNewConstMetric(c.cpu, prometheus.CounterValue, float64(s.cpu)/1e9, k.ns, k.w)
		ch <- prometheus.MustNewConstMetric(c.ioBytes, prometheus.CounterValue, float64(s.ioBytes), k.ns, k.w)
		ch <- prometheus.MustNewConstMetric(c.faults, prometheus.CounterValue, float64(s.faults), k.ns, k.w)
		ch <- prometheus.MustNewConstMetric(c.oom, prometheus.CounterValue, float64(s.oomKills), k.ns, k.w)
	}
}

func addBuckets(acc []uint64, h *pb.Histogram) []uint64 {
	b := h.GetBuckets()
	if len(acc) < len(b) {
		acc = append(acc, make([]uint64, len(b)-len(acc))...)
	}
	for i, v := range b {
		acc[i] += v
	}
	return acc
}

// cumulative turns log2 buckets into Prometheus's: the count at or below
// each exported upper bound, in seconds.
func cumulative(b []uint64) map[float64]uint64 {
	out := make(map[float64]uint64, promLastBucket-promFirstBucket+1)
	var n uint64
	for i, v := range b {
		n += v
		if i >= promFirstBucket && i <= promLastBucket {
			out[BucketUpperNs(i)/1e9] = n
		}
	}
	for i := len(b); i <= promLastBucket; i++ {
		if i >= promFirstBucket {
			out[BucketUpperNs(i)/1e9] = n
		}
	}
	return out
}

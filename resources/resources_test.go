package resources

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	pb "github.com/loupe-project/loupe/api/resources/v1"
)

func hist(pairs ...uint64) []uint64 {
	b := make([]uint64, 40)
	for i := 0; i+1 < len(pairs); i += 2 {
		b[pairs[i]] = pairs[i+1]
	}
	return b
}

func TestQuantile(t *testing.T) {
	for _, c := range []struct {
		name    string
		buckets []uint64
		q, want float64
	}{
		{"empty", hist(), 0.99, 0},
		// 100 values in [1024, 2048): the median is halfway.
		{"one bucket median", hist(10, 100), 0.5, 1536},
		{"one bucket p99", hist(10, 100), 0.99, 1024 + 1024*0.99},
		// 99 fast, 1 slow: p50 in the fast bucket, p99 at its top.
		{"tail p50", hist(10, 99, 20, 1), 0.5, 1024 + 1024*50.0/99},
		{"tail p99", hist(10, 99, 20, 1), 0.99, 2048},
		{"tail p100", hist(10, 99, 20, 1), 1, 1 << 21},
		{"bucket zero", hist(0, 4), 0.5, 1},
	} {
		if got := Quantile(c.buckets, c.q); math.Abs(got-c.want) > 1e-6 {
			t.Errorf("%s: Quantile(%v) = %v, want %v", c.name, c.q, got, c.want)
		}
	}
}

func row(ns, pod string, netns, cpu uint64, runq, io []uint64, ioBytes uint64) *pb.PodResources {
	count := func(b []uint64) (n uint64) {
		for _, v := range b {
			n += v
		}
		return n
	}
	return &pb.PodResources{Namespace: ns, Pod: pod, Node: "n1", NetnsInode: netns, CpuNs: cpu,
		Runqueue: &pb.Histogram{Buckets: runq, Count: count(runq)}, BlockIo: &pb.Histogram{Buckets: io, Count: count(io)},
		IoBytes: ioBytes, PageFaults: 7, OomKills: 1}
}

// The interval numbers are the difference of two answers; the counters
// are the later answer's. A pod with a new netns (recreated) starts again.
func TestSamples(t *testing.T) {
	prev := []*pb.PodResources{
		row("x", "a", 1, 1e9, hist(10, 100), hist(20, 5), 5<<20),
		row("x", "b", 2, 5e8, hist(10, 3), hist(), 0),
	}
	cur := []*pb.PodResources{
		row("x", "a", 1, 2.5e9, hist(10, 100, 20, 100), hist(20, 10), 10<<20),
		row("x", "b", 9, 2e8, hist(12, 2), hist(), 0), // recreated
		row("x", "c", 3, 0, hist(), hist(), 0),
	}
	got := Samples(prev, cur)
	if len(got) != 3 {
		t.Fatalf("%d samples", len(got))
	}
	a := got[0]
	if a.CPUSeconds != 1.5 {
		t.Errorf("cpuSeconds %v, want 1.5", a.CPUSeconds)
	}
	// The interval's waits are only the 100 in bucket 20.
	if want := round((1<<20+(1<<20)*0.5)/1e3, 1); a.RunqP50Us != want {
		t.Errorf("runqP50Us %v, want %v", a.RunqP50Us, want)
	}
	if a.IOOps != 10 || a.IOBytes != 10<<20 || a.PageFaults != 7 || a.OOMKills != 1 {
		t.Errorf("counters %+v", a)
	}
	if a.IOP99Us == 0 {
		t.Errorf("ioP99Us 0 with 5 ops in the interval")
	}
	if b := got[1]; b.CPUSeconds != 0.2 || b.RunqP99Us == 0 {
		t.Errorf("recreated pod: %+v", b)
	}
	if c := got[2]; c.CPUSeconds != 0 || c.RunqP99Us != 0 || c.IOP99Us != 0 {
		t.Errorf("idle pod: %+v", c)
	}
	raw, _ := json.Marshal(a)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"cpuSeconds", "ioBytes", "ioOps", "ioP99Us", "namespace", "node", "oomKills", "pageFaults", "pod", "runqP50Us", "runqP99Us"}
	if !slices.Equal(keys, want) {
		t.Errorf("JSON keys %v, want %v", keys, want)
	}
}

// An agent that restarted answers smaller counters: the interval counts
// from zero, never wraps.
func TestSamplesAfterRestart(t *testing.T) {
	prev := []*pb.PodResources{row("x", "a", 1, 9e9, hist(10, 500), hist(), 0)}
	cur := []*pb.PodResources{row("x", "a", 1, 1e9, hist(10, 3), hist(), 0)}
	s := Samples(prev, cur)[0]
	if s.CPUSeconds != 1 || s.RunqP50Us == 0 || s.RunqP50Us > 3 {
		t.Errorf("after a restart: %+v", s)
	}
}

func TestFilter(t *testing.T) {
	all := []*pb.PodResources{
		row("x", "a", 1, 0, hist(), hist(), 0), row("y", "a", 2, 0, hist(), hist(), 0),
		row("x", "b", 3, 0, hist(), hist(), 0), {Node: "n1", NetnsInode: 4},
	}
	names := func(rs []*pb.PodResources) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.GetNamespace()+"/"+r.GetPod())
		}
		return out
	}
	for _, c := range []struct {
		req  *pb.GetResourcesRequest
		want []string
	}{
		{&pb.GetResourcesRequest{}, []string{"x/a", "y/a", "x/b", "/"}},
		{&pb.GetResourcesRequest{Namespace: []string{"x"}}, []string{"x/a", "x/b"}},
		{&pb.GetResourcesRequest{Pod: []string{"a"}}, []string{"x/a", "y/a"}},
		{&pb.GetResourcesRequest{Pod: []string{"y/a", "x/b"}}, []string{"y/a", "x/b"}},
		{&pb.GetResourcesRequest{Namespace: []string{"y"}, Pod: []string{"x/b"}}, nil},
	} {
		if got := names(Filter(all, c.req)); !slices.Equal(got, c.want) {
			t.Errorf("%v: %v, want %v", c.req, got, c.want)
		}
	}
}

// Two pods of one workload are one series; the node's row is none.
func TestCollectorPerWorkload(t *testing.T) {
	a1 := row("x", "a-1", 1, 1e9, hist(12, 3), hist(20, 2), 100)
	a2 := row("x", "a-2", 2, 2e9, hist(12, 1, 30, 1), hist(), 50)
	a1.Workload, a2.Workload = "a", "a"
	rows := []*pb.PodResources{a1, a2, {Node: "n1", NetnsInode: 9, CpuNs: 5e9}}
	c := NewCollector(func(context.Context) ([]*pb.PodResources, error) { return rows, nil })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.Metric{}
	for _, mf := range mfs {
		if len(mf.GetMetric()) != 1 {
			t.Errorf("%s: %d series, want 1 (one workload)", mf.GetName(), len(mf.GetMetric()))
		}
		got[mf.GetName()] = mf.GetMetric()[0]
	}
	if v := got["loupe_workload_cpu_seconds_total"].GetCounter().GetValue(); v != 3 {
		t.Errorf("cpu %v, want 3", v)
	}
	if v := got["loupe_workload_oom_kills_total"].GetCounter().GetValue(); v != 2 {
		t.Errorf("oom kills %v, want 2", v)
	}
	h := got["loupe_workload_runqueue_latency_seconds"].GetHistogram()
	if h.GetSampleCount() != 5 {
		t.Errorf("runq count %d, want 5", h.GetSampleCount())
	}
	for _, b := range h.GetBucket() {
		// 4 waits in [4 µs, 8 µs), 1 near a second.
		want := uint64(0)
		switch {
		case b.GetUpperBound() >= float64(uint64(1)<<31)/1e9:
			want = 5
		case b.GetUpperBound() >= 8192/1e9:
			want = 4
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("le %v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
}

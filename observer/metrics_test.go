package observer

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer/hubblemetrics"
)

// swapSource is a metadata source a test can change.
type swapSource struct {
	cur atomic.Pointer[metadata.Snapshot]
}

func (s *swapSource) Current() *metadata.Snapshot { return s.cur.Load() }
func (s *swapSource) Subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{})
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// A deleted pod's series go after the grace; the others stay.
func TestDeletedPodSeriesExpire(t *testing.T) {
	src := &swapSource{}
	src.cur.Store(testSnapshot(t))
	o, err := New(Config{NodeName: "node-1", Metadata: src, Metrics: hubblemetrics.MustParse("flow:sourceContext=pod"),
		LinkName: func(uint32) string { return "lxc" }})
	if err != nil {
		t.Fatal(err)
	}
	o.podMetricsGrace = 10 * time.Millisecond
	from := func(ip string) []byte {
		return rawEvent(evSpec{ts: 1, typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded,
			proto: 6, tcpFlags: 0x02, epID: 3, srcID: 1000, dstID: 1001, src: ip, dst: "10.0.2.20", sport: 40000, dport: 5432,
			dir: contract.DirectionEgress})
	}
	o.HandleEvent(from("10.0.1.11")) // x/b
	o.HandleEvent(from("10.0.1.10")) // x/web-5d8f7c6b9-abcde
	series := func() string {
		o.mu.Lock()
		defer o.mu.Unlock()
		mfs, err := o.metrics.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, mf := range mfs {
			if mf.GetName() != "hubble_flows_processed_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "source" {
						out = append(out, l.GetValue())
					}
				}
			}
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	if got := series(); got != "x/b x/web-5d8f7c6b9-abcde" {
		t.Fatalf("sources %q", got)
	}

	// x/b is deleted; the next event makes the observer notice.
	next := testSnapshot(t)
	next.Generation = "2"
	next.Pods = slices.DeleteFunc(next.Pods, func(p *corev1.Pod) bool { return p.Name == "b" })
	src.cur.Store(next)
	o.HandleEvent(from("10.0.1.10"))
	deadline := time.Now().Add(10 * time.Second)
	for series() != "x/web-5d8f7c6b9-abcde" {
		if time.Now().After(deadline) {
			t.Fatalf("sources %q: x/b's series stayed", series())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

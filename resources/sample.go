package resources

import (
	"math"

	pb "github.com/loupe-project/loupe/api/resources/v1"
)

// Sample is one pod over one interval: the JSON line of loupe top -o json,
// with exactly these keys. The first four numbers cover the interval; the
// last four count since the pod appeared (since its agent started).
type Sample struct {
	Namespace  string  `json:"namespace"`
	Pod        string  `json:"pod"`
	Node       string  `json:"node"`
	CPUSeconds float64 `json:"cpuSeconds"`
	RunqP50Us  float64 `json:"runqP50Us"`
	RunqP99Us  float64 `json:"runqP99Us"`
	IOP99Us    float64 `json:"ioP99Us"`
	IOOps      uint64  `json:"ioOps"`
	IOBytes    uint64  `json:"ioBytes"`
	PageFaults uint64  `json:"pageFaults"`
	OOMKills   uint64  `json:"oomKills"`
}

// Key identifies a pod's counters across answers: a pod recreated under
// the same name has a new network namespace, so its counters start again.
type Key struct {
	Node, Namespace, Pod string
	Netns                uint64
}

// KeyOf is r's Key.
func KeyOf(r *pb.PodResources) Key {
	return Key{Node: r.GetNode(), Namespace: r.GetNamespace(), Pod: r.GetPod(), Netns: r.GetNetnsInode()}
}

// Delta is the sample of a pod between two answers; prev is nil for a pod
// not in the earlier answer (its interval numbers then count from zero).
func Delta(prev, cur *pb.PodResources) Sample {
	if prev == nil {
		prev = &pb.PodResources{}
	}
	cpu := cur.GetCpuNs()
	if p := prev.GetCpuNs(); p <= cpu {
		cpu -= p
	}
	return Sample{
		Namespace:  cur.GetNamespace(),
		Pod:        cur.GetPod(),
		Node:       cur.GetNode(),
		CPUSeconds: round(float64(cpu)/1e9, 3),
		RunqP50Us:  round(Quantile(Sub(cur.GetRunqueue(), prev.GetRunqueue()), 0.5)/1e3, 1),
		RunqP99Us:  round(Quantile(Sub(cur.GetRunqueue(), prev.GetRunqueue()), 0.99)/1e3, 1),
		IOP99Us:    round(Quantile(Sub(cur.GetBlockIo(), prev.GetBlockIo()), 0.99)/1e3, 1),
		IOOps:      cur.GetBlockIo().GetCount(),
		IOBytes:    cur.GetIoBytes(),
		PageFaults: cur.GetPageFaults(),
		OOMKills:   cur.GetOomKills(),
	}
}

func round(v float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(v*p) / p
}

// Samples pairs two answers by Key, in cur's order.
func Samples(prev, cur []*pb.PodResources) []Sample {
	byKey := make(map[Key]*pb.PodResources, len(prev))
	for _, p := range prev {
		byKey[KeyOf(p)] = p
	}
	out := make([]Sample, 0, len(cur))
	for _, c := range cur {
		out = append(out, Delta(byKey[KeyOf(c)], c))
	}
	return out
}

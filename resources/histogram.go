// Package resources turns the kernel's per-pod counters (datapath's
// resource tracepoints) into what an SRE reads next to the traffic:
// samples over an interval (loupe top), quantiles of the log2 latency
// histograms, and the Resources gRPC service that agents and loupe-relay
// serve.
package resources

import (
	pb "github.com/loupe-project/loupe/api/resources/v1"
)

// Quantile estimates quantile q (0..1) of a log2 histogram, in ns: bucket
// i holds values in [2^i, 2^(i+1)) ns (bucket 0 also 0), and values are
// taken as spread evenly within their bucket, as Prometheus's
// histogram_quantile does. An empty histogram gives 0.
func Quantile(buckets []uint64, q float64) float64 {
	var n uint64
	for _, b := range buckets {
		n += b
	}
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := q * float64(n)
	var seen float64
	for i, b := range buckets {
		if b == 0 {
			continue
		}
		if seen+float64(b) >= rank {
			lo, hi := bucketBounds(i)
			return lo + (hi-lo)*(rank-seen)/float64(b)
		}
		seen += float64(b)
	}
	_, hi := bucketBounds(len(buckets) - 1)
	return hi
}

// bucketBounds is bucket i's range in ns.
func bucketBounds(i int) (lo, hi float64) {
	if i == 0 {
		return 0, 2
	}
	return float64(uint64(1) << i), float64(uint64(1) << (i + 1))
}

// BucketUpperNs is bucket i's upper bound in ns (exclusive).
func BucketUpperNs(i int) float64 {
	_, hi := bucketBounds(i)
	return hi
}

// Sub returns cur − prev per bucket (a histogram that shrank, as after
// an agent restart, counts from zero).
func Sub(cur, prev *pb.Histogram) []uint64 {
	out := make([]uint64, len(cur.GetBuckets()))
	pb := prev.GetBuckets()
	reset := prev.GetCount() > cur.GetCount()
	for i, v := range cur.GetBuckets() {
		if !reset && i < len(pb) && pb[i] <= v {
			v -= pb[i]
		}
		out[i] = v
	}
	return out
}

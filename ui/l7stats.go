package ui

import (
	"cmp"
	"math"
	"net/url"
	"slices"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// Edge L7: what loupe's L7 flows (HTTP and DNS, observer/l7.go) add to an
// edge. Requests give the rate; responses, which carry the request's
// method and URL or query, give errors, latency and the top paths. An
// unanswered DNS query arrives as a response with verdict ERROR.
const (
	maxPaths   = 32 // per edge; past it, counted in MorePaths
	shownPaths = 10
	// Latency histogram: the handshake one's buckets (µs·2^(i/2)), so
	// percentiles are within a factor √2 and reach 11 s.
	l7Buckets = hsBuckets
)

type latencyHist struct {
	n uint32
	b [l7Buckets]uint32
}

func (h *latencyHist) add(ns uint64) {
	h.n++
	h.b[hsBucket(time.Duration(ns))]++
}

// percentile is the q-quantile in ms (within a factor √2), 0 when empty.
func (h *latencyHist) percentile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	want := max(uint32(math.Ceil(q*float64(h.n))), 1)
	var sum uint32
	for i, c := range h.b {
		sum += c
		if sum >= want {
			if i == 0 {
				return 0.0005
			}
			return math.Round(math.Pow(2, (float64(i)-0.5)/2)) / 1e3
		}
	}
	return math.Pow(2, float64(l7Buckets-1)/2) / 1e3
}

type pathStats struct {
	count, errors uint64
	lat           latencyHist
}

type edgeL7 struct {
	protocol                    string // HTTP or DNS
	requests, responses, errors uint64
	lat                         latencyHist
	paths                       map[string]*pathStats
	morePaths                   uint64
	latSum, latMax              uint64 // ns; a history range's, which has no histogram
	// Request rate over a sliding window, as edgeTraffic's bytes.
	winStart, now   int64
	curReq, prevReq uint64
}

// addL7 folds an L7 flow into its edge; other flows pass.
func (a *Aggregator) addL7(e *edge, f *flowpb.Flow, t int64) {
	l7 := f.GetL7()
	if l7 == nil {
		return
	}
	path, proto := "", ""
	if h := l7.GetHttp(); h != nil {
		proto, path = "HTTP", h.GetMethod()+" "+urlPath(h.GetUrl())
	} else if d := l7.GetDns(); d != nil {
		proto, path = "DNS", d.GetQuery()
	} else {
		return
	}
	x := e.l7
	if x == nil {
		x = &edgeL7{winStart: t}
		e.l7 = x
	}
	x.protocol = proto
	x.roll(t)
	x.now = max(x.now, t)
	if a.active == nil {
		a.active = map[*edge]struct{}{}
	}
	a.active[e] = struct{}{} // so Decay fades the rate
	if l7.GetType() != flowpb.L7FlowType_RESPONSE {
		x.requests++
		x.curReq++
		return
	}
	bad := isL7Error(f)
	x.responses++
	x.errors += b2u(bad)
	x.lat.add(l7.GetLatencyNs())
	p := x.paths[path]
	if p == nil {
		if len(x.paths) >= maxPaths {
			x.morePaths++
			return
		}
		if x.paths == nil {
			x.paths = map[string]*pathStats{}
		}
		p = &pathStats{}
		x.paths[path] = p
	}
	p.count++
	p.errors += b2u(bad)
	p.lat.add(l7.GetLatencyNs())
}

// isL7Error: an HTTP status of 500 or more, a DNS rcode other than
// NOERROR, or no answer at all (verdict ERROR).
func isL7Error(f *flowpb.Flow) bool {
	if f.GetVerdict() == flowpb.Verdict_ERROR {
		return true
	}
	if h := f.GetL7().GetHttp(); h != nil {
		return h.GetCode() >= 500
	}
	return f.GetL7().GetDns().GetRcode() != 0
}

// urlPath is the path of an L7 URL ("http://api:8080/x" -> "/x"); the
// observer drops query strings unless told to keep them.
func urlPath(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Path == "" {
		return s
	}
	return u.Path
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func (x *edgeL7) roll(t int64) {
	w := int64(rateWindow)
	if t < x.winStart+w {
		return
	}
	if t < x.winStart+2*w {
		x.prevReq = x.curReq
	} else {
		x.prevReq = 0
	}
	x.curReq = 0
	x.winStart += (t - x.winStart) / w * w
}

// L7View is an edge's L7 traffic as the browser sees it. Latencies are in
// ms, percentiles within a factor √2.
type L7View struct {
	Protocol       string     `json:"protocol"` // HTTP or DNS
	Requests       uint64     `json:"requests"`
	Responses      uint64     `json:"responses"`
	Errors         uint64     `json:"errors"`
	RequestsPerSec float64    `json:"requestsPerSec"`
	ErrorRate      float64    `json:"errorRate"` // errors / responses
	P50            float64    `json:"p50Ms"`
	P99            float64    `json:"p99Ms"`
	Mean           float64    `json:"meanMs,omitempty"` // history ranges, which carry no percentiles
	Max            float64    `json:"maxMs,omitempty"`
	Paths          []PathView `json:"paths"` // the most answered first, at most shownPaths
	MorePaths      uint64     `json:"morePaths,omitempty"`
}

// PathView is one HTTP method and path, or one DNS query, of an edge.
type PathView struct {
	Path   string  `json:"path"`
	Count  uint64  `json:"count"`
	Errors uint64  `json:"errors"`
	P50    float64 `json:"p50Ms"`
	P99    float64 `json:"p99Ms"`
}

func (x *edgeL7) view(now, first int64) *L7View {
	span := float64(int64(rateWindow) + max(0, now-x.winStart))
	if life := float64(now - first); life < span {
		span = life
	}
	span = max(span, float64(1e9)) / 1e9
	v := &L7View{Protocol: x.protocol, Requests: x.requests, Responses: x.responses, Errors: x.errors,
		RequestsPerSec: math.Round(float64(x.prevReq+x.curReq)/span*100) / 100,
		P50:            x.lat.percentile(0.5), P99: x.lat.percentile(0.99), MorePaths: x.morePaths, Paths: []PathView{}}
	if x.latSum > 0 && x.responses > 0 {
		v.Mean = math.Round(float64(x.latSum)/float64(x.responses)/1e3) / 1e3
		v.Max = math.Round(float64(x.latMax)/1e3) / 1e3
	}
	if x.responses > 0 {
		v.ErrorRate = math.Round(float64(x.errors)/float64(x.responses)*1e4) / 1e4
	}
	for p, s := range x.paths {
		v.Paths = append(v.Paths, PathView{Path: p, Count: s.count, Errors: s.errors, P50: s.lat.percentile(0.5), P99: s.lat.percentile(0.99)})
	}
	slices.SortFunc(v.Paths, func(a, b PathView) int { return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Path, b.Path)) })
	if len(v.Paths) > shownPaths {
		v.MorePaths += uint64(len(v.Paths) - shownPaths)
		v.Paths = v.Paths[:shownPaths]
	}
	return v
}

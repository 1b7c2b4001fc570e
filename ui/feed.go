package ui

import (
	"slices"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// FlowRow is one line of the browser's flow table.
type FlowRow struct {
	Time        int64  `json:"t"` // unix ms
	Node        string `json:"node,omitempty"`
	Source      string `json:"src"` // service-map node ids
	Destination string `json:"dst"`
	Edge        string `json:"edge"`
	SourcePod   string `json:"srcPod,omitempty"`
	DestPod     string `json:"dstPod,omitempty"`
	SourceIP    string `json:"srcIP,omitempty"`
	DestIP      string `json:"dstIP,omitempty"`
	SourcePort  uint32 `json:"sport,omitempty"`
	DestPort    uint32 `json:"dport,omitempty"`
	Protocol    string `json:"proto"`
	Verdict     string `json:"verdict"`
	Type        string `json:"type"`
	Reason      string `json:"reason,omitempty"`
	Policy      string `json:"policy,omitempty"`
	Reply       bool   `json:"reply,omitempty"`
	Summary     string `json:"summary,omitempty"`
}

func newRow(f *flowpb.Flow, e *edge) FlowRow {
	proto, sport, dport := l4(f)
	src, dst := e.key.src.id, e.key.dst.id
	if f.GetIsReply().GetValue() {
		src, dst = dst, src // the row shows the packet's own direction
	}
	r := FlowRow{Time: f.GetTime().AsTime().UnixMilli(), Node: f.GetNodeName(), Source: src, Destination: dst, Edge: e.id,
		SourcePod: f.GetSource().GetPodName(), DestPod: f.GetDestination().GetPodName(),
		SourceIP: f.GetIP().GetSource(), DestIP: f.GetIP().GetDestination(), SourcePort: sport, DestPort: dport,
		Protocol: protoNames[proto], Verdict: f.GetVerdict().String(), Type: flowType(f), Reason: dropReason(f),
		Reply: f.GetIsReply().GetValue(), Summary: f.GetSummary()}
	if f.GetTime() == nil {
		r.Time = time.Now().UnixMilli()
	}
	var pols []string
	for _, ps := range [][]*flowpb.Policy{f.GetEgressDeniedBy(), f.GetIngressDeniedBy(), f.GetEgressAllowedBy(), f.GetIngressAllowedBy()} {
		for _, p := range ps {
			pols = append(pols, policyName(p))
		}
	}
	r.Policy = strings.Join(pols, ",")
	return r
}

// Filter selects the flows a browser's table shows. Fields AND; an empty
// field matches everything.
type Filter struct {
	Namespaces []string `json:"ns,omitempty"`
	Verdict    string   `json:"verdict,omitempty"`
	Protocol   string   `json:"proto,omitempty"`
	Port       uint32   `json:"port,omitempty"`
	Text       string   `json:"q,omitempty"`
	// Node selects flows from or to one service-map node; Edge selects one
	// edge's flows.
	Node string `json:"node,omitempty"`
	Edge string `json:"edge,omitempty"`
	// From and To select the flows between two nodes, on any port, in the
	// direction of the connection (replies included).
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

// match reports whether the flow f, on edge e, passes the filter. It reads
// the map's nodes rather than building a row, so that filtering every flow
// stays cheap.
func (fl *Filter) match(f *flowpb.Flow, e *edge) bool {
	if fl.Edge != "" && e.id != fl.Edge {
		return false
	}
	src, dst := e.key.src, e.key.dst
	if fl.Node != "" && src.id != fl.Node && dst.id != fl.Node {
		return false
	}
	if (fl.From != "" && src.id != fl.From) || (fl.To != "" && dst.id != fl.To) {
		return false
	}
	if len(fl.Namespaces) > 0 && !slices.Contains(fl.Namespaces, src.ns) && !slices.Contains(fl.Namespaces, dst.ns) {
		return false
	}
	if fl.Verdict != "" && f.GetVerdict().String() != fl.Verdict {
		return false
	}
	if fl.Protocol != "" && !strings.EqualFold(protoNames[e.key.proto], fl.Protocol) {
		return false
	}
	if fl.Port != 0 && e.key.port != fl.Port {
		return false
	}
	if fl.Text != "" {
		return matchText(fl.Text, f, src, dst)
	}
	return true
}

// matchRow is match for a row already built (the recent-flows history).
func (fl *Filter) matchRow(r *FlowRow, srcNS, dstNS string, port uint32, labels func(id string) []string) bool {
	if fl.Edge != "" && r.Edge != fl.Edge {
		return false
	}
	if fl.Node != "" && r.Source != fl.Node && r.Destination != fl.Node {
		return false
	}
	if fl.From != "" || fl.To != "" {
		from, to := r.Source, r.Destination
		if r.Reply {
			from, to = to, from
		}
		if (fl.From != "" && from != fl.From) || (fl.To != "" && to != fl.To) {
			return false
		}
	}
	if len(fl.Namespaces) > 0 && !slices.Contains(fl.Namespaces, srcNS) && !slices.Contains(fl.Namespaces, dstNS) {
		return false
	}
	if fl.Verdict != "" && r.Verdict != fl.Verdict {
		return false
	}
	if fl.Protocol != "" && !strings.EqualFold(r.Protocol, fl.Protocol) {
		return false
	}
	if fl.Port != 0 && port != fl.Port {
		return false
	}
	if fl.Text == "" {
		return true
	}
	q := strings.ToLower(fl.Text)
	for _, s := range []string{r.Source, r.Destination, r.SourcePod, r.DestPod, r.SourceIP, r.DestIP} {
		if strings.Contains(strings.ToLower(s), q) {
			return true
		}
	}
	for _, id := range []string{r.Source, r.Destination} {
		for _, l := range labels(id) {
			if strings.Contains(strings.ToLower(l), q) {
				return true
			}
		}
	}
	return false
}

func matchText(text string, f *flowpb.Flow, src, dst *node) bool {
	q := strings.ToLower(text)
	has := func(s string) bool { return s != "" && strings.Contains(strings.ToLower(s), q) }
	if has(src.id) || has(dst.id) || has(f.GetIP().GetSource()) || has(f.GetIP().GetDestination()) ||
		has(f.GetSource().GetPodName()) || has(f.GetDestination().GetPodName()) {
		return true
	}
	for _, l := range f.GetSource().GetLabels() {
		if has(l) {
			return true
		}
	}
	for _, l := range f.GetDestination().GetLabels() {
		if has(l) {
			return true
		}
	}
	return false
}

// bucket is a token bucket: rate tokens a second, up to burst.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newBucket(rate float64, burst int) bucket {
	return bucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

func (b *bucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

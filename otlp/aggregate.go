package otlp

import (
	"context"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
)

// side is one end of an edge: a workload (owner), else a pod, else an
// address (peers outside the cluster), as the UI's service map groups them.
type side struct {
	namespace, pod, owner, ownerType, addr string
	identity                               uint32
}

func sideOf(ep *flowpb.Endpoint, addr string) side {
	s := side{namespace: ep.GetNamespace(), identity: ep.GetIdentity()}
	switch {
	case len(ep.GetWorkloads()) > 0:
		s.owner, s.ownerType = ep.GetWorkloads()[0].GetName(), ep.GetWorkloads()[0].GetKind()
	case ep.GetPodName() != "":
		s.pod = ep.GetPodName()
	default:
		s.addr = addr
	}
	return s
}

// edgeKey is what an aggregated record is per: both sides, the service
// (destination port and transport), the outcome, and the L7 request kind.
type edgeKey struct {
	src, dst              side
	obsIsDst              bool
	dport                 uint32
	transport, netType    string
	verdict               flowpb.Verdict
	dropReason, direction string
	node                  string
	dns, method           string
	code                  uint32
}

type edgeCount struct {
	count uint64
	first uint64 // time of the first flow, unix ns
}

func edgeOf(f *flowpb.Flow) edgeKey {
	transport, _, dport := ports(f.GetL4())
	k := edgeKey{
		src:       sideOf(f.GetSource(), f.GetIP().GetSource()),
		dst:       sideOf(f.GetDestination(), f.GetIP().GetDestination()),
		obsIsDst:  observedEndpoint(f) == f.GetDestination(),
		dport:     dport,
		transport: transport,
		netType:   networkType(f.GetIP().GetIpVersion()),
		verdict:   f.GetVerdict(),
		node:      f.GetNodeName(),
	}
	if f.GetVerdict() == flowpb.Verdict_DROPPED {
		k.dropReason = dropReason(f, extensionFields(f)[contract.ExtKernelDrop].GetStructValue().GetFields())
	}
	if d := f.GetTrafficDirection(); d != flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN {
		k.direction = d.String()
	}
	if dns := f.GetL7().GetDns(); dns != nil {
		k.dns = dns.GetQuery()
	}
	if h := f.GetL7().GetHttp(); h != nil {
		k.method, k.code = h.GetMethod(), h.GetCode()
	}
	return k
}

// aggregate counts flows per edge and sends one record per edge every
// AggregationInterval. At most MaxEdges edges are kept per interval; the
// flows of further edges are dropped and counted.
func (e *Exporter) aggregate(ctx context.Context) {
	defer close(e.batches)
	edges := map[edgeKey]*edgeCount{}
	t := time.NewTicker(e.cfg.AggregationInterval)
	defer t.Stop()
	add := func(f *flowpb.Flow) {
		k := edgeOf(f)
		c := edges[k]
		if c == nil {
			if len(edges) >= e.cfg.MaxEdges {
				e.stats.drop(ReasonEdgeLimit, 1)
				return
			}
			c = &edgeCount{}
			if ft := f.GetTime(); ft != nil {
				c.first = uint64(ft.AsTime().UnixNano())
			}
			edges[k] = c
		}
		c.count++
	}
	for {
		select {
		case f := <-e.in:
			add(f)
		case now := <-t.C:
			e.flushEdges(edges, now)
			edges = map[edgeKey]*edgeCount{}
		case <-ctx.Done():
			for drained := false; !drained; {
				select {
				case f := <-e.in:
					add(f)
				default:
					drained = true
				}
			}
			e.flushEdges(edges, time.Now())
			return
		}
	}
}

func (e *Exporter) flushEdges(edges map[edgeKey]*edgeCount, now time.Time) {
	cur, n, flows := e.header.start(e.bufs.get()), 0, uint64(0)
	for k, c := range edges {
		cur = appendEdge(cur, k, c, now, e.cfg.AggregationInterval)
		n++
		flows += c.count
		if n >= e.cfg.BatchSize {
			e.batches <- e.newBatch(cur, n, flows)
			cur, n, flows = e.header.start(e.bufs.get()), 0, 0
		}
	}
	if n > 0 {
		e.batches <- e.newBatch(cur, n, flows)
	}
}

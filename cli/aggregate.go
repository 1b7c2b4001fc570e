package cli

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/observer/aggregate"
)

// checkAggregate rejects what --aggregate cannot be combined with: it
// covers a time range, so it needs one and takes no count of flows.
func (o *observeOptions) checkAggregate() error {
	if !o.aggregate {
		return nil
	}
	switch {
	case o.follow:
		return errors.New("--aggregate cannot be combined with --follow: it sums a finished range")
	case o.first > 0 || o.last > 0 || o.all:
		return errors.New("--aggregate cannot be combined with --first, --last or --all: it covers --since/--until")
	case o.since == "":
		return errors.New("--aggregate needs --since (and optionally --until)")
	}
	return nil
}

// newAggregatePrinter prints the edges as a table once all are in; notices
// go to errOut as for flows.
func newAggregatePrinter(out, errOut io.Writer, opts printOptions) *flowPrinter {
	p := newFlowPrinter(out, errOut, opts)
	p.agg = &aggregateTable{layout: opts.timeLayout}
	return p
}

// aggregateTable collects the edges the server sends.
type aggregateTable struct {
	layout string
	edges  []*aggregate.Edge
}

func (t *aggregateTable) add(f *flowpb.Flow) error {
	e, ok := aggregate.Of(f)
	if !ok {
		return errors.New("--aggregate: the server sent plain flows: it is not a loupe agent or loupe-relay (Hubble Relay does not pass the request on)")
	}
	t.edges = append(t.edges, e)
	return nil
}

func (t *aggregateTable) print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tDESTINATION\tPORT\tPROTOCOL\tVERDICT\tFLOWS\tFIRST\tLAST\tBYTES SENT\tBYTES RECEIVED\tL7 ERRORS\tL7 MEAN LATENCY")
	for _, e := range t.edges {
		l7err, l7lat := "-", "-"
		if e.L7Flows > 0 {
			l7err = fmt.Sprintf("%d/%d", e.L7Errors, e.L7Flows)
			if e.L7Responses > 0 {
				l7lat = (time.Duration(e.L7LatencySum / e.L7Responses)).String()
			}
		}
		sent, recv := "-", "-"
		if e.BytesSent+e.BytesReceived+e.Conns > 0 {
			sent, recv = fmt.Sprint(e.BytesSent), fmt.Sprint(e.BytesReceived)
		}
		port := "-"
		if e.Port != 0 {
			port = fmt.Sprint(e.Port)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Source, e.Destination, port, e.Protocol,
			e.Verdict, e.Flows, e.First.Local().Format(t.layout), e.Last.Local().Format(t.layout), sent, recv, l7err, l7lat)
	}
	return tw.Flush()
}

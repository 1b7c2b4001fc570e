package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
)

// observerHealthService is the gRPC health service name Hubble servers report.
const observerHealthService = "hubble.server.Observer"

type statusOptions struct {
	server serverOptions
	output string
}

// statusReport is what `loupe status -o json` prints.
type statusReport struct {
	Server  string                           `json:"server"`
	Health  string                           `json:"health"`
	Healthy bool                             `json:"healthy"`
	Status  *observerpb.ServerStatusResponse `json:"status,omitempty"`
	Nodes   []*observerpb.Node               `json:"nodes,omitempty"`
}

// NewStatusCommand returns `loupe status`.
func NewStatusCommand() *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the health of the flow observer and of every node",
		Long: `Status asks a Hubble API server (loupe-relay by default, a loupe-agent, or a
Cilium cluster's Hubble Relay) how it is doing: its health check, how many
flows it holds and sees, and which nodes it reaches.

It exits non-zero if the server is unreachable or not serving.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "text", "Output format: text or json")
	o.server.addFlags(cmd.Flags())
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

func (o *statusOptions) run(ctx context.Context, w io.Writer) error {
	if o.output != "text" && o.output != "json" && o.output != "compact" {
		return fmt.Errorf("unknown output format %q: want text or json", o.output)
	}
	conn, err := o.server.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	rep, err := o.collect(ctx, conn)
	if err != nil {
		return err
	}
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
	} else if err := writeStatusText(w, rep); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	if !rep.Healthy {
		return fmt.Errorf("%s is not serving (health: %s)", rep.Server, rep.Health)
	}
	return nil
}

func (o *statusOptions) collect(ctx context.Context, conn *grpc.ClientConn) (*statusReport, error) {
	rep := &statusReport{Server: o.server.address()}
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, o.server.requestTimeout)
	}

	cctx, cancel := call()
	hc, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{Service: observerHealthService})
	cancel()
	switch {
	case err == nil:
		rep.Health = hc.GetStatus().String()
		rep.Healthy = hc.GetStatus() == healthpb.HealthCheckResponse_SERVING
	case status.Code(err) == codes.Unimplemented:
		// Not every server runs the health service; ServerStatus answers too.
		rep.Health = "UNKNOWN (no health service)"
	default:
		return nil, o.server.explain(err, false)
	}
	if err == nil && !rep.Healthy {
		return rep, nil
	}

	cctx, cancel = call()
	ss, err := observerpb.NewObserverClient(conn).ServerStatus(cctx, &observerpb.ServerStatusRequest{})
	cancel()
	if err != nil {
		return nil, o.server.explain(err, true)
	}
	rep.Status = ss
	rep.Healthy = true

	cctx, cancel = call()
	nodes, err := observerpb.NewObserverClient(conn).GetNodes(cctx, &observerpb.GetNodesRequest{})
	cancel()
	switch {
	case err == nil:
		rep.Nodes = nodes.GetNodes()
		slices.SortFunc(rep.Nodes, func(a, b *observerpb.Node) int { return strings.Compare(a.GetName(), b.GetName()) })
	case status.Code(err) == codes.Unimplemented:
		// An agent of an older Hubble may not list nodes; status still stands.
	default:
		return nil, o.server.explain(err, true)
	}
	return rep, nil
}

// groupDigits formats 1234567 as 1,234,567.
func groupDigits(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func flowsPerSecond(ss *observerpb.ServerStatusResponse) string {
	if r := ss.GetFlowsRate(); r > 0 {
		return fmt.Sprintf("%.2f/s", r)
	}
	if up := time.Duration(ss.GetUptimeNs()).Seconds(); up > 0 {
		return fmt.Sprintf("%.2f/s", float64(ss.GetSeenFlows())/up)
	}
	return "N/A"
}

func nodeState(s relaypb.NodeState) string {
	switch s {
	case relaypb.NodeState_NODE_CONNECTED:
		return "Connected"
	case relaypb.NodeState_NODE_UNAVAILABLE:
		return "Unavailable"
	case relaypb.NodeState_NODE_GONE:
		return "Gone"
	case relaypb.NodeState_NODE_ERROR:
		return "Error"
	}
	return "Unknown"
}

func writeStatusText(w io.Writer, rep *statusReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	health := "healthy"
	if !rep.Healthy {
		health = "NOT HEALTHY"
	}
	fmt.Fprintf(tw, "Server:\t%s\t%s (%s)\n", clean(rep.Server), health, rep.Health)
	if ss := rep.Status; ss != nil {
		if v := ss.GetVersion(); v != "" {
			fmt.Fprintf(tw, "Version:\t%s\n", clean(v))
		}
		fmt.Fprintf(tw, "Uptime:\t%s\n", time.Duration(ss.GetUptimeNs()).Round(time.Second))
		ratio := ""
		if m := ss.GetMaxFlows(); m > 0 {
			ratio = fmt.Sprintf(" (%.1f%%)", float64(ss.GetNumFlows())/float64(m)*100)
		}
		fmt.Fprintf(tw, "Flows:\t%s of %s buffered%s, %s seen, %s\n",
			groupDigits(ss.GetNumFlows()), groupDigits(ss.GetMaxFlows()), ratio,
			groupDigits(ss.GetSeenFlows()), flowsPerSecond(ss))
		if c := ss.GetNumConnectedNodes(); c != nil {
			total := c.GetValue() + ss.GetNumUnavailableNodes().GetValue()
			line := fmt.Sprintf("%d of %d connected", c.GetValue(), total)
			if u := ss.GetNumUnavailableNodes().GetValue(); u > 0 {
				names := slices.Clone(ss.GetUnavailableNodes())
				slices.Sort(names)
				if extra := int(u) - len(names); extra > 0 {
					names = append(names, fmt.Sprintf("and %d more", extra))
				}
				line += "; UNAVAILABLE: " + clean(strings.Join(names, ", "))
			}
			fmt.Fprintf(tw, "Nodes:\t%s\n", line)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Nodes) > 0 {
		fmt.Fprintln(w)
		return writeNodeTable(w, rep.Nodes, true)
	}
	return nil
}

// writeNodeTable prints one line per node; wide adds version, address and TLS.
func writeNodeTable(w io.Writer, nodes []*observerpb.Node, wide bool) error {
	tw := tabwriter.NewWriter(w, 2, 0, 3, ' ', 0)
	fmt.Fprint(tw, "NAME\tSTATUS\tAGE\tFLOWS/S\tCURRENT/MAX-FLOWS")
	if wide {
		fmt.Fprint(tw, "\tVERSION\tADDRESS\tTLS")
	}
	fmt.Fprintln(tw)
	for _, n := range nodes {
		age, rate := "N/A", "N/A"
		if up := time.Duration(n.GetUptimeNs()).Round(time.Second); up > 0 {
			age = up.String()
			rate = fmt.Sprintf("%.2f", float64(n.GetSeenFlows())/up.Seconds())
		}
		fill := "N/A"
		if m := n.GetMaxFlows(); m > 0 {
			fill = fmt.Sprintf("%d/%d (%6.2f%%)", n.GetNumFlows(), m, float64(n.GetNumFlows())/float64(m)*100)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", clean(n.GetName()), nodeState(n.GetState()), age, rate, fill)
		if wide {
			version, tlsState := "N/A", "N/A"
			if v := n.GetVersion(); v != "" {
				version = clean(v)
			}
			if t := n.GetTls(); t != nil {
				tlsState = "Disabled"
				if t.GetEnabled() {
					tlsState = "Enabled"
				}
			}
			fmt.Fprintf(tw, "\t%s\t%s\t%s", version, clean(n.GetAddress()), tlsState)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

package cli

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/policy"
)

// Exit codes of `loupe policy verify` and `loupe policy check`.
const (
	exitNoChange = 0
	exitChange   = 1 // verify: traffic would change; check: disagreements
	exitBadInput = 2 // bad input, or the flows could not be read
	// exitCannotJudge: the flows hold nothing to judge. It is exitBadInput's
	// code: either way a script must not read "no change" into it.
	exitCannotJudge = exitBadInput
)

// defaultManifestsDir is the default lab's manifests folder.
func defaultManifestsDir() string {
	dir := os.Getenv("LOUPE_LAB_DIR")
	if dir == "" {
		dir = "/run/loupe-lab"
	}
	return filepath.Join(dir, "manifests")
}

// NewPolicyCommand returns `loupe policy`: explain, verify and check
// NetworkPolicy decisions.
func NewPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Explain, verify and check Kubernetes NetworkPolicy decisions",
		Long: `policy answers questions about Kubernetes NetworkPolicy with loupe's model of
its exact upstream semantics, reading the cluster's objects from a manifests
folder (the lab's by default, or --manifests-dir).

  explain  why a connection is allowed or denied
  verify   which recorded connections a new set of policies would cut or open
  check    whether the datapath's policy verdicts agree with the model`,
	}
	cmd.AddCommand(newPolicyExplainCommand(), newPolicyVerifyCommand(os.Exit), newPolicyCheckCommand(os.Exit))
	return cmd
}

// loadManifests reads every object file of a manifests folder.
func loadManifests(dir string) (*metadata.Snapshot, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w (is the lab up? else give --manifests-dir)", err)
	}
	snap := &metadata.Snapshot{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		if ext := filepath.Ext(name); ext != ".yaml" && ext != ".yml" && ext != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read manifests: %w", err)
		}
		if _, err := metadata.ParseManifests(b, snap); err != nil {
			return nil, fmt.Errorf("read manifests: %s: %w", name, err)
		}
	}
	if g, err := os.ReadFile(filepath.Join(dir, metadata.GenerationFile)); err == nil {
		snap.Generation = strings.TrimSpace(string(g))
	}
	return snap, nil
}

// parseEndpoint reads NS/POD or an IP address.
func parseEndpoint(m *policy.Model, flag, s string) (policy.Endpoint, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return m.AddrEndpoint(a), nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" {
		return policy.Endpoint{}, fmt.Errorf("--%s %q: want NAMESPACE/POD or an IP address", flag, s)
	}
	e, err := m.PodEndpoint(ns, name)
	if err != nil {
		return e, fmt.Errorf("--%s: %w", flag, err)
	}
	return e, nil
}

func newPolicyExplainCommand() *cobra.Command {
	var (
		from, to, proto, dir, output string
		port                         int
	)
	cmd := &cobra.Command{
		Use:   "explain --from NS/POD --to NS/POD|svc/NS/NAME --port P [--protocol TCP]",
		Short: "Say whether a connection is allowed and which policies decide it",
		Example: `  loupe policy explain --from y/b --to x/a --port 80 --protocol TCP
  loupe policy explain --from x/a --to 192.0.2.10 --port 443 -o json
  loupe policy explain --from shop/client --to svc/shop/web --port 80`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := policy.ParseProto(proto)
			if err != nil {
				return fmt.Errorf("--protocol: %w", err)
			}
			if port < 1 || port > 65535 {
				return fmt.Errorf("--port %d: want 1-65535", port)
			}
			if output != "" && output != "text" && output != "json" {
				return fmt.Errorf("--output %q: want text or json", output)
			}
			snap, err := loadManifests(dir)
			if err != nil {
				return err
			}
			m := policy.NewModel(snap)
			src, err := parseEndpoint(m, "from", from)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, e := range m.Errors {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: invalid policy, enforced fail-closed (it allows nothing):", e)
			}
			// The JSON is {from, to, port, protocol} and the decision's fields.
			type head struct {
				From     string `json:"from"`
				To       string `json:"to"`
				Port     int    `json:"port"`
				Protocol string `json:"protocol"`
			}
			if strings.HasPrefix(to, "svc/") {
				sd, err := explainService(m, src, to, port, p)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(w, struct {
						head
						serviceDecision
					}{head{src.String(), to, port, p.String()}, sd})
				}
				writeServiceDecision(w, src, to, port, p, sd)
				return nil
			}
			dst, err := parseEndpoint(m, "to", to)
			if err != nil {
				return err
			}
			d := m.Allowed(src, dst, uint16(port), p)
			if output == "json" {
				return writeJSON(w, struct {
					head
					policy.Decision
				}{head{src.String(), dst.String(), port, p.String()}, d})
			}
			writeDecision(w, src, dst, port, p, d)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "source: NAMESPACE/POD or an IP address")
	f.StringVar(&to, "to", "", "destination: NAMESPACE/POD, an IP address, or a Service svc/NAMESPACE/NAME (judged against each ready backend)")
	f.IntVar(&port, "port", 0, "destination port (with svc/: the Service port)")
	f.StringVar(&proto, "protocol", "TCP", "TCP, UDP or SCTP")
	f.StringVar(&dir, "manifests-dir", defaultManifestsDir(), "folder of Kubernetes manifests (the lab's by default; $LOUPE_LAB_DIR/manifests)")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	_ = cmd.MarkFlagRequired("port")
	return cmd
}

func writeDecision(w io.Writer, src, dst policy.Endpoint, port int, p policy.Proto, d policy.Decision) {
	verdict := "DENIED"
	if d.Allowed {
		verdict = "ALLOWED"
	}
	fmt.Fprintf(w, "%s -> %s %d/%s: %s\n", src, dst, port, p, verdict)
	side := func(name string, who policy.Endpoint, s policy.Side) {
		switch {
		case s.Note != "":
			fmt.Fprintf(w, "  %-7s (%s): allowed: %s\n", name, who, s.Note)
		case !s.Enforced:
			fmt.Fprintf(w, "  %-7s (%s): allowed: no policy selects it for %s\n", name, who, name)
		case s.Allowed:
			var rules []string
			for _, r := range s.AllowedBy {
				rules = append(rules, r.Policy.String()+" "+r.Rule)
			}
			fmt.Fprintf(w, "  %-7s (%s): allowed by %s (isolated by %s)\n", name, who, strings.Join(rules, ", "), refNames(s.IsolatedBy))
		default:
			fmt.Fprintf(w, "  %-7s (%s): denied: no rule allows it: default deny from %s\n", name, who, refNames(s.IsolatedBy))
		}
	}
	side("egress", src, d.Egress)
	side("ingress", dst, d.Ingress)
}

func refNames(rs []policy.Ref) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

// flowRecord is what verify and check judge: the flows read, and what says
// flows are missing from them: lost-events records, and nodes a relay
// could not read.
type flowRecord struct {
	flows       []*flowpb.Flow
	lost        lostSummary
	unavailable []string // sorted node names
}

// lostSummary adds up lost-events records. Each lost event is a flow (or a
// datapath event that would have become one) that the server dropped.
type lostSummary struct {
	Records  int               `json:"records"`
	Events   uint64            `json:"events"`
	BySource map[string]uint64 `json:"by_source,omitempty"`
}

// add keeps a response's flow, lost events, or the nodes whose flows are
// missing: a relay's NODE_UNAVAILABLE and NODE_ERROR. Nodes that connect
// or leave are notices.
func (r *flowRecord) add(res *observerpb.GetFlowsResponse) {
	switch {
	case res.GetFlow() != nil:
		r.flows = append(r.flows, res.GetFlow())
	case res.GetLostEvents() != nil:
		l := res.GetLostEvents()
		r.lost.Records++
		r.lost.Events += l.GetNumEventsLost()
		if r.lost.BySource == nil {
			r.lost.BySource = map[string]uint64{}
		}
		r.lost.BySource[l.GetSource().String()] += l.GetNumEventsLost()
	case res.GetNodeStatus() != nil:
		st := res.GetNodeStatus().GetStateChange()
		if st != relaypb.NodeState_NODE_UNAVAILABLE && st != relaypb.NodeState_NODE_ERROR {
			return
		}
		names := res.GetNodeStatus().GetNodeNames()
		if len(names) == 0 {
			names = []string{"(unnamed)"} // still a hole in the record
		}
		for _, n := range names {
			if i, found := slices.BinarySearch(r.unavailable, n); !found {
				r.unavailable = slices.Insert(r.unavailable, i, n)
			}
		}
	}
}

// complete says whether no flow is known to be missing from the record.
func (r *flowRecord) complete() bool { return r.lost.Records == 0 && len(r.unavailable) == 0 }

// writeMissing prints what is missing from the record, one line each.
func (r *flowRecord) writeMissing(w io.Writer) {
	if r.lost.Records > 0 {
		fmt.Fprintf(w, "lost events: %s: the flows in them were not judged\n", r.lost)
	}
	if len(r.unavailable) > 0 {
		fmt.Fprintf(w, "unavailable nodes: %s: their flows were not judged\n", r.unavailableString())
	}
}

func (r *flowRecord) unavailableString() string {
	return plural(len(r.unavailable), "node") + " (" + strings.Join(r.unavailable, ", ") + ")"
}

func (l lostSummary) String() string {
	var src []string
	for _, k := range slices.Sorted(maps.Keys(l.BySource)) {
		src = append(src, fmt.Sprintf("%s %d", k, l.BySource[k]))
	}
	return fmt.Sprintf("%d events lost in %s (%s)", l.Events, plural(l.Records, "lost-events record"), strings.Join(src, ", "))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// fetchFlows reads the recorded flows since a time (no follow).
func fetchFlows(cmd *cobra.Command, so *serverOptions, since string) (*flowRecord, error) {
	t, err := parseTime(since, time.Now())
	if err != nil {
		return nil, fmt.Errorf("--since: %w", err)
	}
	conn, err := so.dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(cmd.Context(), &observerpb.GetFlowsRequest{Since: timestamppb.New(t)})
	if err != nil {
		return nil, so.explain(err, false)
	}
	rec := &flowRecord{}
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return rec, nil
		}
		if err != nil {
			return nil, so.explain(err, len(rec.flows) > 0)
		}
		rec.add(res)
	}
}

// nothingToJudge says why a record holds nothing that verify or check can
// judge (none of its flows is what), since passing over nothing would pass
// any policy.
func nothingToJudge(rec *flowRecord, where, what string) error {
	lost := ""
	if rec.lost.Records > 0 {
		lost = "; " + rec.lost.String()
	}
	if len(rec.unavailable) > 0 {
		lost += "; unavailable: " + rec.unavailableString()
	}
	if len(rec.flows) == 0 {
		return fmt.Errorf("nothing to judge: no flows %s%s", where, lost)
	}
	return fmt.Errorf("nothing to judge: none of the %d flows %s %s%s", len(rec.flows), where, what, lost)
}

// fail prints an error and exits with code.
func fail(cmd *cobra.Command, exit func(int), code int, err error) error {
	fmt.Fprintln(cmd.ErrOrStderr(), "Error:", err)
	exit(code)
	return nil
}

type verifyChange struct {
	Verdict     string       `json:"verdict"` // "denied" or "allowed"
	From        string       `json:"from"`
	To          string       `json:"to"`
	Port        uint16       `json:"port"`
	Protocol    string       `json:"protocol"`
	Connections int          `json:"connections"`
	Flows       int          `json:"flows"`
	Policies    []policy.Ref `json:"policies"`
	Reason      string       `json:"reason"`
}

func newPolicyVerifyCommand(exit func(int)) *cobra.Command {
	var (
		so                 serverOptions
		files              []string
		since, dir, output string
		flowsFile, to      string
		svcPort            int
	)
	cmd := &cobra.Command{
		Use:   "verify -f NEW.yaml [--since 1h] [--server ADDR]",
		Short: "Report the recorded connections that new policies would deny or allow",
		Long: `verify reads the flows recorded since --since from the Observer API, reduces them to
distinct connections (source, destination, port, protocol), and evaluates each
under the current policies and under the current plus the new ones (a new
policy replaces the one of the same namespace and name). It prints every
connection whose verdict would change, with how many connections were seen
and the policies that decide the new verdict.

--flows-file reads saved flows instead: loupe observe -o json output, one
GetFlowsResponse per line (flow, lost_events or node_status), or a bare Flow.
A line that is none of these, or a flow with no fields, is refused with its
line number.

Flows can be missing from the record: lost events (a ring buffer overflowed)
are reported with how many events they hold, and so are the nodes a relay
reports unavailable (loupe observe keeps node status on stderr, so a flows
file holds it only if saved with 2>&1). A change found stands; "no change"
over a record with flows missing is incomplete, and exits 2.

Exit status:
  0  no change
  1  traffic would change (even if flows are missing)
  2  bad input or no flows readable; nothing to judge: no flows, or none
     that opens a connection; or no change found but flows are missing
     (lost events, unavailable nodes): the verdict is incomplete`,
		Example: `  loupe policy verify -f deny-all.yaml --since 1h --server localhost:4245
  loupe policy verify -f new.yaml -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fail(cmd, exit, exitBadInput, fmt.Errorf("--output %q: want text or json", output))
			}
			if len(files) == 0 {
				return fail(cmd, exit, exitBadInput, errors.New("-f: give the file of new policies"))
			}
			var proposed []*networkingv1.NetworkPolicy
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					return fail(cmd, exit, exitBadInput, err)
				}
				ps, err := policy.ParsePolicies(b, f)
				if err != nil {
					return fail(cmd, exit, exitBadInput, err)
				}
				proposed = append(proposed, ps...)
			}
			snap, err := loadManifests(dir)
			if err != nil {
				return fail(cmd, exit, exitBadInput, err)
			}
			var rec *flowRecord
			if flowsFile != "" {
				rec, err = readFlowsFile(flowsFile)
			} else {
				rec, err = fetchFlows(cmd, &so, since)
			}
			if err != nil {
				return fail(cmd, exit, exitBadInput, err)
			}
			flows := rec.flows
			conns := policy.Connections(flows)
			if to != "" {
				if conns, err = serviceConns(policy.NewModel(snap), to, svcPort, conns); err != nil {
					return fail(cmd, exit, exitBadInput, err)
				}
			}
			if len(conns) == 0 {
				where := "on the server since --since " + since
				if flowsFile != "" {
					where = "in " + flowsFile
				}
				return fail(cmd, exit, exitCannotJudge, nothingToJudge(rec, where,
					"opens a connection (the first packet of TCP, UDP or SCTP, with IP addresses and a destination port)"))
			}
			changes := policy.Verify(snap, proposed, conns)
			complete := rec.complete()
			w := cmd.OutOrStdout()
			if output == "json" {
				out := struct {
					Connections int            `json:"connections"`
					Flows       int            `json:"flows"`
					Complete    bool           `json:"complete"`
					LostEvents  lostSummary    `json:"lost_events"`
					Unavailable []string       `json:"unavailable_nodes"`
					Changes     []verifyChange `json:"changes"`
				}{Connections: len(conns), Flows: len(flows), Complete: complete, LostEvents: rec.lost,
					Unavailable: append([]string{}, rec.unavailable...), Changes: []verifyChange{}}
				for _, c := range changes {
					v := verifyChange{Verdict: "denied", From: c.From, To: c.To, Port: c.Port, Protocol: c.Proto.String(),
						Connections: c.Connections, Flows: c.Flows, Policies: c.DecidedBy, Reason: c.After.Reason}
					if c.NowAllowed {
						v.Verdict = "allowed"
					}
					out.Changes = append(out.Changes, v)
				}
				if err := writeJSON(w, out); err != nil {
					return err
				}
			} else {
				switch {
				case len(changes) > 0:
					fmt.Fprintf(w, "%d of %d distinct connections (%d flows) would change:\n", len(changes), len(conns), len(flows))
					for _, c := range changes {
						verb := "newly DENIED "
						if c.NowAllowed {
							verb = "newly allowed"
						}
						fmt.Fprintf(w, "%s %s -> %s:%d/%s  %d connections  by %s\n", verb, c.From, c.To, c.Port, c.Proto, c.Connections, refNames(c.DecidedBy))
					}
				case complete:
					fmt.Fprintf(w, "no change: %d distinct connections (%d flows) keep their verdict\n", len(conns), len(flows))
				default:
					fmt.Fprintf(w, "incomplete: %d distinct connections (%d flows) keep their verdict, but flows are missing\n", len(conns), len(flows))
				}
				rec.writeMissing(w)
			}
			// A change found is real whatever is missing; "no change" is
			// only as good as the record it was judged on.
			switch {
			case len(changes) > 0:
				exit(exitChange)
			case !complete:
				exit(exitCannotJudge)
			}
			return nil
		},
	}
	so.addFlags(cmd.Flags())
	f := cmd.Flags()
	f.StringSliceVarP(&files, "file", "f", nil, "file(s) of NetworkPolicy objects to verify")
	f.StringVar(&since, "since", "1h", "recorded flows since: a duration ago (30s, 5m, 1h) or a time")
	f.StringVar(&dir, "manifests-dir", defaultManifestsDir(), "folder of Kubernetes manifests with the current objects (the lab's by default)")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	f.StringVar(&flowsFile, "flows-file", "", "read flows from this file (loupe observe -o json output) instead of the server")
	f.StringVar(&to, "to", "", "judge only the connections to a Service, svc/NAMESPACE/NAME (to its backends; with --port)")
	f.IntVar(&svcPort, "port", 0, "with --to: the Service port")
	return cmd
}

func newPolicyCheckCommand(exit func(int)) *cobra.Command {
	var (
		so              serverOptions
		since, dir, out string
	)
	cmd := &cobra.Command{
		Use:   "check [--since 5m] [--server ADDR]",
		Short: "Compare the datapath's policy verdicts with the model; any difference is a loupe bug",
		Long: `check reads the policy-verdict flows (allowed new connections) and the policy drops
recorded since --since, and evaluates each against the model of the current
manifests. Every disagreement is a loupe bug and is reported as one. Flows from
before the last policy change may disagree legitimately: keep --since after it.

A NetworkPolicy of the manifests that the API server would refuse is named
too: loupe enforces it fail-closed (the pods it selects are isolated and it
allows nothing), not as written.

Each node's policy map is sized as its agent compiles the manifests: a node
whose entries do not fit refuses the whole policy set and keeps enforcing
the last one that fit, and check names it ("node N refuses the policy: ...").
The JSON output's policy_map lists every node's entries, capacity and
kernel memory (memory_bytes, an upper bound).

Lost events (a ring buffer overflowed) are reported with how many events
they hold, and so are the nodes a relay reports unavailable, as by verify: a
disagreement found stands, but agreement over a record with flows missing is
incomplete, and exits 2.

Exit status:
  0  agreement
  1  disagreements, invalid policies or a node that refuses the policy
     (even if flows are missing)
  2  bad input or no flows readable; nothing to judge: no policy verdict or
     policy drop since --since; or no disagreement found but flows are
     missing (lost events, unavailable nodes): the check is incomplete`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out != "text" && out != "json" {
				return fail(cmd, exit, exitBadInput, fmt.Errorf("--output %q: want text or json", out))
			}
			snap, err := loadManifests(dir)
			if err != nil {
				return fail(cmd, exit, exitBadInput, err)
			}
			// Named before the flows are fetched, so they are reported
			// even when the flows cannot be read.
			invalid := invalidPolicies(snap)
			for _, e := range invalid {
				fmt.Fprintf(cmd.ErrOrStderr(), "invalid policy %s/%s, enforced fail-closed: %s\n", e.Namespace, e.Name, e.Error)
			}
			fits, err := nodeFits(snap)
			if err != nil {
				return fail(cmd, exit, exitBadInput, err)
			}
			refused := 0
			for _, f := range fits {
				if !f.Fits {
					refused++
					fmt.Fprintln(cmd.ErrOrStderr(), refusedLine(f))
				}
			}
			rec, err := fetchFlows(cmd, &so, since)
			if err != nil {
				return fail(cmd, exit, exitBadInput, err)
			}
			n, dis := policy.Check(snap, rec.flows)
			if n == 0 && len(invalid) == 0 && refused == 0 {
				// "0 disagreements" over no verdict would vouch for nothing;
				// invalid policies are a finding of their own.
				return fail(cmd, exit, exitCannotJudge, nothingToJudge(rec, "on the server since --since "+since,
					"is a policy verdict or a policy drop"))
			}
			complete := rec.complete()
			w := cmd.OutOrStdout()
			if out == "json" {
				if dis == nil {
					dis = []policy.Disagreement{}
				}
				if err := writeJSON(w, struct {
					Checked         int                   `json:"checked"`
					Complete        bool                  `json:"complete"`
					LostEvents      lostSummary           `json:"lost_events"`
					Unavailable     []string              `json:"unavailable_nodes"`
					Disagreements   []policy.Disagreement `json:"disagreements"`
					InvalidPolicies []invalidPolicy       `json:"invalid_policies"`
					PolicyMap       []policy.NodeFit      `json:"policy_map"`
				}{n, complete, rec.lost, append([]string{}, rec.unavailable...), dis, invalid, fits}); err != nil {
					return err
				}
			} else {
				for _, d := range dis {
					fmt.Fprintf(w, "loupe bug: %s %s: %s\n", d.Flow, d.Side, d.Problem)
				}
				for _, f := range fits {
					if !f.Fits {
						fmt.Fprintln(w, refusedLine(f))
					}
				}
				if len(dis) == 0 && len(invalid) == 0 && refused == 0 && !complete {
					fmt.Fprintf(w, "incomplete: %d policy verdicts checked, 0 disagreements, but flows are missing\n", n)
				} else {
					fmt.Fprintf(w, "%d policy verdicts checked, %d disagreements", n, len(dis))
					if len(invalid) > 0 {
						fmt.Fprintf(w, ", %d invalid policies", len(invalid))
					}
					if refused > 0 {
						fmt.Fprintf(w, ", %d nodes refuse the policy", refused)
					}
					fmt.Fprintln(w)
				}

				rec.writeMissing(w)
			}
			switch {
			case len(dis) > 0 || len(invalid) > 0 || refused > 0:
				exit(exitChange)
			case !complete:
				exit(exitCannotJudge)
			}
			return nil
		},
	}
	so.addFlags(cmd.Flags())
	cmd.Flags().StringVar(&since, "since", "5m", "verdicts since: a duration ago or a time")
	cmd.Flags().StringVar(&dir, "manifests-dir", defaultManifestsDir(), "folder of Kubernetes manifests (the lab's by default)")
	cmd.Flags().StringVarP(&out, "output", "o", "text", "text or json")
	return cmd
}

// policyMapCapacity is the agents' policy map capacity; tests lower it.
var policyMapCapacity = datapath.PolicyMapCapacity

// nodeFits sizes every node's policy map for snap.
func nodeFits(snap *metadata.Snapshot) ([]policy.NodeFit, error) {
	capacity, err := policyMapCapacity()
	if err != nil {
		return nil, err
	}
	return policy.NodeFits(snap, capacity), nil
}

func refusedLine(f policy.NodeFit) string {
	return fmt.Sprintf("node %s refuses the policy: its %d pods need %d policy map entries (%.1f MiB of kernel memory), the map holds %d; it keeps enforcing the last policy that fit",
		f.Node, f.Pods, f.Entries, float64(f.MemoryBytes)/(1<<20), f.Capacity)
}

// invalidPolicy is a NetworkPolicy of the manifests that fails validation.
type invalidPolicy struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Error     string `json:"error"`
}

// invalidPolicies lists the policies of snap the API server would refuse.
func invalidPolicies(snap *metadata.Snapshot) []invalidPolicy {
	out := []invalidPolicy{}
	for _, p := range policy.NewModel(snap).Policies {
		if p.Invalid != nil {
			msg := p.Invalid.Error()
			if ie, ok := policy.AsInvalid(p.Invalid); ok {
				msg = ie.Errors.ToAggregate().Error() // the name is printed apart
			}
			out = append(out, invalidPolicy{p.Ref.Namespace, p.Ref.Name, msg})
		}
	}
	return out
}

// readFlowsFile reads `loupe observe -o json` output: one GetFlowsResponse
// per line (a flow, lost events or node status), or a bare Flow as older
// hubble versions printed. Any other line is refused with its number: read
// as a flow that opens no connection, a broken line would pass unjudged.
func readFlowsFile(path string) (*flowRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read flows: %w", err)
	}
	rec := &flowRecord{}
	opts := protojson.UnmarshalOptions{DiscardUnknown: true} // fields of newer servers
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		where := fmt.Sprintf("%s: line %d", path, i+1)
		// A bare Flow also decodes as a GetFlowsResponse (time and node_name
		// are shared, the rest is unknown), so this error is the line's,
		// e.g. {"flow": 5}, which a bare-Flow decoder would skip as unknown.
		var res observerpb.GetFlowsResponse
		if err := opts.Unmarshal([]byte(line), &res); err != nil {
			return nil, fmt.Errorf("%s: not a flow record (want one GetFlowsResponse per line, as loupe observe -o json writes): %w", where, err)
		}
		if res.GetResponseTypes() == nil {
			f := &flowpb.Flow{}
			if err := opts.Unmarshal([]byte(line), f); err != nil {
				return nil, fmt.Errorf("%s: not a flow record: %w", where, err)
			}
			res.ResponseTypes = &observerpb.GetFlowsResponse_Flow{Flow: f}
		}
		// Unknown fields are discarded, so an empty flow ({"flow":{}},
		// {"flow":{"typo":1}}, {}) holds nothing that could be judged.
		if f := res.GetFlow(); f != nil && proto.Size(f) == 0 {
			return nil, fmt.Errorf("%s: a flow with no flow fields (want flow, lost_events or node_status records)", where)
		}
		rec.add(&res)
	}
	return rec, nil
}

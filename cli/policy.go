package cli

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/policy"
)

// Exit codes of `loupe policy verify` and `loupe policy check`.
const (
	exitNoChange = 0
	exitChange   = 1 // verify: traffic would change; check: disagreements
	exitBadInput = 2 // bad input, or the flows could not be read
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
		Use:   "explain --from NS/POD --to NS/POD --port P [--protocol TCP]",
		Short: "Say whether a connection is allowed and which policies decide it",
		Example: `  loupe policy explain --from y/b --to x/a --port 80 --protocol TCP
  loupe policy explain --from x/a --to 192.0.2.10 --port 443 -o json`,
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
			dst, err := parseEndpoint(m, "to", to)
			if err != nil {
				return err
			}
			d := m.Allowed(src, dst, uint16(port), p)
			w := cmd.OutOrStdout()
			for _, e := range m.Errors {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: invalid policy, enforced fail-closed (it allows nothing):", e)
			}
			if output == "json" {
				return writeJSON(w, struct {
					From     string `json:"from"`
					To       string `json:"to"`
					Port     int    `json:"port"`
					Protocol string `json:"protocol"`
					policy.Decision
				}{src.String(), dst.String(), port, p.String(), d})
			}
			writeDecision(w, src, dst, port, p, d)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "source: NAMESPACE/POD or an IP address")
	f.StringVar(&to, "to", "", "destination: NAMESPACE/POD or an IP address")
	f.IntVar(&port, "port", 0, "destination port")
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

// fetchFlows reads the recorded flows since a time (no follow).
func fetchFlows(cmd *cobra.Command, so *serverOptions, since string) ([]*flowpb.Flow, error) {
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
	var out []*flowpb.Flow
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, so.explain(err, len(out) > 0)
		}
		if f := res.GetFlow(); f != nil {
			out = append(out, f)
		}
	}
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
		flowsFile          string
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

Exit status: 0 no change, 1 traffic would change, 2 bad input or no flows readable.`,
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
			var flows []*flowpb.Flow
			if flowsFile != "" {
				flows, err = readFlowsFile(flowsFile)
			} else {
				flows, err = fetchFlows(cmd, &so, since)
			}
			if err != nil {
				return fail(cmd, exit, exitBadInput, err)
			}
			conns := policy.Connections(flows)
			changes := policy.Verify(snap, proposed, conns)
			w := cmd.OutOrStdout()
			if output == "json" {
				out := struct {
					Connections int            `json:"connections"`
					Flows       int            `json:"flows"`
					Changes     []verifyChange `json:"changes"`
				}{Connections: len(conns), Flows: len(flows), Changes: []verifyChange{}}
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
				if len(changes) == 0 {
					fmt.Fprintf(w, "no change: %d distinct connections (%d flows) keep their verdict\n", len(conns), len(flows))
				} else {
					fmt.Fprintf(w, "%d of %d distinct connections (%d flows) would change:\n", len(changes), len(conns), len(flows))
					for _, c := range changes {
						verb := "newly DENIED "
						if c.NowAllowed {
							verb = "newly allowed"
						}
						fmt.Fprintf(w, "%s %s -> %s:%d/%s  %d connections  by %s\n", verb, c.From, c.To, c.Port, c.Proto, c.Connections, refNames(c.DecidedBy))
					}
				}
			}
			if len(changes) > 0 {
				exit(exitChange)
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

Exit status: 0 agreement, 1 disagreements or invalid policies, 2 bad input or
no flows readable.`,
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
			flows, err := fetchFlows(cmd, &so, since)
			if err != nil {
				return fail(cmd, exit, exitBadInput, err)
			}
			n, dis := policy.Check(snap, flows)
			w := cmd.OutOrStdout()
			if out == "json" {
				if dis == nil {
					dis = []policy.Disagreement{}
				}
				if err := writeJSON(w, struct {
					Checked         int                   `json:"checked"`
					Disagreements   []policy.Disagreement `json:"disagreements"`
					InvalidPolicies []invalidPolicy       `json:"invalid_policies"`
				}{n, dis, invalid}); err != nil {
					return err
				}
			} else {
				for _, d := range dis {
					fmt.Fprintf(w, "loupe bug: %s %s: %s\n", d.Flow, d.Side, d.Problem)
				}
				fmt.Fprintf(w, "%d policy verdicts checked, %d disagreements, %d invalid policies\n", n, len(dis), len(invalid))
			}
			if len(dis) > 0 || len(invalid) > 0 {
				exit(exitChange)
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
// (or bare Flow) JSON object per line.
func readFlowsFile(path string) ([]*flowpb.Flow, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*flowpb.Flow
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var res observerpb.GetFlowsResponse
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(line), &res); err == nil && res.GetFlow() != nil {
			out = append(out, res.GetFlow())
			continue
		}
		var f flowpb.Flow
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(line), &f); err != nil {
			return nil, fmt.Errorf("%s: line %d: not a flow: %w", path, i+1, err)
		}
		out = append(out, &f)
	}
	return out, nil
}

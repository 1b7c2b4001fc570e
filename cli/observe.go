// Package cli implements loupe's commands that talk to a Hubble API server:
// observe, status and list. They use only the Hubble Observer API, so they
// work against loupe-relay, a single loupe-agent, and a Cilium cluster's
// Hubble Relay alike.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/observer/aggregate"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
)

// defaultLast is how many flows a plain `loupe observe` prints (as hubble).
const defaultLast = 20

// defaultFieldMask lists the flow fields the text formats print; the server
// sends only these unless --use-default-field-masks=false or -o json.
var defaultFieldMask = []string{
	"time", "verdict", "ethernet", "IP", "l4",
	"source.identity", "source.namespace", "source.pod_name",
	"destination.identity", "destination.namespace", "destination.pod_name",
	"Type", "node_name", "l7", "event_type", "source_service", "destination_service",
	"is_reply", "Summary", "ip_trace_id", "traffic_direction", "policy_match_type",
	"ingress_allowed_by", "ingress_denied_by", "egress_allowed_by", "egress_denied_by",
	"source_names", "destination_names", "auth_type", "debug_capture_point",
	"extensions", // kernel drops' and TCP events' facts (contract/kerneldrop.go, contract/tcp.go)
}

type observeOptions struct {
	server  serverOptions
	filters filterBuilder

	last, first  uint64
	all, follow  bool
	since, until string
	aggregate    bool

	output           string
	timeFormat       string
	color            string
	printNodeName    bool
	printPolicyNames bool
	numeric          bool
	ipTranslation    bool

	kernel kernelDropFilter
	tcp    tcpEventFilter

	fieldMask        []string
	defaultFieldMask bool
	allowlist        []string
	denylist         []string
	printRawFilters  bool
	silent           bool
	debug            bool

	now func() time.Time
}

const observeLong = `Observe shows the flows a Hubble API server holds and, with --follow, the
flows it sees from now on.

loupe talks only the Hubble API (observer.Observer), so it works against
loupe-relay (the default, localhost:4245), a single loupe-agent (:4244), and
the Hubble Relay of a Cilium cluster alike.

Filters: a flow must match every filter flag given, and any one of the values
of a flag given several times. --not before a filter flag hides the flows that
match it instead. Undirected flags (--pod, --ip, --label, --port, ...) match
either end of a flow; their --from-/--to- forms match one end.

Stdout carries the flows. With -o json it also carries the lost_events
records, as hubble's does, so that a saved file (for loupe policy verify
--flows-file) says where flows are missing. The other notices (unavailable
nodes, and lost events in the text formats) go to stderr; loupe exits 0 even
when some nodes could not be reached.`

const observeExample = `  loupe observe                                  # the last 20 flows of every node
  loupe observe -f -n shop                        # follow flows from or to namespace shop
  loupe observe --verdict DROPPED --last 100      # recent drops
  loupe observe --from-pod shop/web --to-port 5432 -o json
  loupe observe --type trace:to-endpoint --not --protocol udp
  loupe observe --since 5m --print-policy-names   # with the policies that allowed or denied
  loupe observe --server unix:///run/loupe/observer.sock --all`

// NewObserveCommand returns `loupe observe`.
func NewObserveCommand() *cobra.Command {
	return newObserveCommand(time.Now)
}

// newObserveCommand takes the clock that relative --since/--until count from.
func newObserveCommand(now func() time.Time) *cobra.Command {
	o := &observeOptions{now: now}
	cmd := &cobra.Command{
		Use:     "observe [flags]",
		Short:   "Show network flows, as `hubble observe` does",
		Long:    observeLong,
		Example: observeExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd)
		},
	}

	filters := pflag.NewFlagSet("Filters", pflag.ContinueOnError)
	filters.SortFlags = false // related flags (pod, from-pod, to-pod) stay together
	addFilterFlags(filters, &o.filters)
	filters.StringArrayVar(&o.allowlist, "allowlist", nil, "Add a raw FlowFilter, as JSON, to the whitelist")
	filters.StringArrayVar(&o.denylist, "denylist", nil, "Add a raw FlowFilter, as JSON, to the blacklist")
	o.kernel.addFlags(filters)
	o.tcp.addFlags(filters)

	sel := pflag.NewFlagSet("Selection", pflag.ContinueOnError)
	sel.Uint64Var(&o.last, "last", 0, fmt.Sprintf("Show the last N flows of each node's buffer (default %d unless --follow, --since or --until)", defaultLast))
	sel.Uint64Var(&o.first, "first", 0, "Show the first N flows of each node's buffer")
	sel.BoolVar(&o.all, "all", false, "Show every flow in the buffers (best combined with filters)")
	sel.BoolVarP(&o.follow, "follow", "f", false, "Keep showing new flows as they come, until Ctrl-C")
	sel.StringVar(&o.since, "since", "", "Show flows since this time: a duration ago (30s, 5m, 1h) or a time (2006-01-02T15:04:05Z07:00, 2006-01-02, ...)")
	sel.StringVar(&o.until, "until", "", "Show flows until this time (same forms as --since; ignored with --follow)")
	sel.BoolVar(&o.aggregate, "aggregate", false, "Show one line per edge (source and destination workload, port, protocol, verdict) with its flow count over --since/--until, from loupe agents or loupe-relay")

	out := pflag.NewFlagSet("Output", pflag.ContinueOnError)
	out.StringVarP(&o.output, "output", "o", "compact", "Output format: compact, dict, json (= jsonpb: one GetFlowsResponse per line, flows and lost events, as hubble), table")
	out.StringVar(&o.timeFormat, "time-format", "StampMilli", "Time format of the text outputs: StampMilli, RFC3339, RFC3339Milli, RFC3339Micro, RFC3339Nano, RFC1123Z, YearMonthDay, ...")
	out.StringVar(&o.color, "color", "auto", "Color compact and dict output: auto (on a terminal), always, never")
	out.BoolVar(&o.printNodeName, "print-node-name", false, "Print the node that observed each flow")
	out.BoolVar(&o.printPolicyNames, "print-policy-names", false, "Print the policies that allowed or denied each policy verdict")
	out.BoolVar(&o.numeric, "numeric", false, "Print IP addresses instead of pod, service and DNS names")
	out.BoolVar(&o.ipTranslation, "ip-translation", true, "Print pod, service and DNS names instead of IP addresses")
	out.StringSliceVar(&o.fieldMask, "field-mask", nil, "Ask the server for only these flow fields (json output only), e.g. time,source.pod_name,verdict")
	out.BoolVar(&o.defaultFieldMask, "use-default-field-masks", true, "Ask the server for only the fields the text outputs print")
	out.BoolVar(&o.printRawFilters, "print-raw-filters", false, "Print the whitelist and blacklist as YAML and exit without contacting the server")
	out.BoolVarP(&o.silent, "silent-errors", "s", false, "Do not print notices (unavailable nodes, lost events) on stderr")
	out.BoolVarP(&o.debug, "debug", "D", false, "Also print informational notices (nodes connecting, leaving)")

	srv := pflag.NewFlagSet("Server", pflag.ContinueOnError)
	o.server.addFlags(srv)

	groups := []*pflag.FlagSet{filters, sel, out, srv}
	for _, g := range groups {
		cmd.Flags().AddFlagSet(g)
	}
	o.server.flags = cmd.Flags()
	setGroupedUsage(cmd, groups)
	registerCompletions(cmd)
	return cmd
}

func registerCompletions(cmd *cobra.Command) {
	fixed := func(vals ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return vals, cobra.ShellCompDirectiveNoFileComp
		}
	}
	types := []string{"capture", "drop", "l7", "policy-verdict", "trace", "trace-sock"}
	for _, op := range contract.TraceObservationPointNames {
		types = append(types, "trace:"+op)
	}
	_ = cmd.RegisterFlagCompletionFunc("type", fixed(types...))
	_ = cmd.RegisterFlagCompletionFunc("verdict", fixed(verdictNames()...))
	_ = cmd.RegisterFlagCompletionFunc("protocol", fixed(knownProtocols...))
	_ = cmd.RegisterFlagCompletionFunc("traffic-direction", fixed("ingress", "egress"))
	_ = cmd.RegisterFlagCompletionFunc("output", fixed("compact", "dict", "json", "jsonpb", "table"))
	_ = cmd.RegisterFlagCompletionFunc("color", fixed("auto", "always", "never"))
	for _, f := range []string{"identity", "from-identity", "to-identity"} {
		_ = cmd.RegisterFlagCompletionFunc(f, fixed(reservedIdentityNames()...))
	}
}

// setGroupedUsage prints the flags in named groups, filters first.
func setGroupedUsage(cmd *cobra.Command, groups []*pflag.FlagSet) {
	cmd.SetUsageFunc(func(c *cobra.Command) error {
		w := c.OutOrStderr()
		fmt.Fprintf(w, "Usage:\n  %s\n", c.UseLine())
		if c.HasExample() {
			fmt.Fprintf(w, "\nExamples:\n%s\n", c.Example)
		}
		for _, g := range groups {
			fmt.Fprintf(w, "\n%s:\n%s", g.Name(), g.FlagUsages())
		}
		if inh := c.InheritedFlags(); inh.HasAvailableFlags() {
			fmt.Fprintf(w, "\nGlobal flags:\n%s", inh.FlagUsages())
		}
		return nil
	})
}

func parseRawFilters(flag string, vals []string) ([]*flowpb.FlowFilter, error) {
	var out []*flowpb.FlowFilter
	for _, v := range vals {
		dec := json.NewDecoder(strings.NewReader(v))
		for {
			var f flowpb.FlowFilter
			err := dec.Decode(&f)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("invalid --%s %q: want a FlowFilter as JSON, e.g. '{\"source_pod\":[\"default/\"]}': %w", flag, v, err)
			}
			out = append(out, &f)
		}
	}
	return out, nil
}

// request builds the GetFlowsRequest the flags ask for, as hubble would.
func (o *observeOptions) request(textOutput bool) (*observerpb.GetFlowsRequest, error) {
	if err := o.filters.done(); err != nil {
		return nil, err
	}
	first, last := o.first > 0, o.last > 0
	if err := o.checkAggregate(); err != nil {
		return nil, err
	}
	switch {
	case first && last:
		return nil, errors.New("--first and --last cannot be combined")
	case first && o.all:
		return nil, errors.New("--first and --all cannot be combined")
	case first && o.follow:
		return nil, errors.New("--first and --follow cannot be combined")
	case last && o.all:
		return nil, errors.New("--last and --all cannot be combined")
	}
	now := o.now()
	var since, until *timestamppb.Timestamp
	if o.since != "" {
		t, err := parseTime(o.since, now)
		if err != nil {
			return nil, fmt.Errorf("--since: %w", err)
		}
		since = timestamppb.New(t)
		if err := since.CheckValid(); err != nil {
			return nil, fmt.Errorf("--since %q is out of range: %w", o.since, err)
		}
	}
	// The server stops at "now" without --until; with --follow there is no end.
	if o.until != "" && !o.follow {
		t, err := parseTime(o.until, now)
		if err != nil {
			return nil, fmt.Errorf("--until: %w", err)
		}
		until = timestamppb.New(t)
		if err := until.CheckValid(); err != nil {
			return nil, fmt.Errorf("--until %q is out of range: %w", o.until, err)
		}
	}
	number := o.last
	if first {
		number = o.first
	} else if since == nil && until == nil {
		switch {
		case o.all:
			number = maxLast
		case !last && !o.follow:
			number = defaultLast
		}
	}

	wl := o.filters.include.filters()
	bl := o.filters.exclude.filters()
	raw, err := parseRawFilters("allowlist", o.allowlist)
	if err != nil {
		return nil, err
	}
	wl = append(wl, raw...)
	if raw, err = parseRawFilters("denylist", o.denylist); err != nil {
		return nil, err
	}
	bl = append(bl, raw...)

	if err := o.tcp.validate(); err != nil {
		return nil, err
	}
	wl = narrowEvents(wl, append(o.kernel.eventTypes(), o.tcp.eventTypes()...)...)
	req := &observerpb.GetFlowsRequest{
		Number:    number,
		First:     first,
		Follow:    o.follow,
		Since:     since,
		Until:     until,
		Whitelist: wl,
		Blacklist: bl,
	}
	mask := o.fieldMask
	if textOutput {
		if len(mask) > 0 {
			return nil, fmt.Errorf("--field-mask works only with -o json: the %s output needs more fields", o.output)
		}
		if o.defaultFieldMask {
			mask = defaultFieldMask
		}
	}
	if len(mask) > 0 {
		fm, err := fieldmaskpb.New(&flowpb.Flow{}, mask...)
		if err != nil {
			return nil, fmt.Errorf("invalid --field-mask: %w", err)
		}
		req.FieldMask = fm
	}
	return req, nil
}

func (o *observeOptions) printOptions(stdout io.Writer) (printOptions, error) {
	format, err := parseOutputFormat(o.output)
	if err != nil {
		return printOptions{}, err
	}
	if format == formatTable && o.follow {
		return printOptions{}, errors.New("-o table cannot be combined with --follow: a table is aligned once all flows are in; use compact or json")
	}
	layout, err := timeFormatLayout(o.timeFormat)
	if err != nil {
		return printOptions{}, err
	}
	color, err := colorWanted(o.color, stdout)
	if err != nil {
		return printOptions{}, err
	}
	return printOptions{
		format:        format,
		timeLayout:    layout,
		color:         color,
		ipTranslation: o.ipTranslation && !o.numeric,
		nodeName:      o.printNodeName,
		policyNames:   o.printPolicyNames,
		debug:         o.debug,
	}, nil
}

func (o *observeOptions) run(cmd *cobra.Command) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	popts, err := o.printOptions(stdout)
	if err != nil {
		return err
	}
	req, err := o.request(popts.format != formatJSON)
	if err != nil {
		return err
	}
	if o.printRawFilters {
		return printRawFilters(stdout, req)
	}
	if o.silent {
		stderr = io.Discard
	}

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	conn, err := o.server.dial()
	if err != nil {
		return err
	}
	defer conn.Close()

	if o.aggregate {
		ctx = aggregate.Ask(ctx)
	}
	p := newFlowPrinter(stdout, stderr, popts)
	if o.aggregate && popts.format != formatJSON {
		p = newAggregatePrinter(stdout, stderr, popts)
	}
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return o.server.explain(err, false)
	}
	started := false
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// Ctrl-C ends a --follow: a normal exit, not an error.
			if ctx.Err() != nil || status.Code(err) == codes.Canceled {
				break
			}
			_ = p.flush()
			return o.server.explain(err, started)
		}
		started = true
		if f := res.GetFlow(); f != nil && !matchEventFlags(f, &o.kernel, &o.tcp) {
			continue
		}
		if err := p.write(res); err != nil {
			return err
		}
	}
	return p.flush()
}

// printRawFilters prints the request's filters as YAML: one JSON FlowFilter
// per entry, which --allowlist and --denylist take back.
func printRawFilters(w io.Writer, req *observerpb.GetFlowsRequest) error {
	var doc struct {
		Allowlist []string `json:"allowlist,omitempty"`
		Denylist  []string `json:"denylist,omitempty"`
	}
	for _, f := range req.GetWhitelist() {
		b, err := json.Marshal(f)
		if err != nil {
			return fmt.Errorf("encode filter: %w", err)
		}
		doc.Allowlist = append(doc.Allowlist, string(b))
	}
	for _, f := range req.GetBlacklist() {
		b, err := json.Marshal(f)
		if err != nil {
			return fmt.Errorf("encode filter: %w", err)
		}
		doc.Denylist = append(doc.Denylist, string(b))
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode filters: %w", err)
	}
	_, err = w.Write(out)
	return err
}

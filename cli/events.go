package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/secevents"
)

// eventsOptions are loupe events' flags.
type eventsOptions struct {
	srv        serverOptions
	since      string
	last       uint64
	follow     bool
	pods       []string
	namespaces []string
	rules      []string
	priority   string
	output     string
}

// NewEventsCommand is `loupe events`: the runtime security events of an
// agent or, through loupe-relay, of the cluster.
func NewEventsCommand() *cobra.Command { return newEventsCommand(time.Now) }

func newEventsCommand(now func() time.Time) *cobra.Command {
	o := &eventsOptions{}
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show runtime security events: rules (Falco's format) that matched processes and files in pods and on nodes",
		Long: `events prints the runtime security events of loupe-relay (the cluster) or of
one loupe-agent: which rule matched, its priority and output, the pod (or the
node), the process and the file. Without -f it prints what matched and exits.

  loupe events --since 1m -o json
  loupe events -f --namespace x --priority warning`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, now())
		},
	}
	o.srv.addFlags(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.since, "since", "", "Show events since this time: a duration ago (30s, 5m, 1h) or a time (2006-01-02T15:04:05Z07:00, ...)")
	f.Uint64Var(&o.last, "last", 0, "Show the last N events (0: all kept)")
	f.BoolVarP(&o.follow, "follow", "f", false, "Keep printing new events")
	f.StringSliceVar(&o.pods, "pod", nil, "Only events of this pod: [namespace/]name (repeatable)")
	f.StringSliceVar(&o.namespaces, "namespace", nil, "Only events of pods in this namespace (repeatable)")
	f.StringSliceVar(&o.rules, "rule", nil, "Only events of this rule, by name (repeatable)")
	f.StringVar(&o.priority, "priority", "", "Only events of this priority or more severe: emergency, alert, critical, error, warning, notice, informational, debug")
	f.StringVarP(&o.output, "output", "o", "compact", "Output: json, table or compact")
	return cmd
}

func (o *eventsOptions) request(now time.Time) (*pb.GetEventsRequest, error) {
	req := &pb.GetEventsRequest{Number: o.last, Follow: o.follow, Namespace: o.namespaces, Pod: o.pods, Rule: o.rules}
	if o.since != "" {
		t, err := parseTime(o.since, now)
		if err != nil {
			return nil, fmt.Errorf("--since: %w", err)
		}
		req.SinceUnixNano = t.UnixNano()
	}
	if o.priority != "" {
		p, err := secevents.ParsePriority(o.priority)
		if err != nil {
			return nil, fmt.Errorf("--priority: %w", err)
		}
		req.MinPriority = p.String()
	}
	switch o.output {
	case "json", "table", "compact":
	default:
		return nil, fmt.Errorf("-o %q: want json, table or compact", o.output)
	}
	return req, nil
}

func (o *eventsOptions) run(cmd *cobra.Command, now time.Time) error {
	req, err := o.request(now)
	if err != nil {
		return err
	}
	conn, err := o.srv.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := pb.NewSecurityEventsClient(conn).GetEvents(cmd.Context(), req)
	if err != nil {
		return o.srv.explain(err, false)
	}
	p := newEventPrinter(cmd.OutOrStdout(), o.output)
	defer p.flush()
	started := false
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if cmd.Context().Err() != nil {
				return nil
			}
			return o.srv.explain(err, started)
		}
		started = true
		if err := p.print(r); err != nil {
			return err
		}
		if o.follow {
			p.flush()
		}
	}
}

// eventJSON is one line of -o json: the fields a security team greps for
// at the top level, the rest beside them.
type eventJSON struct {
	Time         string       `json:"time"`
	Node         string       `json:"node_name"`
	Namespace    string       `json:"namespace"`
	Pod          string       `json:"pod"`
	Rule         string       `json:"rule"`
	Priority     string       `json:"priority"`
	Output       string       `json:"output"`
	File         string       `json:"file,omitempty"`
	FileRelative bool         `json:"file_relative,omitempty"`
	FileTarget   string       `json:"file_target,omitempty"`
	EventType    string       `json:"event_type"`
	ContainerID  string       `json:"container_id"`
	Tags         []string     `json:"tags,omitempty"`
	Action       string       `json:"action,omitempty"`
	Network      *networkJSON `json:"network,omitempty"`
	Process      *processJSON `json:"process,omitempty"`
	Lost         *lostJSON    `json:"lost_events,omitempty"`
}

type processJSON struct {
	Name   string   `json:"name"`
	Exe    string   `json:"exe"`
	Path   string   `json:"exe_path,omitempty"`
	Argv   []string `json:"argv"`
	PID    uint32   `json:"pid"`
	PPID   uint32   `json:"ppid"`
	UID    uint32   `json:"uid"`
	Parent string   `json:"parent_name"`
}

type lostJSON struct {
	Source string `json:"source"`
	Count  uint64 `json:"count"`
	Node   string `json:"node_name"`
	Time   string `json:"time"`
}

type eventPrinter struct {
	w      io.Writer
	mode   string
	tw     *tabwriter.Writer
	header bool
}

func newEventPrinter(w io.Writer, mode string) *eventPrinter {
	p := &eventPrinter{w: w, mode: mode}
	if mode == "table" {
		p.tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	}
	return p
}

func (p *eventPrinter) flush() {
	if p.tw != nil {
		p.tw.Flush()
	}
}

func eventTime(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

func where(ev *pb.SecurityEvent) string {
	if ev.GetPod() == "" {
		return "node/" + ev.GetNodeName()
	}
	return ev.GetNamespace() + "/" + ev.GetPod()
}

func (p *eventPrinter) print(r *pb.GetEventsResponse) error {
	if l := r.GetLostEvents(); l != nil {
		switch p.mode {
		case "json":
			b, err := json.Marshal(struct {
				Lost *lostJSON `json:"lost_events"`
			}{&lostJSON{Source: l.GetSource(), Count: l.GetCount(), Node: r.GetNodeName(), Time: eventTime(r.GetTimeUnixNano())}})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(p.w, "%s\n", b)
			return err
		default:
			_, err := fmt.Fprintf(p.w, "EVENTS LOST: %d (%s) on %s\n", l.GetCount(), l.GetSource(), r.GetNodeName())
			return err
		}
	}
	ev := r.GetEvent()
	if ev == nil {
		return nil
	}
	switch p.mode {
	case "json":
		j := eventJSON{Time: eventTime(ev.GetTimeUnixNano()), Node: ev.GetNodeName(), Namespace: ev.GetNamespace(), Pod: ev.GetPod(),
			Rule: ev.GetRule(), Priority: ev.GetPriority(), Output: ev.GetOutput(), File: ev.GetFile(), FileRelative: ev.GetFileRelative(), FileTarget: ev.GetFileTarget(),
			EventType: ev.GetEventType(), ContainerID: ev.GetContainerId(), Tags: ev.GetTags(), Action: ev.GetAction()}
		if ev.GetDestinationIp() != "" || ev.GetDnsQuery() != "" {
			j.Network = &networkJSON{SourceIP: ev.GetSourceIp(), DestinationIP: ev.GetDestinationIp(), DestinationPort: ev.GetDestinationPort(),
				L4Protocol: ev.GetL4Protocol(), DNSQuery: ev.GetDnsQuery()}
		}
		if pr := ev.GetProcess(); pr != nil {
			j.Process = &processJSON{Name: pr.GetName(), Exe: pr.GetExe(), Path: pr.GetExePath(), Argv: pr.GetArgv(), PID: pr.GetPid(),
				PPID: pr.GetPpid(), UID: pr.GetUid(), Parent: pr.GetParentName()}
		}
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	case "table":
		if !p.header {
			fmt.Fprintln(p.tw, "TIME\tPRIORITY\tRULE\tPOD\tPROCESS\tFILE\tOUTPUT")
			p.header = true
		}
		_, err := fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", time.Unix(0, ev.GetTimeUnixNano()).Format(time.StampMilli),
			ev.GetPriority(), ev.GetRule(), where(ev), procLabel(ev), dash(ev.GetFile()), ev.GetOutput())
		return err
	}
	act := ""
	if ev.GetAction() != "" {
		act = " (" + strings.ToUpper(ev.GetAction()) + ")"
	}
	_, err := fmt.Fprintf(p.w, "%s %s %s [%s]%s %s: %s\n", time.Unix(0, ev.GetTimeUnixNano()).Format(time.StampMilli),
		strings.ToUpper(ev.GetPriority()), where(ev), ev.GetRule(), act, procLabel(ev), ev.GetOutput())
	return err
}

// networkJSON is a network event's flow in -o json.
type networkJSON struct {
	SourceIP        string `json:"source_ip,omitempty"`
	DestinationIP   string `json:"destination_ip,omitempty"`
	DestinationPort uint32 `json:"destination_port,omitempty"`
	L4Protocol      string `json:"l4_protocol,omitempty"`
	DNSQuery        string `json:"dns_query,omitempty"`
}

func procLabel(ev *pb.SecurityEvent) string {
	pr := ev.GetProcess()
	if pr == nil {
		return "-"
	}
	return fmt.Sprintf("%s(%d)", pr.GetName(), pr.GetPid())
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

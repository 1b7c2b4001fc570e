package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"github.com/loupe-project/loupe/contract"
)

// outputFormat is one of the -o values; they print what `hubble observe`
// prints for the same flag.
type outputFormat int

const (
	formatCompact outputFormat = iota
	formatDict
	formatJSON // json and jsonpb: one GetFlowsResponse per line
	formatTable
)

func parseOutputFormat(s string) (outputFormat, error) {
	switch s {
	case "compact":
		return formatCompact, nil
	case "dict":
		return formatDict, nil
	case "json", "JSON", "jsonpb":
		return formatJSON, nil
	case "table", "tab":
		return formatTable, nil
	}
	return 0, fmt.Errorf("unknown output format %q: want compact, dict, json, jsonpb or table", s)
}

type printOptions struct {
	format        outputFormat
	timeLayout    string
	color         bool
	ipTranslation bool
	nodeName      bool
	policyNames   bool
	// debug also prints informational node-status notices.
	debug bool
}

// flowPrinter writes flows to out and notices (node status, lost events) to
// errOut, except that the JSON format writes lost events to out, as hubble
// does: a saved flows file must say where flows are missing.
type flowPrinter struct {
	opts   printOptions
	out    io.Writer
	errOut io.Writer
	tw     *tabwriter.Writer
	c      palette
	flows  int             // flows written to out
	notes  int             // notices written to errOut
	agg    *aggregateTable // --aggregate in a text format
}

func newFlowPrinter(out, errOut io.Writer, opts printOptions) *flowPrinter {
	p := &flowPrinter{opts: opts, out: out, errOut: errOut}
	switch opts.format {
	case formatTable:
		p.tw = tabwriter.NewWriter(out, 2, 0, 3, ' ', 0)
	case formatCompact, formatDict:
		p.c = palette{on: opts.color}
	}
	return p
}

// flush writes out what the table format holds back for alignment.
func (p *flowPrinter) flush() error {
	if p.agg != nil {
		return p.agg.print(p.out)
	}
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

// palette colors text with ANSI SGR codes (the same colors hubble uses).
type palette struct{ on bool }

func (c palette) paint(code, s string) string {
	if !c.on {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}
func (c palette) red(s string) string     { return c.paint("31", s) }
func (c palette) green(s string) string   { return c.paint("32", s) }
func (c palette) yellow(s string) string  { return c.paint("33", s) }
func (c palette) magenta(s string) string { return c.paint("35", s) }
func (c palette) cyan(s string) string    { return c.paint("36", s) }

// colorWanted resolves --color for a writer: auto colors only a terminal,
// and respects NO_COLOR and TERM=dumb.
func colorWanted(when string, w io.Writer) (bool, error) {
	switch strings.ToLower(when) {
	case "always":
		return true, nil
	case "never":
		return false, nil
	case "auto", "":
		if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
			return false, nil
		}
		f, ok := w.(*os.File)
		if !ok {
			return false, nil
		}
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		return err == nil, nil
	}
	return false, fmt.Errorf("unknown --color %q: want auto, always or never", when)
}

// clean neutralizes terminal control characters in text that comes from the
// server (names, summaries), so a flow cannot rewrite the user's terminal.
var cleaner = strings.NewReplacer("\x1b", "^[", "\r", `\r`, "\n", `\n`)

func clean(s string) string { return cleaner.Replace(s) }

func fmtTime(layout string, ts *timestamppb.Timestamp) string {
	if !ts.IsValid() {
		return "N/A"
	}
	return ts.AsTime().Format(layout)
}

// ports returns the flow's L4 source and destination ports ("" if none).
func ports(f *flowpb.Flow) (string, string) {
	l4 := f.GetL4()
	var s, d uint32
	switch {
	case l4.GetTCP() != nil:
		s, d = l4.GetTCP().GetSourcePort(), l4.GetTCP().GetDestinationPort()
	case l4.GetUDP() != nil:
		s, d = l4.GetUDP().GetSourcePort(), l4.GetUDP().GetDestinationPort()
	case l4.GetSCTP() != nil:
		s, d = l4.GetSCTP().GetSourcePort(), l4.GetSCTP().GetDestinationPort()
	default:
		return "", ""
	}
	return strconv.FormatUint(uint64(s), 10), strconv.FormatUint(uint64(d), 10)
}

// host names one end of a flow: namespace/pod, namespace/service, DNS names
// or the IP (with --numeric), followed by the port.
func (p *flowPrinter) host(ip, port, ns, pod, svc string, names []string) string {
	h := ip
	if p.opts.ipTranslation {
		switch {
		case pod != "":
			h = path.Join(ns, pod)
		case svc != "":
			h = path.Join(ns, svc)
		case len(names) > 0:
			h = strings.Join(names, ",")
		}
	}
	h = clean(h)
	if port != "" && port != "0" {
		return net.JoinHostPort(h, p.c.yellow(port))
	}
	return h
}

func (p *flowPrinter) hosts(f *flowpb.Flow) (string, string) {
	if f.GetIP() == nil {
		if eth := f.GetEthernet(); eth != nil {
			return p.c.cyan(clean(eth.GetSource())), p.c.cyan(clean(eth.GetDestination()))
		}
		return "", ""
	}
	srcNs, dstNs := f.GetSource().GetNamespace(), f.GetDestination().GetNamespace()
	var srcSvc, dstSvc string
	if s := f.GetSourceService(); s != nil {
		srcNs, srcSvc = s.GetNamespace(), s.GetName()
	}
	if s := f.GetDestinationService(); s != nil {
		dstNs, dstSvc = s.GetNamespace(), s.GetName()
	}
	sp, dp := ports(f)
	src := p.host(f.GetIP().GetSource(), sp, srcNs, f.GetSource().GetPodName(), srcSvc, f.GetSourceNames())
	dst := p.host(f.GetIP().GetDestination(), dp, dstNs, f.GetDestination().GetPodName(), dstSvc, f.GetDestinationNames())
	return p.c.cyan(src), p.c.cyan(dst)
}

func (p *flowPrinter) identity(id uint32) string {
	if name, ok := reservedIdentities[id]; ok {
		return p.c.magenta("(" + name + ")")
	}
	return p.c.magenta("(ID:" + strconv.FormatUint(uint64(id), 10) + ")")
}

var obsPointAsSockXlate = map[flowpb.SocketTranslationPoint]string{
	flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_FWD: "post-xlate-fwd",
	flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_REV: "post-xlate-rev",
	flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_PRE_DIRECTION_FWD:  "pre-xlate-fwd",
	flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_PRE_DIRECTION_REV:  "pre-xlate-rev",
}

// flowType is the TYPE column: the observation point of a trace, the reason
// of a drop, the match of a policy verdict, the kind of an L7 record.
func flowType(f *flowpb.Flow) string {
	if l7 := f.GetL7(); l7 != nil {
		proto, kind := "l7", strings.ToLower(l7.GetType().String())
		switch {
		case l7.GetHttp() != nil:
			proto = "http"
		case l7.GetDns() != nil:
			proto = "dns"
			kind += " " + l7.GetDns().GetObservationSource()
		}
		return proto + "-" + kind
	}
	sub := f.GetEventType().GetSubType()
	switch f.GetEventType().GetType() {
	case contract.MessageTypeTrace:
		if t, ok := tcpEventType(f); ok {
			return t
		}
		return contract.TraceObservationPointName(uint8(sub))
	case contract.MessageTypeDrop:
		if t, ok := kernelDropType(f); ok {
			return t
		}
		return contract.DropReasonText(uint8(sub))
	case contract.MessageTypePolicyVerdict:
		return "policy-verdict:" + contract.PolicyMatchName(f.GetPolicyMatchType()) + " " + f.GetTrafficDirection().String()
	case contract.MessageTypeCapture:
		return f.GetDebugCapturePoint().String()
	case contract.MessageTypeTraceSock:
		if s, ok := obsPointAsSockXlate[flowpb.SocketTranslationPoint(sub)]; ok {
			return s
		}
		return flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_UNKNOWN.String()
	}
	return "UNKNOWN"
}

// policyNames formats " BY name (Kind), ..." for --print-policy-names.
func policyNames(pols []*flowpb.Policy) string {
	var b strings.Builder
	for _, pol := range pols {
		if pol.GetKind() == "" || pol.GetName() == "" {
			continue
		}
		if b.Len() == 0 {
			b.WriteString(" BY ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(clean(pol.GetName()) + " (" + clean(pol.GetKind()) + ")")
	}
	return b.String()
}

// verdict is the VERDICT column; a policy-verdict event says ALLOWED, DENIED
// or AUDITED, optionally with the policies that decided.
func (p *flowPrinter) verdict(f *flowpb.Flow) string {
	v := f.GetVerdict()
	msg := v.String()
	pv := f.GetEventType().GetType() == contract.MessageTypePolicyVerdict
	dir := f.GetTrafficDirection()
	by := func(egress, ingress []*flowpb.Policy) string {
		if !p.opts.policyNames {
			return ""
		}
		switch dir {
		case flowpb.TrafficDirection_EGRESS:
			return policyNames(egress)
		case flowpb.TrafficDirection_INGRESS:
			return policyNames(ingress)
		}
		return ""
	}
	switch v {
	case flowpb.Verdict_FORWARDED, flowpb.Verdict_REDIRECTED:
		if pv {
			msg = "ALLOWED" + by(f.GetEgressAllowedBy(), f.GetIngressAllowedBy())
		}
		return p.c.green(msg)
	case flowpb.Verdict_DROPPED, flowpb.Verdict_ERROR:
		if pv {
			msg = "DENIED" + by(f.GetEgressDeniedBy(), f.GetIngressDeniedBy())
		}
		return p.c.red(msg)
	case flowpb.Verdict_AUDIT:
		if pv {
			msg = "AUDITED" + by(f.GetEgressDeniedBy(), f.GetIngressDeniedBy())
		}
		return p.c.yellow(msg)
	case flowpb.Verdict_TRACED, flowpb.Verdict_TRANSLATED:
		return p.c.yellow(msg)
	}
	return msg
}

func (p *flowPrinter) summary(f *flowpb.Flow) string {
	var b strings.Builder
	if id := f.GetIpTraceId().GetTraceId(); id > 0 {
		fmt.Fprintf(&b, "IP Trace ID: %d; ", id)
	}
	b.WriteString(clean(f.GetSummary()))
	b.WriteString(connectionSummary(f))
	switch a := f.GetAuthType(); a {
	case flowpb.AuthType_DISABLED:
	case flowpb.AuthType_TEST_ALWAYS_FAIL:
		b.WriteString("; Auth: " + p.c.red(a.String()))
	default:
		b.WriteString("; Auth: " + p.c.green(a.String()))
	}
	return b.String()
}

// write prints one GetFlowsResponse.
func (p *flowPrinter) write(res *observerpb.GetFlowsResponse) error {
	switch {
	case res.GetFlow() != nil && p.agg != nil:
		return p.agg.add(res.GetFlow())
	case res.GetFlow() != nil:
		return p.writeFlow(res)
	case res.GetNodeStatus() != nil:
		return p.writeNodeStatus(res)
	case res.GetLostEvents() != nil:
		return p.writeLostEvents(res)
	case res.GetResponseTypes() != nil && p.opts.debug:
		_, err := fmt.Fprintf(p.errOut, "unknown response type: %T\n", res.GetResponseTypes())
		return err
	}
	return nil
}

const dictSeparator = "------------"

func (p *flowPrinter) writeFlow(res *observerpb.GetFlowsResponse) error {
	f := res.GetFlow()
	if p.opts.format == formatJSON {
		// encoding/json calls the message's MarshalJSON (protojson with proto
		// field names) and compacts it: byte for byte what hubble prints.
		return json.NewEncoder(p.out).Encode(res)
	}
	ts := fmtTime(p.opts.timeLayout, f.GetTime())
	node := clean(f.GetNodeName())
	src, dst := p.hosts(f)
	var err error
	switch p.opts.format {
	case formatCompact:
		srcID, dstID := p.identity(f.GetSource().GetIdentity()), p.identity(f.GetDestination().GetIdentity())
		arrow := "->"
		switch {
		case f.GetIsReply() == nil:
			arrow = "<>" // direction unknown
		case f.GetIsReply().GetValue():
			src, dst, srcID, dstID, arrow = dst, src, dstID, srcID, "<-"
		}
		nodePart := ""
		if p.opts.nodeName {
			nodePart = " [" + node + "]"
		}
		_, err = fmt.Fprintf(p.out, "%s%s: %s %s %s %s %s %s %s (%s)\n",
			ts, nodePart, src, srcID, arrow, dst, dstID, flowType(f), p.verdict(f), p.summary(f))
	case formatDict:
		var b strings.Builder
		if p.flows > 0 {
			b.WriteString(dictSeparator + "\n")
		}
		b.WriteString("  TIMESTAMP: " + ts + "\n")
		if p.opts.nodeName {
			b.WriteString("       NODE: " + node + "\n")
		}
		b.WriteString("     SOURCE: " + src + "\n")
		b.WriteString("DESTINATION: " + dst + "\n")
		b.WriteString("       TYPE: " + flowType(f) + "\n")
		b.WriteString("    VERDICT: " + p.verdict(f) + "\n")
		b.WriteString("    SUMMARY: " + p.summary(f) + "\n")
		_, err = io.WriteString(p.out, b.String())
	case formatTable:
		var b strings.Builder
		if p.flows == 0 {
			b.WriteString("TIMESTAMP\t")
			if p.opts.nodeName {
				b.WriteString("NODE\t")
			}
			b.WriteString("SOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY\n")
		}
		b.WriteString(ts + "\t")
		if p.opts.nodeName {
			b.WriteString(node + "\t")
		}
		b.WriteString(src + "\t" + dst + "\t" + flowType(f) + "\t" + p.verdict(f) + "\t" + p.summary(f) + "\n")
		_, err = io.WriteString(p.tw, b.String())
	}
	if err != nil {
		return fmt.Errorf("write flow: %w", err)
	}
	p.flows++
	return nil
}

// joinCut joins names with ", " up to about limit bytes and says how many it left out.
func joinCut(names []string, limit int) string {
	n, end := 0, len(names)
	for i, s := range names {
		n += len(s) + 2
		if n > limit && i > 0 {
			end = i
			break
		}
	}
	out := strings.Join(names[:end], ", ")
	if end < len(names) {
		out += fmt.Sprintf(" (and %d more)", len(names)-end)
	}
	return clean(out)
}

// writeNodeStatus reports, on stderr, nodes a relay cannot reach. Nodes that
// connect or leave are reported only with --debug.
func (p *flowPrinter) writeNodeStatus(res *observerpb.GetFlowsResponse) error {
	s := res.GetNodeStatus()
	state := s.GetStateChange()
	if !p.opts.debug && state != relaypb.NodeState_NODE_ERROR && state != relaypb.NodeState_NODE_UNAVAILABLE {
		return nil
	}
	var err error
	switch p.opts.format {
	case formatJSON:
		err = json.NewEncoder(p.errOut).Encode(res)
	case formatDict:
		var b strings.Builder
		if p.notes+p.flows > 0 {
			b.WriteString(dictSeparator + "\n")
		}
		msg := "N/A"
		if m := s.GetMessage(); m != "" {
			msg = clean(strconv.Quote(m))
		}
		b.WriteString("  TIMESTAMP: " + fmtTime(p.opts.timeLayout, res.GetTime()) + "\n")
		b.WriteString("      STATE: " + state.String() + "\n")
		b.WriteString("      NODES: " + joinCut(s.GetNodeNames(), 50) + "\n")
		b.WriteString("    MESSAGE: " + msg + "\n")
		_, err = io.WriteString(p.errOut, b.String())
	default:
		prefix := fmtTime(p.opts.timeLayout, res.GetTime()) + " [" + clean(res.GetNodeName()) + "]"
		n, names := len(s.GetNodeNames()), joinCut(s.GetNodeNames(), 50)
		var msg string
		switch state {
		case relaypb.NodeState_NODE_CONNECTED:
			msg = fmt.Sprintf("%s: Receiving flows from %d nodes: %s", prefix, n, names)
		case relaypb.NodeState_NODE_UNAVAILABLE:
			msg = fmt.Sprintf("%s: %d nodes are unavailable: %s", prefix, n, names)
		case relaypb.NodeState_NODE_GONE:
			msg = fmt.Sprintf("%s: %d nodes removed from cluster: %s", prefix, n, names)
		case relaypb.NodeState_NODE_ERROR:
			msg = fmt.Sprintf("%s: Error %s on %d nodes: %s", prefix, clean(strconv.Quote(s.GetMessage())), n, names)
		default:
			msg = fmt.Sprintf("%s: unknown node status event: %s", prefix, clean(s.String()))
		}
		_, err = io.WriteString(p.errOut, msg+"\n")
	}
	if err != nil {
		return fmt.Errorf("write node status: %w", err)
	}
	p.notes++
	return nil
}

// writeLostEvents reports events the server had to drop: in the flow
// stream with -o json (as hubble, so that `policy verify --flows-file` sees
// them), on stderr in the text formats.
func (p *flowPrinter) writeLostEvents(res *observerpb.GetFlowsResponse) error {
	l := res.GetLostEvents()
	var err error
	if p.opts.format == formatJSON {
		err = json.NewEncoder(p.out).Encode(res)
	} else {
		summary := fmt.Sprintf("CPU(%d) %d", l.GetCpu().GetValue(), l.GetNumEventsLost())
		if l.GetFirst() != nil && l.GetLast() != nil {
			summary += fmt.Sprintf(" (first: %s, last: %s)", fmtTime(p.opts.timeLayout, l.GetFirst()), fmtTime(p.opts.timeLayout, l.GetLast()))
		}
		node := ""
		if p.opts.nodeName && res.GetNodeName() != "" {
			node = " [" + clean(res.GetNodeName()) + "]"
		}
		_, err = fmt.Fprintf(p.errOut, "%s%s EVENTS LOST: %s %s\n",
			fmtTime(p.opts.timeLayout, res.GetTime()), node, l.GetSource(), summary)
	}
	if err != nil {
		return fmt.Errorf("write lost events: %w", err)
	}
	p.notes++
	return nil
}

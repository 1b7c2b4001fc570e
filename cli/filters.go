package cli

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// The filter flags build a GetFlowsRequest's whitelist and blacklist the way
// the stock hubble CLI does, so that `loupe observe ARGS` and
// `hubble observe ARGS` send the same request:
//
//   - Flags are applied in command-line order. --not sends the next filter
//     flag to the blacklist; every other filter goes to the whitelist.
//   - Each side holds up to two FlowFilters, one where an undirected flag
//     (--pod, --ip, --label, ...) matches the source and one where it matches
//     the destination. from-/to- flags and undirected-less flags (--verdict,
//     --protocol, ...) go into both. Repeating a flag ORs its values, different
//     flags AND. If both filters end up equal only one is sent.
//   - Namespaces (-n, --from-namespace, --to-namespace, -A) are folded into
//     the pod and service filters at the end: "ns/" prefixes bare names, or
//     becomes a pod filter of its own.

// filterSet is one side (whitelist or blacklist) under construction.
type filterSet struct {
	// asSrc holds undirected filters applied to the source, asDst to the
	// destination; the request sends asSrc OR asDst.
	asSrc, asDst *flowpb.FlowFilter
	// namespaces from -n/-A (either side), --from-namespace, --to-namespace.
	ns, fromNs, toNs []string
	// used lists the filter flags given, for conflict checks.
	used []string
}

func (s *filterSet) init() {
	if s.asSrc == nil {
		s.asSrc, s.asDst = &flowpb.FlowFilter{}, &flowpb.FlowFilter{}
	}
}

// both applies fn to both filters (for from-/to- and undirected-less flags).
func (s *filterSet) both(fn func(*flowpb.FlowFilter)) {
	s.init()
	fn(s.asSrc)
	fn(s.asDst)
}

// split applies src to the source-side filter and dst to the destination-side one.
func (s *filterSet) split(src, dst func(*flowpb.FlowFilter)) {
	s.init()
	src(s.asSrc)
	dst(s.asDst)
}

// conflictGroups lists flags of which at most one may be used on one side.
var conflictGroups = [][]string{
	{"from-fqdn", "from-ip", "ip", "fqdn", "from-namespace", "namespace", "from-all-namespaces", "all-namespaces"},
	{"from-fqdn", "from-ip", "ip", "fqdn", "from-pod", "pod"},
	{"to-fqdn", "to-ip", "ip", "fqdn", "to-namespace", "namespace", "to-all-namespaces", "all-namespaces"},
	{"to-fqdn", "to-ip", "ip", "fqdn", "to-pod", "pod"},
	{"to-pod", "namespace", "all-namespaces"},
	{"from-pod", "namespace", "all-namespaces"},
	{"to-service", "namespace", "all-namespaces"},
	{"from-service", "namespace", "all-namespaces"},
	{"label", "from-label"},
	{"label", "to-label"},
	{"service", "from-service"},
	{"service", "to-service"},
	{"port", "to-port"},
	{"port", "from-port"},
	{"identity", "to-identity"},
	{"identity", "from-identity"},
	{"workload", "to-workload"},
	{"workload", "from-workload"},
	{"encrypted", "unencrypted"},
	{"reply", "not-reply"},
}

func (s *filterSet) markUsed(name string) error {
	if slices.Contains(s.used, name) {
		return nil
	}
	s.used = append(s.used, name)
	for _, g := range conflictGroups {
		if !slices.Contains(g, name) {
			continue
		}
		for _, other := range g {
			if other != name && slices.Contains(s.used, other) {
				return fmt.Errorf("filters --%s and --%s cannot be combined", other, name)
			}
		}
	}
	return nil
}

func nsOf(name string) string {
	if ns, _, ok := strings.Cut(name, "/"); ok {
		return ns
	}
	return ""
}

// checkNamespaces rejects pod or service names whose namespace contradicts a
// namespace flag, and services in another namespace than the pods.
func (s *filterSet) checkNamespaces() error {
	var errs []error
	conflict := func(nss []string, names []string) {
		for _, ns := range nss {
			for _, n := range names {
				if got := nsOf(n); got != "" && got != ns {
					errs = append(errs, fmt.Errorf("namespace conflict: %q is not in namespace %q", n, ns))
				}
			}
		}
	}
	podsVsServices := func(pods, svcs []string) {
		for _, p := range pods {
			pns := nsOf(p)
			if pns == "" {
				continue
			}
			for _, svc := range svcs {
				if nsOf(svc) != pns {
					errs = append(errs, fmt.Errorf("namespace conflict: service %q is not in the namespace of pod %q", svc, p))
				}
			}
		}
	}
	for _, ff := range []*flowpb.FlowFilter{s.asSrc, s.asDst} {
		if ff == nil {
			continue
		}
		conflict(s.ns, ff.SourcePod)
		conflict(s.ns, ff.SourceService)
		conflict(s.ns, ff.DestinationPod)
		conflict(s.ns, ff.DestinationService)
		conflict(s.fromNs, ff.SourcePod)
		conflict(s.fromNs, ff.SourceService)
		conflict(s.toNs, ff.DestinationPod)
		conflict(s.toNs, ff.DestinationService)
		podsVsServices(ff.SourcePod, ff.SourceService)
		podsVsServices(ff.DestinationPod, ff.DestinationService)
	}
	return errors.Join(errs...)
}

// withNamespaces prefixes bare names with each namespace ("ns/name"); names
// that already carry a namespace are kept.
func withNamespaces(names, nss []string) []string {
	if len(nss) == 0 || len(names) == 0 {
		return names
	}
	out := []string{}
	for _, n := range names {
		if strings.Contains(n, "/") {
			out = append(out, n)
			continue
		}
		for _, ns := range nss {
			out = append(out, ns+"/"+n)
		}
	}
	return out
}

func applySrcNamespaces(ff *flowpb.FlowFilter, nss []string) {
	if len(ff.SourcePod) == 0 && len(ff.SourceService) == 0 {
		ff.SourcePod = []string{""} // every pod of the namespace
	}
	ff.SourcePod = withNamespaces(ff.SourcePod, nss)
	ff.SourceService = withNamespaces(ff.SourceService, nss)
}

func applyDstNamespaces(ff *flowpb.FlowFilter, nss []string) {
	if len(ff.DestinationPod) == 0 && len(ff.DestinationService) == 0 {
		ff.DestinationPod = []string{""}
	}
	ff.DestinationPod = withNamespaces(ff.DestinationPod, nss)
	ff.DestinationService = withNamespaces(ff.DestinationService, nss)
}

// filters returns the side's FlowFilters (nil if no flag touched it).
func (s *filterSet) filters() []*flowpb.FlowFilter {
	if s == nil || (s.asSrc == nil && len(s.ns)+len(s.fromNs)+len(s.toNs) == 0) {
		return nil
	}
	src, dst := &flowpb.FlowFilter{}, &flowpb.FlowFilter{}
	if s.asSrc != nil {
		src = proto.CloneOf(s.asSrc)
		dst = proto.CloneOf(s.asDst)
	}
	if len(s.toNs) > 0 {
		applyDstNamespaces(src, s.toNs)
		applyDstNamespaces(dst, s.toNs)
	}
	if len(s.fromNs) > 0 {
		applySrcNamespaces(src, s.fromNs)
		applySrcNamespaces(dst, s.fromNs)
	}
	if len(s.ns) > 0 {
		applySrcNamespaces(src, s.ns)
		applyDstNamespaces(dst, s.ns)
	}
	if proto.Equal(src, dst) {
		return []*flowpb.FlowFilter{src}
	}
	return []*flowpb.FlowFilter{src, dst}
}

// filterBuilder receives every filter flag in command-line order.
type filterBuilder struct {
	include, exclude filterSet
	negateNext       bool
}

func (b *filterBuilder) set(f *filterFlag, val string) error {
	if f.name == "not" {
		if err := presence("not", val, "leave it out"); err != nil {
			return err
		}
		if b.negateNext {
			return errors.New("two --not in a row: each --not negates only the filter flag that follows it")
		}
		b.negateNext = true
		return nil
	}
	side := &b.include
	if b.negateNext {
		side = &b.exclude
		b.negateNext = false
	}
	if err := side.markUsed(f.name); err != nil {
		return err
	}
	if err := f.apply(side, val); err != nil {
		return err
	}
	return side.checkNamespaces()
}

// done reports a --not that no filter flag followed.
func (b *filterBuilder) done() error {
	if b.negateNext {
		return errors.New("--not at the end: --not must be followed by the filter flag it negates, e.g. --not --verdict DROPPED")
	}
	return nil
}

// filterFlag describes one filter flag.
type filterFlag struct {
	name, short, metavar, usage string
	// noOptDefVal lets the flag be given without a value.
	noOptDefVal string
	apply       func(s *filterSet, val string) error
}

// filterValue is the pflag.Value behind a filter flag: it forwards every
// occurrence, in order, to the builder.
type filterValue struct {
	b *filterBuilder
	f *filterFlag
}

func (v *filterValue) Set(val string) error { return v.b.set(v.f, val) }
func (v *filterValue) String() string       { return "" }
func (v *filterValue) Type() string {
	if v.f.metavar == "" {
		return "bool" // a flag without a value: help shows just --name
	}
	return v.f.metavar
}

// addFilterFlags registers every filter flag on fs, all feeding b.
func addFilterFlags(fs *pflag.FlagSet, b *filterBuilder) {
	for _, f := range filterFlags() {
		fl := fs.VarPF(&filterValue{b: b, f: f}, f.name, f.short, f.usage)
		fl.NoOptDefVal = f.noOptDefVal
	}
}

func noParse(v string) (string, error) { return v, nil }

func checked(check func(string) error) func(string) (string, error) {
	return func(v string) (string, error) { return v, check(v) }
}

// directional returns the three flags NAME (source or destination),
// from-NAME and to-NAME for one endpoint property.
func directional[T any](name, metavar, what string, parse func(string) (T, error),
	src, dst func(*flowpb.FlowFilter, T)) []*filterFlag {
	mk := func(flag, usage string, apply func(s *filterSet, v T)) *filterFlag {
		return &filterFlag{name: flag, metavar: metavar, usage: usage, apply: func(s *filterSet, val string) error {
			v, err := parse(val)
			if err != nil {
				return err
			}
			apply(s, v)
			return nil
		}}
	}
	return []*filterFlag{
		mk("from-"+name, "Show only flows from "+what, func(s *filterSet, v T) {
			s.both(func(f *flowpb.FlowFilter) { src(f, v) })
		}),
		mk(name, "Show only flows from or to "+what, func(s *filterSet, v T) {
			s.split(func(f *flowpb.FlowFilter) { src(f, v) }, func(f *flowpb.FlowFilter) { dst(f, v) })
		}),
		mk("to-"+name, "Show only flows to "+what, func(s *filterSet, v T) {
			s.both(func(f *flowpb.FlowFilter) { dst(f, v) })
		}),
	}
}

// plain returns a flag that sets one property of the flow, on both filters.
func plain[T any](name, metavar, usage string, parse func(string) (T, error), set func(*flowpb.FlowFilter, T)) *filterFlag {
	return &filterFlag{name: name, metavar: metavar, usage: usage, apply: func(s *filterSet, val string) error {
		v, err := parse(val)
		if err != nil {
			return err
		}
		s.both(func(f *flowpb.FlowFilter) { set(f, v) })
		return nil
	}}
}

// presence checks the value of a filter flag that takes none (--reply, -A,
// --not). hubble ignores such a value: its --reply=false shows the replies.
// loupe takes a true value, which means the same, and refuses a false one
// rather than silently send the opposite of what it says, or other filters
// than hubble would; instead says what to write.
func presence(name, val, instead string) error {
	on, err := strconv.ParseBool(val)
	if err != nil {
		return fmt.Errorf("--%s takes no value", name)
	}
	if !on {
		return fmt.Errorf("--%s=%s: hubble reads it as --%s; %s", name, val, name, instead)
	}
	return nil
}

// boolFlag is a filter flag given without a value (--reply).
func boolFlag(name, usage, opposite string, set func(*flowpb.FlowFilter)) *filterFlag {
	return &filterFlag{name: name, metavar: "", usage: usage, noOptDefVal: "true",
		apply: func(s *filterSet, val string) error {
			if err := presence(name, val, "for the opposite, use --"+opposite); err != nil {
				return err
			}
			s.both(set)
			return nil
		}}
}

func namespaceFlag(name, short, usage string, noOpt string, add func(s *filterSet, v string)) *filterFlag {
	return &filterFlag{name: name, short: short, metavar: "namespace", usage: usage, noOptDefVal: noOpt,
		apply: func(s *filterSet, val string) error {
			add(s, val)
			return nil
		}}
}

func allNamespacesFlag(name, short, usage string, add func(s *filterSet)) *filterFlag {
	return &filterFlag{name: name, short: short, usage: usage, noOptDefVal: "true",
		apply: func(s *filterSet, val string) error {
			if err := presence(name, val, "leave it out"); err != nil {
				return err
			}
			add(s)
			return nil
		}}
}

func filterFlags() []*filterFlag {
	var fl []*filterFlag
	fl = append(fl, &filterFlag{name: "not", noOptDefVal: "true",
		usage: "Negate the next filter flag: show flows that do NOT match it (e.g. --not --verdict FORWARDED)"})

	fl = append(fl, directional("pod", "[namespace/]pod", "the pods whose name starts with this prefix (namespace \"default\" if none is given)",
		noParse,
		func(f *flowpb.FlowFilter, v string) { f.SourcePod = append(f.SourcePod, v) },
		func(f *flowpb.FlowFilter, v string) { f.DestinationPod = append(f.DestinationPod, v) })...)
	fl = append(fl,
		namespaceFlag("from-namespace", "", "Show only flows from pods or services in this namespace", "",
			func(s *filterSet, v string) { s.fromNs = append(s.fromNs, v) }),
		namespaceFlag("namespace", "n", "Show only flows from or to pods or services in this namespace", "",
			func(s *filterSet, v string) { s.ns = append(s.ns, v) }),
		namespaceFlag("to-namespace", "", "Show only flows to pods or services in this namespace", "",
			func(s *filterSet, v string) { s.toNs = append(s.toNs, v) }),
		allNamespacesFlag("from-all-namespaces", "", "Show only flows from a pod in any namespace",
			func(s *filterSet) { s.fromNs = append(s.fromNs, "") }),
		allNamespacesFlag("all-namespaces", "A", "Show only flows from or to a pod in any namespace",
			func(s *filterSet) { s.ns = append(s.ns, "") }),
		allNamespacesFlag("to-all-namespaces", "", "Show only flows to a pod in any namespace",
			func(s *filterSet) { s.toNs = append(s.toNs, "") }),
	)
	fl = append(fl, directional("label", "selector", "endpoints with these labels (e.g. app=web, k8s:app=web, reserved:world)",
		noParse,
		func(f *flowpb.FlowFilter, v string) { f.SourceLabel = append(f.SourceLabel, v) },
		func(f *flowpb.FlowFilter, v string) { f.DestinationLabel = append(f.DestinationLabel, v) })...)
	fl[len(fl)-2].short = "l"
	fl = append(fl, directional("ip", "ip|cidr", "this IP address or CIDR (e.g. 10.0.0.1, 10.0.0.0/8)",
		checked(validateIP),
		func(f *flowpb.FlowFilter, v string) { f.SourceIp = append(f.SourceIp, v) },
		func(f *flowpb.FlowFilter, v string) { f.DestinationIp = append(f.DestinationIp, v) })...)
	fl = append(fl, directional("port", "port", "this L4 port (e.g. 80)",
		checked(validatePort),
		func(f *flowpb.FlowFilter, v string) { f.SourcePort = append(f.SourcePort, v) },
		func(f *flowpb.FlowFilter, v string) { f.DestinationPort = append(f.DestinationPort, v) })...)
	fl = append(fl, directional("service", "[namespace/]service", "the ClusterIP of services whose name starts with this prefix",
		noParse,
		func(f *flowpb.FlowFilter, v string) { f.SourceService = append(f.SourceService, v) },
		func(f *flowpb.FlowFilter, v string) { f.DestinationService = append(f.DestinationService, v) })...)
	fl = append(fl, directional("workload", "[kind/]name", "endpoints of this workload (e.g. Deployment/web, web, Deployment/)",
		func(v string) (*flowpb.Workload, error) { return parseWorkload(v), nil },
		func(f *flowpb.FlowFilter, v *flowpb.Workload) { f.SourceWorkload = append(f.SourceWorkload, v) },
		func(f *flowpb.FlowFilter, v *flowpb.Workload) {
			f.DestinationWorkload = append(f.DestinationWorkload, proto.CloneOf(v))
		})...)
	fl = append(fl, directional("identity", "identity", "endpoints with this security identity (a number or a reserved name such as world, host)",
		parseIdentity,
		func(f *flowpb.FlowFilter, v uint32) { f.SourceIdentity = append(f.SourceIdentity, v) },
		func(f *flowpb.FlowFilter, v uint32) { f.DestinationIdentity = append(f.DestinationIdentity, v) })...)
	fl = append(fl, directional("fqdn", "pattern", "this DNS name (e.g. \"*.example.com\")",
		noParse,
		func(f *flowpb.FlowFilter, v string) { f.SourceFqdn = append(f.SourceFqdn, v) },
		func(f *flowpb.FlowFilter, v string) { f.DestinationFqdn = append(f.DestinationFqdn, v) })...)
	fl = append(fl, directional("cluster", "name", "endpoints in this cluster",
		noParse,
		func(f *flowpb.FlowFilter, v string) { f.SourceClusterName = append(f.SourceClusterName, v) },
		func(f *flowpb.FlowFilter, v string) { f.DestinationClusterName = append(f.DestinationClusterName, v) })...)

	fl = append(fl,
		plain("protocol", "proto", "Show only flows of this L4/L7 protocol ("+strings.Join(knownProtocols, ", ")+")",
			checked(validateProtocol),
			func(f *flowpb.FlowFilter, v string) { f.Protocol = append(f.Protocol, v) }),
		plain("verdict", "verdict", "Show only flows with this verdict ("+strings.Join(verdictNames(), ", ")+")",
			parseVerdict,
			func(f *flowpb.FlowFilter, v flowpb.Verdict) { f.Verdict = append(f.Verdict, v) }),
		plain("drop-reason-desc", "reason", "Show only drops with this reason (e.g. POLICY_DENIED, INVALID_SOURCE_IP)",
			parseDropReason,
			func(f *flowpb.FlowFilter, v flowpb.DropReason) { f.DropReasonDesc = append(f.DropReasonDesc, v) }),
		plain("type", "type[:subtype]", "Show only events of this type. "+flowTypeHelp(),
			parseEventType,
			func(f *flowpb.FlowFilter, v *flowpb.EventTypeFilter) {
				f.EventType = append(f.EventType, proto.CloneOf(v))
			}),
		plain("traffic-direction", "direction", "Show only flows in this direction (ingress: to a pod, egress: from a pod)",
			parseTrafficDirection,
			func(f *flowpb.FlowFilter, v flowpb.TrafficDirection) {
				f.TrafficDirection = append(f.TrafficDirection, v)
			}),
		plain("tcp-flags", "flags", "Show only TCP flows with all of these flags set (e.g. syn, \"syn,ack\", fin, rst)",
			parseTCPFlags,
			func(f *flowpb.FlowFilter, v *flowpb.TCPFlags) { f.TcpFlags = append(f.TcpFlags, proto.CloneOf(v)) }),
		plain("node-name", "pattern", "Show only flows observed on nodes matching this name (e.g. \"node-*\", \"cluster/node-1\")",
			noParse,
			func(f *flowpb.FlowFilter, v string) { f.NodeName = append(f.NodeName, v) }),
		plain("node-label", "selector", "Show only flows observed on nodes with these labels",
			noParse,
			func(f *flowpb.FlowFilter, v string) { f.NodeLabels = append(f.NodeLabels, v) }),
		plain("uuid", "uuid", "Show only the flow with this unique identifier",
			noParse,
			func(f *flowpb.FlowFilter, v string) { f.Uuid = append(f.Uuid, v) }),
		plain("snat-ip", "ip|cidr", "Show only flows SNATed to this IP address or CIDR",
			checked(validateIP),
			func(f *flowpb.FlowFilter, v string) { f.SourceIpXlated = append(f.SourceIpXlated, v) }),
		plain("ip-version", "version", "Show only flows of this IP version (v4, v6, none)",
			parseIPVersion,
			func(f *flowpb.FlowFilter, v flowpb.IPVersion) { f.IpVersion = append(f.IpVersion, v) }),
		&filterFlag{name: "ipv4", short: "4", noOptDefVal: "true", usage: "Show only IPv4 flows",
			apply: func(s *filterSet, _ string) error {
				s.both(func(f *flowpb.FlowFilter) { f.IpVersion = append(f.IpVersion, flowpb.IPVersion_IPv4) })
				return nil
			}},
		&filterFlag{name: "ipv6", short: "6", noOptDefVal: "true", usage: "Show only IPv6 flows",
			apply: func(s *filterSet, _ string) error {
				s.both(func(f *flowpb.FlowFilter) { f.IpVersion = append(f.IpVersion, flowpb.IPVersion_IPv6) })
				return nil
			}},
		plain("interface", "name", "Show only flows observed on this network interface",
			noParse,
			func(f *flowpb.FlowFilter, v string) {
				f.Interface = append(f.Interface, &flowpb.NetworkInterface{Name: v})
			}),
		plain("http-status", "code", "Show only HTTP flows with this status code prefix (e.g. 404, 5+)",
			noParse,
			func(f *flowpb.FlowFilter, v string) { f.HttpStatusCode = append(f.HttpStatusCode, v) }),
		plain("http-method", "method", "Show only HTTP flows with this method (e.g. get, post)",
			noParse,
			func(f *flowpb.FlowFilter, v string) { f.HttpMethod = append(f.HttpMethod, v) }),
		plain("http-path", "regexp", "Show only HTTP flows whose path matches this regular expression",
			noParse,
			func(f *flowpb.FlowFilter, v string) { f.HttpPath = append(f.HttpPath, v) }),
		plain("http-url", "regexp", "Show only HTTP flows whose URL matches this regular expression",
			noParse,
			func(f *flowpb.FlowFilter, v string) { f.HttpUrl = append(f.HttpUrl, v) }),
		plain("http-header", "key:value", "Show only HTTP flows with this header",
			func(v string) (*flowpb.HTTPHeader, error) {
				k, val, ok := strings.Cut(v, ":")
				if !ok {
					return nil, fmt.Errorf("invalid HTTP header %q: want key:value", v)
				}
				return &flowpb.HTTPHeader{Key: k, Value: val}, nil
			},
			func(f *flowpb.FlowFilter, v *flowpb.HTTPHeader) {
				f.HttpHeader = append(f.HttpHeader, proto.CloneOf(v))
			}),
		plain("trace-id", "id", "Show only flows with this trace ID",
			noParse,
			func(f *flowpb.FlowFilter, v string) { f.TraceId = append(f.TraceId, v) }),
		plain("ip-trace-id", "id", "Show only flows with this IP trace ID",
			func(v string) (uint64, error) {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil || n == 0 {
					return 0, fmt.Errorf("invalid IP trace ID %q: want a number greater than 0", v)
				}
				return n, nil
			},
			func(f *flowpb.FlowFilter, v uint64) { f.IpTraceId = append(f.IpTraceId, v) }),
		plain("cel-expression", "expr", "Show only flows matching this CEL expression",
			noParse,
			func(f *flowpb.FlowFilter, v string) {
				if f.Experimental == nil {
					f.Experimental = &flowpb.FlowFilter_Experimental{}
				}
				f.Experimental.CelExpression = append(f.Experimental.CelExpression, v)
			}),
		boolFlag("reply", "Show only reply flows", "not-reply",
			func(f *flowpb.FlowFilter) { f.Reply = append(f.Reply, true) }),
		boolFlag("not-reply", "Show only non-reply flows", "reply",
			func(f *flowpb.FlowFilter) { f.Reply = append(f.Reply, false) }),
		boolFlag("encrypted", "Show only encrypted flows (WireGuard/IPsec)", "unencrypted",
			func(f *flowpb.FlowFilter) { f.Encrypted = append(f.Encrypted, true) }),
		boolFlag("unencrypted", "Show only unencrypted flows", "encrypted",
			func(f *flowpb.FlowFilter) { f.Encrypted = append(f.Encrypted, false) }),
	)
	fl[slices.IndexFunc(fl, func(f *filterFlag) bool { return f.name == "type" })].short = "t"
	return fl
}

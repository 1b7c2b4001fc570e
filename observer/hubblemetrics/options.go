package hubblemetrics

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// Spec is one metric family of the --metrics value: its name and its
// options, in the order given.
type Spec struct {
	Name    string
	Options []Option
}

// Option is one ";"-separated option of a family: a key and the values
// after "=" ("|"-separated for contexts, ","-separated for labelsContext).
// Keys compare case-insensitively, as Hubble's.
type Option struct {
	Key    string
	Values []string
}

// Default is the set the agent enables without --metrics: the L3/L4
// families of the set Cilium's metrics guide deploys Hubble with (dns and
// httpV2 wait for L7 flows), without contexts, so its cardinality is a few
// series per protocol, verdict and reason. Hubble itself enables none
// unless told; `--metrics ""` does the same here.
const Default = "flow drop tcp icmp port-distribution"

// Dashboards is the set that makes the four Grafana dashboards of
// Cilium's Helm chart work: source and destination as namespace/workload
// (namespace/pod for a bare pod, the reserved identity outside pods) and
// the namespaces as labels of their own, which the network overview
// filters on. The lab and install/kubernetes use it.
const Dashboards = "flow:" + dashboardContexts +
	" drop:" + dashboardContexts +
	" tcp:" + dashboardContexts +
	" icmp:" + dashboardContexts +
	" port-distribution" +
	" policy:" + dashboardContexts +
	" flows-to-world:" + dashboardContexts +
	" dns:" + dashboardContexts

const dashboardContexts = "sourceContext=workload|pod|reserved-identity;destinationContext=workload|pod|reserved-identity;labelsContext=source_namespace,destination_namespace"

// notYet are Hubble's families loupe has no flows for yet: a clear error
// beats a series that never moves.
var notYet = map[string]string{
	"httpV2": "is Hubble's second HTTP family; loupe serves http (v1)",
	"kafka":  "needs L7 Kafka flows, which loupe does not produce",
	"sctp":   "needs SCTP chunk types, which loupe's datapath does not report",
}

// Parse reads a --metrics value in the syntax of Hubble's --hubble-metrics:
// families separated by spaces, each "name" or "name:option;option", an
// option "key=value". Commas also separate families, as in the Helm
// chart's hubble.metrics.enabled list, except inside a labelsContext list
// ("flow:labelsContext=source_ip,source_namespace,drop" is flow with two
// labels, then drop): a comma starts a new family only when a family name
// follows it. Every name, key and value is checked here, so a typo stops
// the agent at start.
func Parse(s string) ([]Spec, error) {
	specs := []Spec{}
	seen := map[string]bool{}
	for _, entry := range splitEntries(s) {
		sp, err := parseEntry(entry)
		if err != nil {
			return nil, err
		}
		if seen[sp.Name] {
			return nil, fmt.Errorf("metric %q: given twice", sp.Name)
		}
		seen[sp.Name] = true
		specs = append(specs, sp)
	}
	return specs, nil
}

// MustParse is Parse for the constants of this package.
func MustParse(s string) []Spec {
	sp, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sp
}

// splitEntries cuts s at whitespace, and at commas followed by a family
// name (known or not yet supported).
func splitEntries(s string) []string {
	var out []string
	for _, field := range strings.FieldsFunc(s, unicode.IsSpace) {
		parts := strings.Split(field, ",")
		cur := parts[0]
		for _, p := range parts[1:] {
			name, _, _ := strings.Cut(p, ":")
			if isFamilyName(name) {
				out = append(out, cur)
				cur = p
				continue
			}
			cur += "," + p
		}
		out = append(out, cur)
	}
	return out
}

func isFamilyName(name string) bool {
	_, ok := families[name]
	_, later := notYet[name]
	return ok || later
}

func parseEntry(entry string) (Spec, error) {
	name, opts, hasOpts := strings.Cut(entry, ":")
	if name == "" {
		return Spec{}, fmt.Errorf("metric %q: empty name", entry)
	}
	if why, ok := notYet[name]; ok {
		return Spec{}, fmt.Errorf("metric %q: %s", name, why)
	}
	fam, ok := families[name]
	if !ok {
		return Spec{}, fmt.Errorf("metric %q does not exist; known: %s", name, strings.Join(FamilyNames(), ", "))
	}
	sp := Spec{Name: name}
	if !hasOpts {
		return sp, nil
	}
	keys := map[string]bool{}
	for raw := range strings.SplitSeq(opts, ";") {
		if raw == "" {
			continue // Hubble skips empty options ("flow:;" is flow)
		}
		key, val, hasVal := strings.Cut(raw, "=")
		lk := strings.ToLower(key)
		if keys[lk] {
			return Spec{}, fmt.Errorf("metric %q: option %q given twice", name, key)
		}
		keys[lk] = true
		o := Option{Key: key}
		switch {
		case lk == "labelscontext":
			o.Values = splitNonEmpty(val, ",")
			for _, l := range o.Values {
				if !slices.Contains(contextLabelNames, l) {
					return Spec{}, fmt.Errorf("metric %q: labelsContext %q is not one of %s", name, l, strings.Join(contextLabelNames, ", "))
				}
			}
		case isContextKey(lk):
			o.Values = splitNonEmpty(val, "|")
			for _, id := range o.Values {
				if _, ok := contextIDs[strings.ToLower(id)]; !ok {
					return Spec{}, fmt.Errorf("metric %q: %s %q is not one of %s", name, key, id, strings.Join(contextIDNames(), ", "))
				}
			}
		case slices.Contains(fam.flags, lk):
			if hasVal {
				return Spec{}, fmt.Errorf("metric %q: option %q takes no value", name, key)
			}
			sp.Options = append(sp.Options, o)
			continue
		default:
			return Spec{}, fmt.Errorf("metric %q: unknown option %q", name, key)
		}
		if len(o.Values) == 0 {
			return Spec{}, fmt.Errorf("metric %q: option %q needs a value", name, key)
		}
		sp.Options = append(sp.Options, o)
	}
	return sp, nil
}

func splitNonEmpty(s, sep string) []string {
	var out []string
	for v := range strings.SplitSeq(s, sep) {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// String writes specs back in Hubble's space-separated form; Parse reads
// it to the same specs.
func String(specs []Spec) string {
	var b strings.Builder
	for i, sp := range specs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(sp.Name)
		for j, o := range sp.Options {
			if j == 0 {
				b.WriteByte(':')
			} else {
				b.WriteByte(';')
			}
			b.WriteString(o.Key)
			if o.Values == nil {
				continue
			}
			sep := "|"
			if strings.EqualFold(o.Key, "labelsContext") {
				sep = ","
			}
			b.WriteByte('=')
			b.WriteString(strings.Join(o.Values, sep))
		}
	}
	return b.String()
}

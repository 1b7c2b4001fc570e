// Package filters builds flow filters with Hubble's semantics: each
// FlowFilter is parsed and validated once into a closure; inside one
// FlowFilter the fields AND and the values of one field OR; a whitelist
// matches if any of its filters does, a blacklist excludes a flow if any of
// its filters matches.
package filters

import (
	"fmt"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// FilterFunc reports whether a flow matches.
type FilterFunc func(f *flowpb.Flow) bool

// FilterFuncs is a list of filters, one per FlowFilter.
type FilterFuncs []FilterFunc

// MatchOne reports whether any filter matches (true for an empty list).
func (fs FilterFuncs) MatchOne(f *flowpb.Flow) bool {
	if len(fs) == 0 {
		return true
	}
	for _, fn := range fs {
		if fn(f) {
			return true
		}
	}
	return false
}

// MatchNone reports whether no filter matches (true for an empty list).
func (fs FilterFuncs) MatchNone(f *flowpb.Flow) bool {
	for _, fn := range fs {
		if fn(f) {
			return false
		}
	}
	return true
}

// Apply is the GetFlows rule: whitelist OR, blacklist NOR.
func Apply(whitelist, blacklist FilterFuncs, f *flowpb.Flow) bool {
	return whitelist.MatchOne(f) && blacklist.MatchNone(f)
}

// FieldError names the FlowFilter field that could not be built.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("invalid %s filter: %v", e.Field, e.Err) }
func (e *FieldError) Unwrap() error { return e.Err }

// builder turns one field of a FlowFilter into zero or more conditions.
type builder func(ff *flowpb.FlowFilter) ([]FilterFunc, error)

// builders, one per field (or pair of source/destination fields), each in
// its own file.
var builders = []builder{
	buildUUID,
	buildIP, buildIPVersion,
	buildPod, buildService, buildWorkload, buildLabels, buildIdentity,
	buildFQDN, buildClusterName,
	buildVerdict, buildDropReason, buildEventType, buildTrafficDirection,
	buildInterface,
	buildProtocol, buildPort, buildTCPFlags, buildReply,
	buildNodeName, buildNodeLabels,
	buildHTTP, buildDNS,
	buildTracing, buildEncrypted,
	buildExperimental,
}

// Build turns one FlowFilter into the AND of its fields.
func Build(ff *flowpb.FlowFilter) (FilterFunc, error) {
	var all []FilterFunc
	for _, b := range builders {
		fs, err := b(ff)
		if err != nil {
			return nil, err
		}
		all = append(all, fs...)
	}
	switch len(all) {
	case 0:
		return func(*flowpb.Flow) bool { return true }, nil
	case 1:
		return all[0], nil
	}
	return func(f *flowpb.Flow) bool {
		for _, fn := range all {
			if !fn(f) {
				return false
			}
		}
		return true
	}, nil
}

// BuildList builds every filter of a whitelist or blacklist.
func BuildList(ffs []*flowpb.FlowFilter) (FilterFuncs, error) {
	out := make(FilterFuncs, 0, len(ffs))
	for _, ff := range ffs {
		fn, err := Build(ff)
		if err != nil {
			return nil, err
		}
		out = append(out, fn)
	}
	return out, nil
}

func fieldErr(field string, err error) error { return &FieldError{Field: field, Err: err} }

func fieldErrf(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

package filters

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// CEL expressions are an optional Hubble feature; refuse them rather than
// silently matching everything.
func buildExperimental(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	if len(ff.GetExperimental().GetCelExpression()) > 0 {
		return nil, fieldErrf("experimental.cel_expression", "not supported by loupe")
	}
	return nil, nil
}

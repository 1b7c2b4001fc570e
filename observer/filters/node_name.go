package filters

import (
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// defaultClusterName is what node names without a cluster are matched as.
const defaultClusterName = "default"

func buildNodeName(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	pats := ff.GetNodeName()
	if len(pats) == 0 {
		return nil, nil
	}
	re, err := compileNodeNamePatterns(pats)
	if err != nil {
		return nil, fieldErr("node_name", err)
	}
	return []FilterFunc{func(f *flowpb.Flow) bool {
		n := f.GetNodeName()
		if n == "" {
			return false
		}
		if !strings.Contains(n, "/") {
			n = defaultClusterName + "/" + n
		}
		return re.MatchString(n)
	}}, nil
}

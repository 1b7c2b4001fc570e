package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/internal/testtools"
)

// TestPrivilegedServiceFlowsStockHubble: a connection through the demo
// api Service's ClusterIP shows the Service and the backend pod, and the
// stock hubble CLI's --to-service and --from-service select it.
func TestPrivilegedServiceFlowsStockHubble(t *testing.T) {
	c := needLab(t)
	bin := testtools.Hubble(t, "hubble")
	api := c.pod(t, "demo/api")
	c.mustLab(t, "probe", "--from", "demo/frontend", "--to", "svc/demo/api", "--port", "8080")
	agent := c.agent(t, c.pod(t, "demo/frontend").Node)
	check := func(filter string, want func(*flowpb.Flow) bool) {
		t.Helper()
		if err := poll(10*time.Second, 300*time.Millisecond, func() error {
			out, errs, err := hubble(t, bin, "observe", "--server", agent, "-o", "json", "--last", "200", filter, "demo/api")
			if err != nil {
				return fmt.Errorf("hubble observe %s: %v\n%s", filter, err, errs)
			}
			fs := flowsOf(parseFlows(t, out))
			for _, f := range fs {
				if !want(f) {
					return fmt.Errorf("hubble observe %s demo/api returned %v", filter, f)
				}
			}
			if len(fs) == 0 {
				return fmt.Errorf("hubble observe %s demo/api: no flows", filter)
			}
			return nil
		}); err != nil {
			t.Fatalf("%v\n%s", err, c.logs())
		}
	}
	check("--to-service", func(f *flowpb.Flow) bool {
		s := f.GetDestinationService()
		return s.GetNamespace() == "demo" && s.GetName() == "api" &&
			f.GetIP().GetDestination() == api.IP && strings.HasSuffix(f.GetDestination().GetPodName(), "api")
	})
	check("--from-service", func(f *flowpb.Flow) bool {
		return f.GetSourceService().GetName() == "api" && f.GetIP().GetSource() == api.IP
	})
}

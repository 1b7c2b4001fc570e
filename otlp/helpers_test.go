package otlp

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loupe-project/loupe/internal/promtext"
)

// gatherText returns the exporter's metrics in the text format, one
// sample a line.
func gatherText(t testing.TB, e *Exporter) []string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.Collectors()...)
	text, err := promtext.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

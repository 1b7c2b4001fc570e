package hubblemetrics

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // String of the result
	}{
		{"", ""},
		{"flow drop", "flow drop"},
		{"  flow\tdrop\n", "flow drop"},
		{"flow,drop,tcp", "flow drop tcp"},
		{"drop:sourceContext=namespace;destinationContext=namespace,tcp,flow", "drop:sourceContext=namespace;destinationContext=namespace tcp flow"},
		{"flow:labelsContext=source_ip,source_namespace,drop", "flow:labelsContext=source_ip,source_namespace drop"},
		{"flow:sourceContext=workload|pod|reserved-identity;;", "flow:sourceContext=workload|pod|reserved-identity"},
		{"flows-to-world:any-drop;port;syn-only;sourceContext=namespace", "flows-to-world:any-drop;port;syn-only;sourceContext=namespace"},
		{"policy:SourceContext=Namespace", "policy:SourceContext=Namespace"},
		{Default, Default},
	} {
		got, err := Parse(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if s := String(got); s != c.want {
			t.Errorf("%q: got %q, want %q", c.in, s, c.want)
		}
		again, err := Parse(String(got))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("%q: String does not read back: %v %v", c.in, again, err)
		}
	}
	if _, err := Parse(Dashboards); err != nil {
		t.Errorf("Dashboards: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"flows", `metric "flows" does not exist`},
		{"flow flow", `"flow": given twice`},
		{"flow:sourceContext=nope", `sourceContext "nope" is not one of`},
		{"flow:sourceContext=", `option "sourceContext" needs a value`},
		{"flow:sourceContext", `option "sourceContext" needs a value`},
		{"flow:labelsContext=source_namespace,pod", `labelsContext "pod" is not one of`},
		{"flow:labelsContext=source_pods", `labelsContext "source_pods" is not one of`},
		{"flow:colour=red", `unknown option "colour"`},
		{"flow:any-drop", `unknown option "any-drop"`},
		{"flows-to-world:port=80", `option "port" takes no value`},
		{"flow:sourceContext=pod;sourcecontext=ip", `given twice`},
		{"dns:query=x", `option "query" takes no value`},
		{"flow,httpV2", `loupe serves http (v1)`},
		{":x", "empty name"},
	} {
		_, err := Parse(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error with %q", c.in, err, c.want)
		}
	}
}

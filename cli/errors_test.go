package cli

import (
	"strings"
	"testing"
)

// TestObserveBadFlags checks that a bad flag value fails before any request,
// with an error that names the flag and what it accepts.
func TestObserveBadFlags(t *testing.T) {
	fake := &fakeObserver{}
	addr := startFake(t, fake)
	cases := []struct {
		args []string
		want []string // substrings of the error
	}{
		{[]string{"--verdict", "FOO"}, []string{`"--verdict"`, `unknown verdict "FOO"`, "FORWARDED, DROPPED"}},
		{[]string{"--type", "bogus"}, []string{`--type" flag`, `unknown event type "bogus"`, "policy-verdict"}},
		{[]string{"--type", "trace:to-nowhere"}, []string{`unknown sub-type "to-nowhere"`, "to-endpoint"}},
		{[]string{"--type", "drop:x"}, []string{`unknown sub-type "x" of "drop": want a number`}},
		{[]string{"--tcp-flags", "SYN,BOGUS"}, []string{`"--tcp-flags"`, `unknown TCP flag "BOGUS"`}},
		{[]string{"--ip", "300.1.1.1"}, []string{`"--ip"`, `invalid IP address "300.1.1.1"`}},
		{[]string{"--to-ip", "10.0.0.0/33"}, []string{`invalid CIDR "10.0.0.0/33"`}},
		{[]string{"--port", "70000"}, []string{`"--port"`, `invalid port "70000"`, "0 to 65535"}},
		{[]string{"--protocol", "tpc"}, []string{`unknown protocol "tpc"`, "tcp, udp"}},
		{[]string{"--traffic-direction", "up"}, []string{`unknown traffic direction "up": want ingress or egress`}},
		{[]string{"--identity", "nope"}, []string{`invalid identity "nope"`, "world"}},
		{[]string{"--drop-reason-desc", "NOPE"}, []string{`unknown drop reason "NOPE"`, "POLICY_DENIED"}},
		{[]string{"--since", "yesterday"}, []string{"--since", `invalid time "yesterday"`, "5m"}},
		{[]string{"--until", "2024-13-01"}, []string{"--until", `invalid time`}},
		{[]string{"--http-header", "nocolon"}, []string{"want key:value"}},
		{[]string{"--ip-trace-id", "0"}, []string{"greater than 0"}},
		{[]string{"--not"}, []string{"--not at the end"}},
		{[]string{"--not", "--not", "--pod", "a"}, []string{"two --not in a row"}},
		// hubble ignores the value of a flag that takes none: its
		// --reply=false shows the replies. loupe refuses a false value.
		{[]string{"--reply=false"}, []string{"--reply=false: hubble reads it as --reply", "use --not-reply"}},
		{[]string{"--unencrypted=0"}, []string{"--unencrypted=0", "use --encrypted"}},
		{[]string{"-A=false"}, []string{"--all-namespaces=false", "leave it out"}},
		{[]string{"--not=false", "--pod", "a"}, []string{"--not=false", "leave it out"}},
		{[]string{"--reply=yes"}, []string{"--reply takes no value"}},
		{[]string{"--label", "a=b", "--from-label", "c=d"}, []string{"filters --label and --from-label cannot be combined"}},
		{[]string{"--to-pod", "a", "-n", "b"}, []string{"--to-pod and --namespace cannot be combined"}},
		{[]string{"--ip", "1.1.1.1", "--from-ip", "2.2.2.2"}, []string{"cannot be combined"}},
		{[]string{"--pod", "ns1/web", "-n", "ns2"}, []string{`"ns1/web" is not in namespace "ns2"`}},
		{[]string{"--from-pod", "ns1/web", "--from-service", "ns2/db"}, []string{`service "ns2/db" is not in the namespace of pod "ns1/web"`}},
		{[]string{"--first", "1", "--last", "1"}, []string{"--first and --last cannot be combined"}},
		{[]string{"--first", "1", "-f"}, []string{"--first and --follow"}},
		{[]string{"--last", "1", "--all"}, []string{"--last and --all"}},
		{[]string{"-o", "yaml"}, []string{`unknown output format "yaml"`, "compact, dict, json"}},
		{[]string{"-o", "table", "-f"}, []string{"-o table cannot be combined with --follow"}},
		{[]string{"--field-mask", "time"}, []string{"--field-mask works only with -o json"}},
		{[]string{"-o", "json", "--field-mask", "nope"}, []string{"invalid --field-mask"}},
		{[]string{"--color", "sometimes"}, []string{`unknown --color "sometimes"`}},
		{[]string{"--time-format", "Julian"}, []string{`unknown time format "Julian"`}},
		{[]string{"--allowlist", "{nope"}, []string{"invalid --allowlist", "want a FlowFilter as JSON"}},
		{[]string{"extra-arg"}, []string{"unknown command"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, err := run(t, NewObserveCommand(), append([]string{"--server", addr}, tc.args...)...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.reqs) != 0 {
		t.Errorf("bad flags still sent %d requests", len(fake.reqs))
	}
}

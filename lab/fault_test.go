package lab

import (
	"slices"
	"strings"
	"testing"
)

func TestFaultRuleArgs(t *testing.T) {
	for _, tc := range []struct {
		rule FaultRule
		want string
		err  string
	}{
		{FaultRule{}, "-m comment --comment loupe-lab-fault -j DROP", ""},
		{FaultRule{Proto: "UDP", Port: 81}, "-p udp --dport 81 -m comment --comment loupe-lab-fault -j DROP", ""},
		{FaultRule{Proto: "tcp", Percent: 5}, "-p tcp -m statistic --mode random --probability 0.05 -m comment --comment loupe-lab-fault -j DROP", ""},
		{FaultRule{Port: 81}, "", "needs --protocol"},
		{FaultRule{Proto: "sctp"}, "", "want tcp or udp"},
		{FaultRule{Proto: "tcp", Port: 70000}, "", "want 1-65535"},
		{FaultRule{Percent: 150}, "", "want 0-100"},
	} {
		got, err := tc.rule.args()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: error %v, want %q", tc.rule, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, strings.Fields(tc.want)) {
			t.Errorf("%+v: %q, %v; want %q", tc.rule, got, err, tc.want)
		}
	}
}

package ipam

import (
	"bytes"
	"testing"
)

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"version":1,"cidrs":["10.0.0.0/24","fd00::/64"],"lastIPv4":"10.0.0.3","allocations":[{"containerID":"a","ifname":"eth0","ipv4":"10.0.0.2","ipv6":"fd00::2","podNamespace":"ns","podName":"p"}]}`))
	f.Add([]byte(`{"version":1,"allocations":[]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"allocations":[{"containerID":"a","ifname":"eth0","ipv4":"fd00::2"}]}`))
	f.Add([]byte(`{"version":1} {}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(b)
		if err != nil {
			return
		}
		// What parses re-encodes to something that parses to the same state.
		enc, err := st.Marshal()
		if err != nil {
			t.Fatalf("marshal parsed state: %v", err)
		}
		st2, err := ParseState(enc)
		if err != nil {
			t.Fatalf("re-parse %q: %v", enc, err)
		}
		enc2, err := st2.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n%s\n%s", enc, enc2)
		}
	})
}

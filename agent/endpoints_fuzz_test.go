package agent

import (
	"bytes"
	"testing"
)

func FuzzParseEndpointsState(f *testing.F) {
	f.Add([]byte(`{"version":1,"nextID":3,"endpoints":[{"containerID":"c1","ifname":"eth0","hostIfname":"lxc1","hostIfindex":7,"ipv4":"10.0.0.2","ipv6":"fd00::2","mac":"02:00:00:00:00:01","id":1,"identity":300}]}`))
	f.Add([]byte(`{"version":1,"endpoints":[]}`))
	f.Add([]byte(`{"version":1,"endpoints":[{"containerID":"c1","ifname":"eth0","hostIfname":"lxc1","hostIfindex":7,"ipv4":"10.0.0.2","id":1},{"containerID":"c2","ifname":"eth0","hostIfname":"lxc2","hostIfindex":7,"ipv4":"10.0.0.3","id":2}]}`))
	f.Add([]byte(`{"version":1,"endpoints":[{"containerID":"-x","ifname":"eth0"}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseEndpointsState(b)
		if err != nil {
			return
		}
		enc, err := st.marshal()
		if err != nil {
			t.Fatalf("marshal parsed state: %v", err)
		}
		st2, err := parseEndpointsState(enc)
		if err != nil {
			t.Fatalf("re-parse %q: %v", enc, err)
		}
		enc2, _ := st2.marshal()
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n%s\n%s", enc, enc2)
		}
	})
}

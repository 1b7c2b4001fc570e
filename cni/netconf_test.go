package cni

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseNetConf(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		code  uint   // 0: valid
		msg   string // substring of the error message
		check func(t *testing.T, c *NetConf)
	}{
		{
			name: "minimal gets defaults",
			in:   `{"cniVersion":"1.1.0","name":"loupe","type":"loupe-cni"}`,
			check: func(t *testing.T, c *NetConf) {
				if c.AgentSocket != DefaultAgentSocket || c.MTU != DefaultMTU || c.XDP != "" || c.AgentWaitSeconds != DefaultAgentWaitSeconds {
					t.Errorf("defaults: got socket %q mtu %d xdp %q agent wait %d", c.AgentSocket, c.MTU, c.XDP, c.AgentWaitSeconds)
				}
			},
		},
		{
			name: "full",
			in: `{"cniVersion":"1.0.0","name":"loupe","type":"loupe-cni","agentSocket":"/run/x/../loupe/a.sock",
				"mtu":9000,"xdp":"native","logFile":"/var/log/loupe-cni.log","logLevel":"debug",
				"dns":{"nameservers":["10.0.0.10"]},"capabilities":{"portMappings":true},"runtimeConfig":{"x":1}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.AgentSocket != "/run/loupe/a.sock" || c.MTU != 9000 || c.XDP != "native" ||
					c.LogFile != "/var/log/loupe-cni.log" || c.LogLevel != "debug" || len(c.DNS.Nameservers) != 1 {
					t.Errorf("got %+v", c)
				}
			},
		},
		{name: "0.4.0 accepted", in: `{"cniVersion":"0.4.0","name":"n","type":"loupe-cni"}`},
		{name: "xdp generic", in: `{"cniVersion":"1.1.0","name":"n","type":"t","xdp":"generic"}`},
		{name: "xdp off", in: `{"cniVersion":"1.1.0","name":"n","type":"t","xdp":"off"}`},
		{name: "agent wait 0", in: `{"cniVersion":"1.1.0","name":"n","type":"t","agentWaitSeconds":0}`, check: func(t *testing.T, c *NetConf) {
			if c.AgentWaitSeconds != 0 {
				t.Errorf("agent wait %d, want 0 (no wait), not the default", c.AgentWaitSeconds)
			}
		}},
		{name: "agent wait max", in: `{"cniVersion":"1.1.0","name":"n","type":"t","agentWaitSeconds":90}`},
		{name: "agent wait negative", in: `{"cniVersion":"1.1.0","name":"n","type":"t","agentWaitSeconds":-1}`, code: 7, msg: "agentWaitSeconds: must be between 0 and 90, got -1"},
		{name: "agent wait too long", in: `{"cniVersion":"1.1.0","name":"n","type":"t","agentWaitSeconds":91}`, code: 7, msg: "agentWaitSeconds:"},
		{name: "agent wait string", in: `{"cniVersion":"1.1.0","name":"n","type":"t","agentWaitSeconds":"30s"}`, code: 7, msg: "agentWaitSeconds: must be a number"},
		{name: "mtu lower bound", in: `{"cniVersion":"1.1.0","name":"n","type":"t","mtu":576}`},
		{name: "mtu upper bound", in: `{"cniVersion":"1.1.0","name":"n","type":"t","mtu":65535}`},
		{
			name: "gc attachments",
			in:   `{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
			check: func(t *testing.T, c *NetConf) {
				if len(c.ValidAttachments) != 1 || c.ValidAttachments[0].ContainerID != "a" {
					t.Errorf("attachments: %+v", c.ValidAttachments)
				}
			},
		},

		{name: "mtu too small", in: `{"cniVersion":"1.1.0","name":"n","type":"t","mtu":575}`, code: 7, msg: "mtu: must be between 576 and 65535"},
		{name: "mtu zero", in: `{"cniVersion":"1.1.0","name":"n","type":"t","mtu":0}`, code: 7, msg: "mtu: must be between"},
		{name: "mtu too big", in: `{"cniVersion":"1.1.0","name":"n","type":"t","mtu":65536}`, code: 7, msg: "mtu: must be between"},
		{name: "mtu string", in: `{"cniVersion":"1.1.0","name":"n","type":"t","mtu":"1500"}`, code: 7, msg: "mtu: must be a number"},
		{name: "mtu fraction", in: `{"cniVersion":"1.1.0","name":"n","type":"t","mtu":1500.5}`, code: 7, msg: "mtu: must be a number"},
		{name: "xdp bad", in: `{"cniVersion":"1.1.0","name":"n","type":"t","xdp":"fast"}`, code: 7, msg: `xdp: must be one of native, generic, off, got "fast"`},
		{name: "xdp empty", in: `{"cniVersion":"1.1.0","name":"n","type":"t","xdp":""}`, code: 7, msg: "xdp:"},
		{name: "xdp number", in: `{"cniVersion":"1.1.0","name":"n","type":"t","xdp":1}`, code: 7, msg: "xdp: must be a string"},
		{name: "socket relative", in: `{"cniVersion":"1.1.0","name":"n","type":"t","agentSocket":"agent.sock"}`, code: 7, msg: "agentSocket: must be an absolute path"},
		{name: "socket empty", in: `{"cniVersion":"1.1.0","name":"n","type":"t","agentSocket":""}`, code: 7, msg: "agentSocket: must not be empty"},
		{name: "socket too long", in: `{"cniVersion":"1.1.0","name":"n","type":"t","agentSocket":"/` + strings.Repeat("a", 120) + `"}`, code: 7, msg: "agentSocket: path longer"},
		{name: "log file relative", in: `{"cniVersion":"1.1.0","name":"n","type":"t","logFile":"x.log"}`, code: 7, msg: "logFile:"},
		{name: "log level bad", in: `{"cniVersion":"1.1.0","name":"n","type":"t","logLevel":"loud"}`, code: 7, msg: "logLevel:"},
		{name: "no name", in: `{"cniVersion":"1.1.0","type":"t"}`, code: 7, msg: "name: required"},
		{name: "no type", in: `{"cniVersion":"1.1.0","name":"n"}`, code: 7, msg: "type: required"},
		{name: "no version", in: `{"name":"n","type":"t"}`, code: 7, msg: "cniVersion: required"},
		{name: "version too old", in: `{"cniVersion":"0.3.1","name":"n","type":"t"}`, code: 1, msg: `cniVersion: "0.3.1" is not supported`},
		{name: "version unknown", in: `{"cniVersion":"2.0.0","name":"n","type":"t"}`, code: 1, msg: "cniVersion:"},
		{name: "gc attachment without ifname", in: `{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"a"}]}`, code: 7, msg: "cni.dev/valid-attachments[0]"},
		{name: "not json", in: `{"cniVersion":`, code: 6, msg: "netconf:"},
		{name: "array", in: `[1,2]`, code: 7, msg: "netconf: must be a JSON object"},
		{name: "trailing", in: `{"cniVersion":"1.1.0","name":"n","type":"t"} {}`, code: 6, msg: "trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseNetConf([]byte(tt.in))
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("want CNI error %d, got %v", tt.code, err)
			}
			if te.Code != tt.code || !strings.Contains(te.Msg, tt.msg) {
				t.Fatalf("want code %d with %q, got code %d %q", tt.code, tt.msg, te.Code, te.Msg)
			}
		})
	}
}

func TestParseK8sArgs(t *testing.T) {
	a, err := ParseK8sArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1")
	if err != nil {
		t.Fatal(err)
	}
	if a.K8S_POD_NAMESPACE != "ns1" || a.K8S_POD_NAME != "web-0" {
		t.Fatalf("got %+v", a)
	}
	// Unknown keys are fine without IgnoreUnknown too: kubelet's set grows.
	if _, err := ParseK8sArgs("K8S_POD_UID=u-1;K8S_POD_NAME=p"); err != nil {
		t.Fatalf("unknown arg: %v", err)
	}
	if a, err := ParseK8sArgs(""); err != nil || a.K8S_POD_NAME != "" {
		t.Fatalf("empty: %+v %v", a, err)
	}
	_, err = ParseK8sArgs("K8S_POD_NAME")
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrDecodingFailure {
		t.Fatalf("malformed: want code 6, got %v", err)
	}
}

func TestHostIfname(t *testing.T) {
	a := HostIfname("0123456789abcdef", "eth0")
	if len(a) != 14 || !strings.HasPrefix(a, "lxc") || !isLoupeHostIfname(a) {
		t.Fatalf("bad name %q", a)
	}
	if a != HostIfname("0123456789abcdef", "eth0") {
		t.Fatal("not deterministic")
	}
	if a == HostIfname("0123456789abcdef", "eth1") || a == HostIfname("0123456789abcdeg", "eth0") {
		t.Fatal("collision between attachments")
	}
	for _, n := range []string{"lxc", "eth0", "lxc0123456789ab", "lxcZZZZZZZZZZZ", "lxc0123456789a"} {
		if isLoupeHostIfname(n) && len(n) != 14 {
			t.Errorf("%q matched", n)
		}
	}
	if isLoupeHostIfname("lxcZZZZZZZZZZZ") {
		t.Error("non-hex matched")
	}
}

func TestValidIfname(t *testing.T) {
	for _, ok := range []string{"eth0", "net1", "a", "abcdefghijklmno"} {
		if err := validIfname(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "abcdefghijklmnop", "a/b", "a b", ".", "..", "a:b"} {
		if err := validIfname(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"loupe","type":"loupe-cni","agentSocket":"/run/loupe/agent.sock","mtu":1500,"xdp":"native"}`,
		`{"cniVersion":"0.4.0","name":"n","type":"t","prevResult":{"ips":[{"address":"10.0.0.2/32"}]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"mtu":"x"}`, `[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseNetConf(b)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("error is not a CNI error: %v", err)
			}
			if te.Code != types.ErrDecodingFailure && te.Code != types.ErrInvalidNetworkConfig && te.Code != types.ErrIncompatibleCNIVersion {
				t.Fatalf("unexpected code %d: %v", te.Code, err)
			}
			return
		}
		// Whatever parses satisfies the invariants ADD relies on.
		if c.MTU < MinMTU || c.MTU > MaxMTU {
			t.Fatalf("mtu %d accepted", c.MTU)
		}
		if c.AgentSocket == "" || c.AgentSocket[0] != '/' {
			t.Fatalf("socket %q accepted", c.AgentSocket)
		}
		switch c.XDP {
		case "", "native", "generic", "off":
		default:
			t.Fatalf("xdp %q accepted", c.XDP)
		}
		if !versionSupported(c.CNIVersion) || c.Name == "" || c.Type == "" {
			t.Fatalf("accepted %+v", c)
		}
	})
}

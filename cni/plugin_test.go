package cni

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

func TestBuildResultEveryVersion(t *testing.T) {
	args := &skel.CmdArgs{ContainerID: "c1", Netns: "/run/netns/pod1", IfName: "eth0"}
	pl := plumbing{HostIfname: HostIfname("c1", "eth0"), PodIfname: "eth0", MTU: 1450,
		IPv4: netip.MustParseAddr("10.1.0.5"), GatewayV4: netip.MustParseAddr("10.1.0.1"), IPv6: netip.MustParseAddr("fd00::5")}
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	res := buildResult(args, &NetConf{}, pl, plumbed{HostMAC: mac, PodMAC: mac})
	for _, v := range SupportedVersions {
		out, err := res.GetAsVersion(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		var sb strings.Builder
		if err := out.PrintTo(&sb); err != nil {
			t.Fatal(err)
		}
		back, err := version.NewResult(v, []byte(sb.String()))
		if err != nil {
			t.Fatalf("%s: reparse: %v\n%s", v, err, sb.String())
		}
		cur, err := current.NewResultFromResult(back)
		if err != nil {
			t.Fatal(err)
		}
		if len(cur.Interfaces) != 2 || cur.Interfaces[1].Sandbox != args.Netns || cur.Interfaces[0].Sandbox != "" {
			t.Fatalf("%s: interfaces %v", v, cur.Interfaces)
		}
		if len(cur.IPs) != 2 || *cur.IPs[0].Interface != 1 || cur.IPs[0].Address.String() != "10.1.0.5/32" ||
			cur.IPs[0].Gateway.String() != "10.1.0.1" || cur.IPs[1].Address.String() != "fd00::5/128" || cur.IPs[1].Gateway.String() != "fe80::1" {
			t.Fatalf("%s: ips %v", v, cur.IPs)
		}
		if len(cur.Routes) != 2 || cur.Routes[0].Dst.String() != "0.0.0.0/0" || cur.Routes[1].Dst.String() != "::/0" {
			t.Fatalf("%s: routes %v", v, cur.Routes)
		}
		if err := checkResultRoutes(cur.Routes, pl); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		var raw map[string]any
		_ = json.Unmarshal([]byte(sb.String()), &raw)
		if raw["cniVersion"] != v {
			t.Fatalf("printed version %v, want %s", raw["cniVersion"], v)
		}
	}
}

func TestAgentUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	stdin := []byte(`{"cniVersion":"1.1.0","name":"loupe","type":"loupe-cni","agentSocket":"` + sock + `"}`)
	p := &Plugin{}
	err := p.Status(&skel.CmdArgs{StdinData: stdin})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, sock) {
		t.Fatalf("STATUS: want 50 naming %s, got %v", sock, err)
	}
	_, err = dialAgent(sock)
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, sock) {
		t.Fatalf("dial: want 11 naming %s, got %v", sock, err)
	}
}

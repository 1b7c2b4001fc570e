package cni

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
	"github.com/loupe-project/loupe/api/endpoint/v1/endpointgrpc"
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

// fakeAgent answers the endpoint API from memory and records the calls.
type fakeAgent struct {
	endpointgrpc.UnimplementedEndpointsServer
	status     *endpointv1.StatusResponse
	statusErr  error
	releaseErr error
	// allocErrs are the answers of the next Allocates, then success.
	allocErrs []error

	mu    sync.Mutex
	calls []string
}

func (f *fakeAgent) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeAgent) Status(context.Context, *endpointv1.StatusRequest) (*endpointv1.StatusResponse, error) {
	f.record("status")
	return f.status, f.statusErr
}

func (f *fakeAgent) Allocate(context.Context, *endpointv1.AllocateRequest) (*endpointv1.AllocateResponse, error) {
	f.record("allocate")
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.allocErrs) > 0 {
		err := f.allocErrs[0]
		f.allocErrs = f.allocErrs[1:]
		return nil, err
	}
	return &endpointv1.AllocateResponse{Ipv4: "10.1.0.5", GatewayIpv4: "10.1.0.1", BpfRoot: "/sys/fs/bpf/fake", XdpMode: "off"}, nil
}

func (f *fakeAgent) Unregister(_ context.Context, r *endpointv1.UnregisterRequest) (*endpointv1.UnregisterResponse, error) {
	f.record("unregister " + r.GetContainerId() + "/" + r.GetIfname())
	return &endpointv1.UnregisterResponse{}, nil
}

func (f *fakeAgent) Release(_ context.Context, r *endpointv1.ReleaseRequest) (*endpointv1.ReleaseResponse, error) {
	f.record(strings.TrimSpace("release " + r.GetContainerId() + "/" + r.GetIfname() + " " + r.GetHostIfname()))
	return &endpointv1.ReleaseResponse{}, f.releaseErr
}

func serveFake(t testing.TB, f *fakeAgent) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	endpointgrpc.RegisterEndpointsServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return sock
}

// openAgent, the start-up the commands share, maps each failure to the CNI
// code the commands returned before it existed, and readyAgent adds the
// readiness check ADD waits on. No root needed.
func TestOpenAgent(t *testing.T) {
	var te *types.Error
	if _, err := openAgent(filepath.Join(t.TempDir(), "none.sock")); !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Fatalf("no socket: want 11, got %v", err)
	}
	sock := serveFake(t, &fakeAgent{statusErr: status.Error(codes.Internal, "boom")})
	if _, err := openAgent(sock); !errors.As(err, &te) || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "loupe-agent status: boom") {
		t.Fatalf("status error: want 999 with the agent's message, got %v", err)
	}

	sock = serveFake(t, &fakeAgent{status: &endpointv1.StatusResponse{Ready: false, Message: "warming up", BpfRoot: "/sys/fs/bpf/x"}})
	ag, err := openAgent(sock)
	if err != nil {
		t.Fatal(err)
	}
	if ag.status.GetBpfRoot() != "/sys/fs/bpf/x" || ag.ctx.Err() != nil {
		t.Fatalf("session: status %v, ctx %v", ag.status, ag.ctx.Err())
	}
	ag.Close()
	if ag.ctx.Err() == nil {
		t.Fatal("Close left the budget running")
	}
}

// waitAgent makes ADD's first call, Allocate, with no Status before it; an
// agent that is not ready answers Unavailable, "try again later" (11),
// retried while the wait lasts; any other answer ends the wait.
func TestWaitAgent(t *testing.T) {
	var te *types.Error
	log := slog.New(slog.DiscardHandler)
	alloc := func(ag *agentSession) error {
		_, err := ag.api.Allocate(ag.ctx, &endpointv1.AllocateRequest{ContainerId: "c1", Ifname: "eth0"})
		return ag.rpcErr("allocate", err)
	}
	f := &fakeAgent{allocErrs: []error{status.Error(codes.Unavailable, "agent not ready: warming up")}}
	sock := serveFake(t, f)
	if _, err := waitAgent(sock, 0, log, alloc); !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Details, "warming up") {
		t.Fatalf("wait 0 for an agent not ready: want 11 with its message, got %v", err)
	}
	f.allocErrs = []error{status.Error(codes.Unavailable, "agent not ready"), status.Error(codes.Unavailable, "agent not ready")}
	f.calls = nil
	ag, err := waitAgent(sock, 5*time.Second, log, alloc)
	if err != nil {
		t.Fatalf("agent ready on the third try: %v", err)
	}
	ag.Close()
	if strings.Join(f.calls, ",") != "allocate,allocate,allocate" {
		t.Fatalf("calls %v, want three Allocates and no Status", f.calls)
	}
	f.allocErrs = []error{status.Error(codes.ResourceExhausted, "pod cidr exhausted")}
	if _, err := waitAgent(sock, 5*time.Second, log, alloc); !errors.As(err, &te) || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "exhausted") {
		t.Fatalf("exhausted: want 999 at once, got %v", err)
	}
	if _, err := waitAgent(filepath.Join(t.TempDir(), "none.sock"), 0, log, alloc); !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Fatalf("no socket: want 11, got %v", err)
	}
}

// DEL deletes the (here absent) veth, then makes one call, Release, naming
// the host veth so that the agent removes its link pins; without the agent
// it still succeeds. The host veth is named after a container id no real
// pod has, so its removal is a no-op (netlink lookups need no root).
func TestDelWithFakeAgent(t *testing.T) {
	f := &fakeAgent{status: &endpointv1.StatusResponse{Ready: true, BpfRoot: "/sys/fs/bpf/fake"}}
	sock := serveFake(t, f)
	p := &Plugin{}
	cid := "loupe-unit-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	args := &skel.CmdArgs{ContainerID: cid, IfName: "eth0",
		StdinData: []byte(`{"cniVersion":"1.1.0","name":"loupe","type":"loupe-cni","agentSocket":"` + sock + `","logFile":"` + filepath.Join(t.TempDir(), "log") + `"}`)}
	if err := p.Del(args); err != nil {
		t.Fatal(err)
	}
	want := []string{"release " + cid + "/eth0 " + HostIfname(cid, "eth0")}
	if strings.Join(f.calls, ",") != strings.Join(want, ",") {
		t.Fatalf("agent calls %v, want %v", f.calls, want)
	}

	args.StdinData = []byte(`{"cniVersion":"1.1.0","name":"loupe","type":"loupe-cni","agentSocket":"` + filepath.Join(t.TempDir(), "none.sock") + `","logFile":"` + filepath.Join(t.TempDir(), "log") + `"}`)
	if err := p.Del(args); err != nil {
		t.Fatalf("DEL without the agent: %v", err)
	}

	// An agent that answers with an error fails DEL with its message.
	f.releaseErr = status.Error(codes.Internal, "disk full")
	args.StdinData = []byte(`{"cniVersion":"1.1.0","name":"loupe","type":"loupe-cni","agentSocket":"` + sock + `","logFile":"` + filepath.Join(t.TempDir(), "log") + `"}`)
	err := p.Del(args)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "disk full") {
		t.Fatalf("DEL with a failing agent: want 999 with its message, got %v", err)
	}
}

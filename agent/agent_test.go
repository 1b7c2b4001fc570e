package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/loupe-project/loupe/agent/ipam"
	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
	"github.com/loupe-project/loupe/api/endpoint/v1/endpointgrpc"
	"github.com/loupe-project/loupe/contract"
)

type fixture struct {
	dir string
	dp  *memDatapath
	a   *Agent
	s   *Server
	// links are the host veths that exist (ifindex -> name), when set;
	// detached records DetachHostLink calls.
	links    map[uint32]string
	detached []string
	// attachErr, when attachLinks is set, is what AttachHostLink returns;
	// attached records its successful calls ("name mode").
	attachLinks bool
	attachErr   error
	detachErr   error
	attached    []string
	// logs collects every agent's log.
	logs lockedBuffer
}

func newFixture(t *testing.T, cidrs ...string) *fixture {
	t.Helper()
	if len(cidrs) == 0 {
		cidrs = []string{"10.20.0.0/24", "fd20::/64"}
	}
	f := &fixture{dir: t.TempDir(), dp: newMemDatapath()}
	f.restart(t, cidrs...)
	return f
}

// restart builds a new Agent on the same state dir and datapath, as a
// restarted process would find them.
func (f *fixture) restart(t *testing.T, cidrs ...string) {
	t.Helper()
	if len(cidrs) == 0 {
		cidrs = []string{"10.20.0.0/24", "fd20::/64"}
	}
	var ps []netip.Prefix
	for _, c := range cidrs {
		ps = append(ps, netip.MustParsePrefix(c))
	}
	cfg := Config{NodeName: "node-a", PodCIDRs: ps, StateDir: f.dir, BPFRoot: "/sys/fs/bpf/test",
		XDPMode: "off", Datapath: f.dp, Version: "test", Log: slog.New(slog.NewTextHandler(&f.logs, nil)),
		HostLinkMAC: func(idx uint32) string { return testHostMAC(idx).String() }}
	if f.links != nil {
		cfg.HostLinkAlive = func(idx uint32, name string) bool { return f.links[idx] == name }
		cfg.HostLinkName = func(idx uint32) (string, bool) { n, ok := f.links[idx]; return n, ok }
		cfg.DetachHostLink = func(name string) error {
			if f.detachErr != nil {
				return f.detachErr
			}
			f.detached = append(f.detached, name)
			return nil
		}
	}
	if f.attachLinks {
		cfg.AttachHostLink = func(name, mode string) error {
			if f.attachErr != nil {
				return f.attachErr
			}
			f.attached = append(f.attached, name+" "+mode)
			return nil
		}
		cfg.CheckHostLink = func(name, mode string) error {
			if !slices.Contains(f.attached, name+" "+mode) {
				return fmt.Errorf("%s: no link pinned in mode %s", name, mode)
			}
			return nil
		}
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.a, f.s = a, NewServer(a)
}

func (f *fixture) allocate(t *testing.T, cid, ifname string) *endpointv1.AllocateResponse {
	t.Helper()
	r, err := f.s.Allocate(context.Background(), &endpointv1.AllocateRequest{ContainerId: cid, Ifname: ifname, PodNamespace: "ns", PodName: "pod-" + cid})
	if err != nil {
		t.Fatalf("Allocate(%s/%s): %v", cid, ifname, err)
	}
	return r
}

func (f *fixture) register(t *testing.T, cid, ifname string, idx uint32, al *endpointv1.AllocateResponse) *endpointv1.Endpoint {
	t.Helper()
	r, err := f.s.Register(context.Background(), &endpointv1.RegisterRequest{Endpoint: &endpointv1.Endpoint{
		ContainerId: cid, Ifname: ifname, Netns: "/run/netns/x", PodNamespace: "ns", PodName: "pod-" + cid,
		HostIfname: fmt.Sprintf("lxc%d", idx), HostIfindex: idx, Ipv4: al.Ipv4, Ipv6: al.Ipv6, Mac: "02:00:00:00:00:01",
	}})
	if err != nil {
		t.Fatalf("Register(%s/%s): %v", cid, ifname, err)
	}
	return r.Endpoint
}

func TestAllocateRegisterUnregisterRelease(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	al := f.allocate(t, "c1", "eth0")
	if al.Ipv4 != "10.20.0.2" || al.Ipv6 != "fd20::2" {
		t.Fatalf("first allocation %s %s", al.Ipv4, al.Ipv6)
	}
	if al.GatewayIpv4 != "10.20.0.1" || al.GatewayIpv6 != "fd20::1" || al.BpfRoot != "/sys/fs/bpf/test" || al.XdpMode != "off" {
		t.Fatalf("allocate response %+v", al)
	}
	again := f.allocate(t, "c1", "eth0")
	if again.Ipv4 != al.Ipv4 || again.Ipv6 != al.Ipv6 {
		t.Fatal("re-allocation changed the addresses")
	}

	ep := f.register(t, "c1", "eth0", 7, al)
	if ep.Id == 0 || ep.Identity != PodIdentity("ns", "pod-c1") {
		t.Fatalf("registered %+v", ep)
	}
	got := f.dp.eps[7]
	// The MACs let other local pods' packets be delivered straight into it.
	want := EndpointInfo{ID: ep.Id, Identity: ep.Identity, IPv4: netip.MustParseAddr(al.Ipv4), IPv6: netip.MustParseAddr(al.Ipv6),
		PodMAC: [6]byte{2, 0, 0, 0, 0, 1}, HostMAC: [6]byte{2, 0, 0, 0, 0xff, 7}}
	if got != want {
		t.Fatalf("datapath entry %+v, want %+v", got, want)
	}
	wantIPC := map[netip.Prefix]uint32{
		netip.MustParsePrefix("10.20.0.1/32"):   contract.IdentityHost,
		netip.MustParsePrefix("fd20::1/128"):    contract.IdentityHost,
		netip.MustParsePrefix(al.Ipv4 + "/32"):  ep.Identity,
		netip.MustParsePrefix(al.Ipv6 + "/128"): ep.Identity,
	}
	if !maps.Equal(f.dp.ipc, wantIPC) {
		t.Fatalf("ipcache %v, want %v", f.dp.ipc, wantIPC)
	}
	// Registering again keeps the id.
	if ep2 := f.register(t, "c1", "eth0", 7, al); ep2.Id != ep.Id {
		t.Fatalf("re-register changed id %d -> %d", ep.Id, ep2.Id)
	}

	// A second attachment without an endpoint shows up in List's allocations.
	f.allocate(t, "c2", "eth0")
	list, err := f.s.List(ctx, &endpointv1.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Endpoints) != 1 || list.Endpoints[0].ContainerId != "c1" || list.Endpoints[0].HostIfindex != 7 {
		t.Fatalf("list endpoints %v", list.Endpoints)
	}
	if len(list.Allocations) != 1 || list.Allocations[0].ContainerId != "c2" {
		t.Fatalf("list allocations %v", list.Allocations)
	}

	for i := 0; i < 2; i++ { // the second time everything is unknown: still ok
		if _, err := f.s.Unregister(ctx, &endpointv1.UnregisterRequest{ContainerId: "c1", Ifname: "eth0"}); err != nil {
			t.Fatal(err)
		}
		if len(f.dp.eps) != 0 || len(f.dp.ipc) != 2 {
			t.Fatalf("datapath entries after unregister: %v %v", f.dp.eps, f.dp.ipc)
		}
		for _, c := range []string{"c1", "c2"} {
			if _, err := f.s.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: c, Ifname: "eth0"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	list, _ = f.s.List(ctx, &endpointv1.ListRequest{})
	if len(list.Endpoints)+len(list.Allocations) != 0 {
		t.Fatalf("left after release: %v", list)
	}
}

func TestStatus(t *testing.T) {
	f := newFixture(t)
	f.a.SetAppliedGeneration("42")
	st, err := f.s.Status(context.Background(), &endpointv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Ready || st.NodeName != "node-a" || st.PodCidr != "10.20.0.0/24,fd20::/64" || st.Version != "test" ||
		st.BpfRoot != "/sys/fs/bpf/test" || st.AppliedGeneration != "42" {
		t.Fatalf("status %+v", st)
	}
}

func TestRestartRestoresEndpoints(t *testing.T) {
	f := newFixture(t)
	al1 := f.allocate(t, "c1", "eth0")
	ep1 := f.register(t, "c1", "eth0", 11, al1)
	al2 := f.allocate(t, "c2", "eth0")
	ep2 := f.register(t, "c2", "eth0", 12, al2)
	f.allocate(t, "c3", "eth0") // allocated, never registered

	// The pinned map survives, with one entry the agent never knew and
	// one entry that went stale.
	f.dp.eps[99] = EndpointInfo{ID: 500}
	f.dp.eps[12] = EndpointInfo{ID: 1}
	// An ipcache entry in the pod CIDR that no endpoint holds is stale; a
	// remote pod's entry belongs to someone else.
	stale, remote := netip.MustParsePrefix("10.20.0.200/32"), netip.MustParsePrefix("10.21.0.5/32")
	f.dp.ipc[stale], f.dp.ipc[remote] = 9999, 8888
	delete(f.dp.ipc, netip.MustParsePrefix(al1.Ipv4+"/32"))
	f.restart(t)
	if _, ok := f.dp.ipc[stale]; ok || f.dp.ipc[remote] != 8888 || f.dp.ipc[netip.MustParsePrefix(al1.Ipv4+"/32")] != ep1.Identity {
		t.Fatalf("ipcache after restart %v", f.dp.ipc)
	}
	if len(f.dp.eps) != 2 || f.dp.eps[11] != ep1info(ep1) || f.dp.eps[12] != ep1info(ep2) {
		t.Fatalf("datapath after restart %v", f.dp.eps)
	}
	// The restarted agent knows the endpoints, their ids and the free
	// allocation, and hands out no address twice.
	list, _ := f.s.List(context.Background(), &endpointv1.ListRequest{})
	if len(list.Endpoints) != 2 || list.Endpoints[0].Id != ep1.Id || list.Endpoints[1].Id != ep2.Id {
		t.Fatalf("endpoints after restart %v", list.Endpoints)
	}
	if len(list.Allocations) != 1 || list.Allocations[0].ContainerId != "c3" {
		t.Fatalf("allocations after restart %v", list.Allocations)
	}
	al4 := f.allocate(t, "c4", "eth0")
	for _, a := range []string{al1.Ipv4, al2.Ipv4} {
		if al4.Ipv4 == a {
			t.Fatalf("address %s handed out twice across a restart", a)
		}
	}
	ep4 := f.register(t, "c4", "eth0", 13, al4)
	if ep4.Id == ep1.Id || ep4.Id == ep2.Id {
		t.Fatalf("endpoint id %d reused", ep4.Id)
	}

	// A fresh, empty map (pins lost) is refilled from the state dir.
	f.dp.eps = map[uint32]EndpointInfo{}
	f.restart(t)
	if len(f.dp.eps) != 3 {
		t.Fatalf("datapath after restart with an empty map: %v", f.dp.eps)
	}
}

func ep1info(e *endpointv1.Endpoint) EndpointInfo {
	return EndpointInfo{ID: e.Id, Identity: e.Identity, IPv4: netip.MustParseAddr(e.Ipv4), IPv6: netip.MustParseAddr(e.Ipv6),
		PodMAC: ethernetMAC(e.Mac), HostMAC: [6]byte(testHostMAC(e.HostIfindex))}
}

// testHostMAC is the fixture's MAC of host link idx (Config.HostLinkMAC).
func testHostMAC(idx uint32) net.HardwareAddr {
	return net.HardwareAddr{2, 0, 0, 0, 0xff, byte(idx)}
}

// A pod deleted while the agent was away: loupe-cni removed its veth and
// returned, and the restarted agent releases the rest.
func TestRestoreReleasesEndpointsWhoseLinkIsGone(t *testing.T) {
	f := newFixture(t)
	f.register(t, "c1", "eth0", 21, f.allocate(t, "c1", "eth0"))
	f.register(t, "c2", "eth0", 22, f.allocate(t, "c2", "eth0"))
	f.links = map[uint32]string{21: "lxc21"}
	f.restart(t)
	eps := f.a.Endpoints()
	if len(eps) != 1 || eps[0].HostIfindex != 21 {
		t.Fatalf("endpoints %v", eps)
	}
	if _, ok := f.dp.eps[22]; ok || len(f.dp.eps) != 1 {
		t.Fatalf("datapath %v", f.dp.eps)
	}
	if _, ok := f.a.ipam.Get(ipam.Key{ContainerID: "c2", Ifname: "eth0"}); ok {
		t.Fatal("the dead endpoint's addresses are still allocated")
	}
	if _, ok := f.a.ipam.Get(eps[0].key()); !ok {
		t.Fatal("the live endpoint's allocation was lost")
	}
	if !slices.Equal(f.detached, []string{"lxc22"}) {
		t.Fatalf("detached %v, want [lxc22]", f.detached)
	}
	// The release is on disk: another restart finds the same state.
	f.detached = nil
	f.restart(t)
	if len(f.a.Endpoints()) != 1 || len(f.a.ipam.List()) != 1 || f.detached != nil {
		t.Fatalf("after a second restart: endpoints %v, allocations %v, detached %v", f.a.Endpoints(), f.a.ipam.List(), f.detached)
	}
}

func TestSweepDeadWhileRunning(t *testing.T) {
	f := newFixture(t)
	f.links = map[uint32]string{21: "lxc21", 22: "lxc22", 23: "lxc23"}
	f.restart(t)
	for i, cid := range []string{"c1", "c2", "c3"} {
		f.register(t, cid, "eth0", uint32(21+i), f.allocate(t, cid, "eth0"))
	}
	if n, err := f.a.SweepDead(); n != 0 || err != nil {
		t.Fatalf("sweep with every veth alive: %d, %v", n, err)
	}
	delete(f.links, 22)  // deleted (a DEL that did not reach the agent, or the netns died)
	f.links[23] = "lxcX" // index reused by another link: lxc23 is gone too
	n, err := f.a.SweepDead()
	if n != 2 || err != nil {
		t.Fatalf("sweep: released %d, %v; want 2", n, err)
	}
	if eps := f.a.Endpoints(); len(eps) != 1 || eps[0].ContainerID != "c1" {
		t.Fatalf("endpoints %v", eps)
	}
	if len(f.dp.eps) != 1 || len(f.a.ipam.List()) != 1 {
		t.Fatalf("datapath %v, allocations %v", f.dp.eps, f.a.ipam.List())
	}
	if !slices.Equal(f.detached, []string{"lxc22", "lxc23"}) {
		t.Fatalf("detached %v", f.detached)
	}
	if n, err := f.a.SweepDead(); n != 0 || err != nil {
		t.Fatalf("second sweep: %d, %v", n, err)
	}
}

// A dead endpoint whose pins cannot be removed stays, so the next sweep
// retries rather than forget the pins.
func TestSweepDeadKeepsEndpointWhenDetachFails(t *testing.T) {
	f := newFixture(t)
	f.links = map[uint32]string{21: "lxc21"}
	f.restart(t)
	f.register(t, "c1", "eth0", 21, f.allocate(t, "c1", "eth0"))
	delete(f.links, 21)
	fail := errors.New("bpffs says no")
	f.a.cfg.DetachHostLink = func(string) error { return fail }
	if n, err := f.a.SweepDead(); n != 0 || !errors.Is(err, fail) {
		t.Fatalf("sweep: %d, %v; want 0 and the detach error", n, err)
	}
	if len(f.a.Endpoints()) != 1 || len(f.a.ipam.List()) != 1 || len(f.dp.eps) != 1 {
		t.Fatalf("after a failed detach: endpoints %v, allocations %v, datapath %v", f.a.Endpoints(), f.a.ipam.List(), f.dp.eps)
	}
	f.a.cfg.DetachHostLink = func(string) error { return nil }
	if n, err := f.a.SweepDead(); n != 1 || err != nil {
		t.Fatalf("retry: %d, %v", n, err)
	}
}

func TestConcurrentAllocateOverSocket(t *testing.T) {
	f := newFixture(t)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	client := serve(t, f.a, sock)
	const n = 50
	var wg sync.WaitGroup
	res := make([]*endpointv1.AllocateResponse, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = client.Allocate(context.Background(), &endpointv1.AllocateRequest{ContainerId: fmt.Sprintf("ctr%02d", i), Ifname: "eth0"})
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("allocate %d: %v", i, errs[i])
		}
		for _, ip := range []string{res[i].Ipv4, res[i].Ipv6} {
			if ip == "" || seen[ip] {
				t.Fatalf("address %q empty or handed out twice", ip)
			}
			seen[ip] = true
		}
	}
}

// serve runs a.Serve on sock for the test's duration and returns a client.
func serve(t *testing.T, a *Agent, sock string) endpointgrpc.EndpointsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	l, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { errc <- a.ServeListener(ctx, l, sock) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return endpointgrpc.NewEndpointsClient(conn)
}

func TestSocketModeStaleAndLive(t *testing.T) {
	f := newFixture(t)
	sock := filepath.Join(t.TempDir(), "run", "agent.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	// A stale socket: bound, then its listener gone without unlinking.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	client := serve(t, f.a, sock)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket mode %v", fi.Mode())
	}
	st, err := client.Status(context.Background(), &endpointv1.StatusRequest{})
	if err != nil || !st.Ready {
		t.Fatalf("status over the socket: %v %v", st, err)
	}
	// A second agent must not steal a live socket.
	if _, err := ListenUnix(sock); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	// A regular file in the way is not removed.
	file := filepath.Join(t.TempDir(), "not-a-socket")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(file); err == nil {
		t.Fatal("listened over a regular file")
	}
}

func TestServeRemovesSocketOnShutdown(t *testing.T) {
	f := newFixture(t)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.a.Serve(ctx, sock) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// WaitForReady blocks until the socket exists and answers.
	if _, err := endpointgrpc.NewEndpointsClient(conn).Status(context.Background(), &endpointv1.StatusRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left after shutdown: %v", err)
	}
}

func TestValidationErrorsNameTheField(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	al := f.allocate(t, "good", "eth0")
	good := func() *endpointv1.Endpoint {
		return &endpointv1.Endpoint{ContainerId: "good", Ifname: "eth0", HostIfname: "lxc1", HostIfindex: 3, Ipv4: al.Ipv4, Ipv6: al.Ipv6}
	}
	for _, tc := range []struct {
		name  string
		call  func() error
		code  codes.Code
		field string
	}{
		{"allocate no container", func() error {
			_, err := f.s.Allocate(ctx, &endpointv1.AllocateRequest{Ifname: "eth0"})
			return err
		}, codes.InvalidArgument, "container_id"},
		{"allocate bad container", func() error {
			_, err := f.s.Allocate(ctx, &endpointv1.AllocateRequest{ContainerId: "a/b", Ifname: "eth0"})
			return err
		}, codes.InvalidArgument, "container_id"},
		{"allocate no ifname", func() error {
			_, err := f.s.Allocate(ctx, &endpointv1.AllocateRequest{ContainerId: "x"})
			return err
		}, codes.InvalidArgument, "ifname"},
		{"allocate long ifname", func() error {
			_, err := f.s.Allocate(ctx, &endpointv1.AllocateRequest{ContainerId: "x", Ifname: "abcdefghijklmnop"})
			return err
		}, codes.InvalidArgument, "ifname"},
		{"release bad ifname", func() error {
			_, err := f.s.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: "x", Ifname: "a:b"})
			return err
		}, codes.InvalidArgument, "ifname"},
		{"unregister no container", func() error {
			_, err := f.s.Unregister(ctx, &endpointv1.UnregisterRequest{Ifname: "eth0"})
			return err
		}, codes.InvalidArgument, "container_id"},
		{"register nil", func() error {
			_, err := f.s.Register(ctx, &endpointv1.RegisterRequest{})
			return err
		}, codes.InvalidArgument, "endpoint"},
		{"register no ifindex", func() error {
			e := good()
			e.HostIfindex = 0
			_, err := f.s.Register(ctx, &endpointv1.RegisterRequest{Endpoint: e})
			return err
		}, codes.InvalidArgument, "host_ifindex"},
		{"register no host ifname", func() error {
			e := good()
			e.HostIfname = ""
			_, err := f.s.Register(ctx, &endpointv1.RegisterRequest{Endpoint: e})
			return err
		}, codes.InvalidArgument, "host_ifname"},
		{"register bad ipv4", func() error {
			e := good()
			e.Ipv4 = "10.20.0.300"
			_, err := f.s.Register(ctx, &endpointv1.RegisterRequest{Endpoint: e})
			return err
		}, codes.InvalidArgument, "ipv4"},
		{"register v6 as ipv4", func() error {
			e := good()
			e.Ipv4 = "fd20::9"
			_, err := f.s.Register(ctx, &endpointv1.RegisterRequest{Endpoint: e})
			return err
		}, codes.InvalidArgument, "ipv4"},
		{"register foreign ipv4", func() error {
			e := good()
			e.Ipv4 = "10.20.0.77"
			_, err := f.s.Register(ctx, &endpointv1.RegisterRequest{Endpoint: e})
			return err
		}, codes.InvalidArgument, "ipv4"},
		{"register missing ipv6", func() error {
			e := good()
			e.Ipv6 = ""
			_, err := f.s.Register(ctx, &endpointv1.RegisterRequest{Endpoint: e})
			return err
		}, codes.InvalidArgument, "ipv6"},
		{"register bad mac", func() error {
			e := good()
			e.Mac = "zz"
			_, err := f.s.Register(ctx, &endpointv1.RegisterRequest{Endpoint: e})
			return err
		}, codes.InvalidArgument, "mac"},
		{"register no addresses", func() error {
			e := good()
			e.Ipv4, e.Ipv6 = "", ""
			_, err := f.s.Register(ctx, &endpointv1.RegisterRequest{Endpoint: e})
			return err
		}, codes.InvalidArgument, "ipv4"},
		{"register without allocation", func() error {
			e := good()
			e.ContainerId = "other"
			_, err := f.s.Register(ctx, &endpointv1.RegisterRequest{Endpoint: e})
			return err
		}, codes.FailedPrecondition, "container_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.HasPrefix(st.Message(), tc.field) {
				t.Fatalf("got %v %q, want %v naming %q", st.Code(), st.Message(), tc.code, tc.field)
			}
		})
	}
	if len(f.dp.eps) != 0 {
		t.Fatalf("invalid requests wrote the datapath: %v", f.dp.eps)
	}
}

func TestAllocateExhausted(t *testing.T) {
	f := newFixture(t, "10.30.0.0/30")
	f.allocate(t, "a", "eth0")
	_, err := f.s.Allocate(context.Background(), &endpointv1.AllocateRequest{ContainerId: "b", Ifname: "eth0"})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("got %v, want ResourceExhausted", err)
	}
}

func TestReleaseUnregistersEndpoint(t *testing.T) {
	f := newFixture(t)
	f.register(t, "c1", "eth0", 5, f.allocate(t, "c1", "eth0"))
	if _, err := f.s.Release(context.Background(), &endpointv1.ReleaseRequest{ContainerId: "c1", Ifname: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if len(f.dp.eps) != 0 || len(f.a.Endpoints()) != 0 {
		t.Fatalf("endpoint survived release: %v %v", f.dp.eps, f.a.Endpoints())
	}
}

func TestReusedIfindexReplacesStaleEndpoint(t *testing.T) {
	f := newFixture(t)
	f.register(t, "old", "eth0", 8, f.allocate(t, "old", "eth0"))
	ep := f.register(t, "new", "eth0", 8, f.allocate(t, "new", "eth0"))
	eps := f.a.Endpoints()
	if len(eps) != 1 || eps[0].ContainerID != "new" || f.dp.eps[8].ID != ep.Id {
		t.Fatalf("endpoints %v datapath %v", eps, f.dp.eps)
	}
}

func TestReregisterOnNewIfindexMovesEntry(t *testing.T) {
	f := newFixture(t)
	al := f.allocate(t, "c", "eth0")
	ep := f.register(t, "c", "eth0", 8, al)
	ep2 := f.register(t, "c", "eth0", 9, al)
	if ep2.Id != ep.Id {
		t.Fatal("id changed")
	}
	if _, ok := f.dp.eps[8]; ok || f.dp.eps[9].ID != ep.Id {
		t.Fatalf("datapath %v", f.dp.eps)
	}
}

func TestRegisterFailureLeavesNothing(t *testing.T) {
	f := newFixture(t)
	al := f.allocate(t, "c", "eth0")
	f.dp.failPut = true
	_, err := f.s.Register(context.Background(), &endpointv1.RegisterRequest{Endpoint: &endpointv1.Endpoint{
		ContainerId: "c", Ifname: "eth0", HostIfname: "lxc1", HostIfindex: 4, Ipv4: al.Ipv4, Ipv6: al.Ipv6}})
	if status.Code(err) != codes.Internal {
		t.Fatalf("got %v, want Internal", err)
	}
	f.dp.failPut = false
	if len(f.a.Endpoints()) != 0 || len(f.dp.eps) != 0 {
		t.Fatal("failed register left state")
	}
	// State write failure (a non-empty directory where endpoints.json
	// goes makes the rename fail, even for root): the datapath entry is
	// rolled back.
	if err := os.MkdirAll(filepath.Join(f.dir, EndpointsStateFile, "block"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = f.s.Register(context.Background(), &endpointv1.RegisterRequest{Endpoint: &endpointv1.Endpoint{
		ContainerId: "c", Ifname: "eth0", HostIfname: "lxc1", HostIfindex: 4, Ipv4: al.Ipv4, Ipv6: al.Ipv6}})
	if err == nil {
		t.Fatal("register succeeded without writing state")
	}
	if len(f.a.Endpoints()) != 0 || len(f.dp.eps) != 0 {
		t.Fatalf("failed register left state: %v", f.dp.eps)
	}
}

func TestPodIdentity(t *testing.T) {
	a, b := PodIdentity("ns", "a"), PodIdentity("ns", "a")
	if a != b {
		t.Fatal("not deterministic")
	}
	if PodIdentity("ns", "a") == PodIdentity("ns", "b") || PodIdentity("x", "ab") == PodIdentity("xa", "b") {
		t.Fatal("trivial collision")
	}
	for i := 0; i < 1000; i++ {
		id := PodIdentity("ns", fmt.Sprint(i))
		if id < MinIdentity || id > maxIdentity {
			t.Fatalf("identity %d out of range", id)
		}
	}
}

// An allocation no endpoint registered in two sweeps in a row is an ADD
// that died between Allocate and Register: the second sweep frees it. One
// that registers in between is an ADD that finished, and stays.
func TestSweepReleasesOrphanedAllocations(t *testing.T) {
	f := newFixture(t)
	f.allocate(t, "died", "eth0")
	slow := f.allocate(t, "slow", "eth0")
	if n, err := f.a.SweepDead(); n != 0 || err != nil {
		t.Fatalf("first sweep: released %d, %v", n, err)
	}
	f.register(t, "slow", "eth0", 31, slow)
	f.allocate(t, "late", "eth0") // after the first sweep: one more round
	if n, err := f.a.SweepDead(); n != 1 || err != nil {
		t.Fatalf("second sweep: released %d, %v; want 1", n, err)
	}
	for key, want := range map[string]bool{"died": false, "slow": true, "late": true} {
		if _, ok := f.a.ipam.Get(ipam.Key{ContainerID: key, Ifname: "eth0"}); ok != want {
			t.Errorf("allocation %s held = %v, want %v", key, ok, want)
		}
	}
	f.allocate(t, "next", "eth0") // first seen by the third sweep
	if n, err := f.a.SweepDead(); n != 1 || err != nil {
		t.Fatalf("third sweep: released %d, %v; want 1 (late)", n, err)
	}
}

// Allocate is ADD's first call and stands in for Status: a not-ready agent
// refuses it with Unavailable, which the plugin retries.
func TestAllocateUnavailableUntilReady(t *testing.T) {
	f := newFixture(t)
	f.a.ready.Store(false)
	_, err := f.s.Allocate(context.Background(), &endpointv1.AllocateRequest{ContainerId: "c1", Ifname: "eth0"})
	if status.Code(err) != codes.Unavailable || len(f.a.ipam.List()) != 0 {
		t.Fatalf("not ready: got %v and allocations %v, want Unavailable and none", err, f.a.ipam.List())
	}
	f.a.ready.Store(true)
	f.allocate(t, "c1", "eth0")
}

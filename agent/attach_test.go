package agent

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loupe-project/loupe/agent/ipam"
	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

func registerReq(cid string, idx uint32, hostIf string, al *endpointv1.AllocateResponse, mode string) *endpointv1.RegisterRequest {
	return &endpointv1.RegisterRequest{Endpoint: &endpointv1.Endpoint{
		ContainerId: cid, Ifname: "eth0", Netns: "/run/netns/x", PodNamespace: "ns", PodName: "pod-" + cid,
		HostIfname: hostIf, HostIfindex: idx, Ipv4: al.Ipv4, Ipv6: al.Ipv6, Mac: "02:00:00:00:00:01",
	}, Attach: true, XdpMode: mode}
}

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), substr) {
		t.Fatalf("got %v, want %s containing %q", err, code, substr)
	}
}

// Register with attach writes the endpoint, then attaches in the asked (or
// the default) XDP mode; Release takes the link pins away with the rest.
func TestRegisterAttachesAndReleaseDetaches(t *testing.T) {
	f := &fixture{dir: t.TempDir(), dp: newMemDatapath(), links: map[uint32]string{}, attachLinks: true}
	f.restart(t)
	ctx := context.Background()

	al := f.allocate(t, "c1", "eth0")
	r, err := f.s.Register(ctx, registerReq("c1", 7, "lxc7", al, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Attached || r.Endpoint.GetId() == 0 {
		t.Fatalf("register response %+v", r)
	}
	if _, ok := f.dp.eps[7]; !ok || !slices.Equal(f.attached, []string{"lxc7 off"}) {
		t.Fatalf("endpoint entry present %v, attached %v", ok, f.attached)
	}
	if _, err := f.s.CheckAttached(ctx, &endpointv1.CheckAttachedRequest{HostIfname: "lxc7"}); err != nil {
		t.Fatalf("check attached: %v", err)
	}
	_, err = f.s.CheckAttached(ctx, &endpointv1.CheckAttachedRequest{HostIfname: "lxc7", XdpMode: "native"})
	wantCode(t, err, codes.FailedPrecondition, "no link pinned in mode native")
	_, err = f.s.CheckAttached(ctx, &endpointv1.CheckAttachedRequest{HostIfname: "lxc7", XdpMode: "fast"})
	wantCode(t, err, codes.InvalidArgument, "xdp_mode")

	// A bad mode is refused before anything changes.
	al2 := f.allocate(t, "c2", "eth0")
	_, err = f.s.Register(ctx, registerReq("c2", 8, "lxc8", al2, "turbo"))
	wantCode(t, err, codes.InvalidArgument, "xdp_mode")
	if _, ok := f.dp.eps[8]; ok || len(f.attached) != 1 {
		t.Fatalf("refused register changed the datapath: %v %v", f.dp.eps, f.attached)
	}
	// Registering again (a retried ADD) attaches again, idempotently.
	if _, err := f.s.Register(ctx, registerReq("c1", 7, "lxc7", al, "generic")); err != nil {
		t.Fatal(err)
	}

	if _, err := f.s.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: "c1", Ifname: "eth0", HostIfname: "lxc7"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.dp.eps[7]; ok || !slices.Equal(f.detached, []string{"lxc7"}) || len(f.a.ipam.List()) != 1 {
		t.Fatalf("after release: entry %v, detached %v, allocations %v", f.dp.eps, f.detached, f.a.ipam.List())
	}
	// An attachment that never registered still gets its named pins removed.
	if _, err := f.s.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: "c2", Ifname: "eth0", HostIfname: "lxc8"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.detached, []string{"lxc7", "lxc8"}) || len(f.a.ipam.List()) != 0 {
		t.Fatalf("detached %v, allocations %v", f.detached, f.a.ipam.List())
	}
	_, err = f.s.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: "c2", Ifname: "eth0", HostIfname: "../x"})
	wantCode(t, err, codes.InvalidArgument, "host_ifname")
	_, err = f.s.Unregister(ctx, &endpointv1.UnregisterRequest{ContainerId: "c2", Ifname: "eth0", HostIfname: "a b"})
	wantCode(t, err, codes.InvalidArgument, "host_ifname")
}

// A failed attach takes the registration back, in memory, in the datapath
// and on disk, and keeps the allocation for the plugin's rollback.
func TestRegisterAttachFailureUnregisters(t *testing.T) {
	f := &fixture{dir: t.TempDir(), dp: newMemDatapath(), links: map[uint32]string{}, attachLinks: true,
		attachErr: errors.New("no such device")}
	f.restart(t)
	ctx := context.Background()
	al := f.allocate(t, "c1", "eth0")
	_, err := f.s.Register(ctx, registerReq("c1", 7, "lxc7", al, "native"))
	wantCode(t, err, codes.Internal, "no such device")
	if _, ok := f.dp.eps[7]; ok || len(f.a.endpoints) != 0 || !slices.Equal(f.detached, []string{"lxc7"}) {
		t.Fatalf("after a failed attach: entries %v, endpoints %v, detached %v", f.dp.eps, f.a.endpoints, f.detached)
	}
	if len(f.a.ipam.List()) != 1 {
		t.Fatalf("allocations %v, want the one of c1", f.a.ipam.List())
	}
	f.restart(t)
	if len(f.a.endpoints) != 0 {
		t.Fatalf("restarted agent restored %v", f.a.endpoints)
	}

	// An agent that cannot attach says so and registers nothing.
	g := newFixture(t)
	al = g.allocate(t, "c1", "eth0")
	_, err = g.s.Register(ctx, registerReq("c1", 7, "lxc7", al, ""))
	wantCode(t, err, codes.FailedPrecondition, "attaches no programs")
	if len(g.a.endpoints) != 0 || len(g.dp.eps) != 0 {
		t.Fatalf("endpoints %v, entries %v", g.a.endpoints, g.dp.eps)
	}
	_, err = g.s.CheckAttached(ctx, &endpointv1.CheckAttachedRequest{HostIfname: "lxc7"})
	wantCode(t, err, codes.FailedPrecondition, "attaches no programs")
}

// Pins that cannot be removed do not keep the endpoint or the addresses:
// Release frees them and reports the failure, so the runtime retries the
// DEL, which retries the pins it names.
func TestReleaseWithStuckPins(t *testing.T) {
	f := &fixture{dir: t.TempDir(), dp: newMemDatapath(), links: map[uint32]string{}, attachLinks: true}
	f.restart(t)
	ctx := context.Background()
	al := f.allocate(t, "c1", "eth0")
	if _, err := f.s.Register(ctx, registerReq("c1", 7, "lxc7", al, "")); err != nil {
		t.Fatal(err)
	}
	f.detachErr = errors.New("directory not empty")
	_, err := f.s.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: "c1", Ifname: "eth0", HostIfname: "lxc7"})
	wantCode(t, err, codes.Internal, "directory not empty")
	if len(f.a.endpoints) != 0 || len(f.dp.eps) != 0 || len(f.a.ipam.List()) != 0 {
		t.Fatalf("endpoints %v, entries %v, allocations %v", f.a.endpoints, f.dp.eps, f.a.ipam.List())
	}
	f.detachErr = nil
	if _, err := f.s.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: "c1", Ifname: "eth0", HostIfname: "lxc7"}); err != nil {
		t.Fatalf("retried release: %v", err)
	}
	if !slices.Equal(f.detached, []string{"lxc7"}) {
		t.Fatalf("detached %v", f.detached)
	}
}

// Register and Unregister write only the ipcache entries that change
// (updateIPCache); after any sequence of them, including a stale endpoint
// replaced on a reused ifindex and an identity that changes, the ipcache
// still holds exactly the table's entries, and entries the agent does not
// own are left alone.
func TestIPCacheFollowsTheTable(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	foreign := netip.MustParsePrefix("192.0.2.0/24")
	f.dp.ipc[foreign] = 77
	check := func(step string) {
		t.Helper()
		want := f.a.ipcacheOf(f.a.endpoints)
		want[foreign] = 77
		if !maps.Equal(f.dp.ipc, want) {
			t.Fatalf("%s: ipcache %v, want %v", step, f.dp.ipc, want)
		}
	}
	als := map[string]*endpointv1.AllocateResponse{}
	for i, cid := range []string{"c1", "c2", "c3", "c4"} {
		als[cid] = f.allocate(t, cid, "eth0")
		f.register(t, cid, "eth0", uint32(10+i%3), als[cid]) // c4 takes c1's ifindex
		check("register " + cid)
	}
	if _, ok := f.a.endpoints[ipam.Key{ContainerID: "c1", Ifname: "eth0"}]; ok {
		t.Fatal("c1 survived its ifindex being reused")
	}
	f.a.SetIdentityFunc(func(ns, name string) uint32 { return 4242 })
	f.register(t, "c2", "eth0", 11, als["c2"])
	check("identity change")
	f.register(t, "c3", "eth0", 15, als["c3"]) // moves to a new ifindex
	check("move")
	for _, cid := range []string{"c2", "c3"} {
		if _, err := f.s.Unregister(ctx, &endpointv1.UnregisterRequest{ContainerId: cid, Ifname: "eth0"}); err != nil {
			t.Fatal(err)
		}
		check("unregister " + cid)
	}
	if _, err := f.s.Release(ctx, &endpointv1.ReleaseRequest{ContainerId: "c4", Ifname: "eth0"}); err != nil {
		t.Fatal(err)
	}
	check("release c4")
}

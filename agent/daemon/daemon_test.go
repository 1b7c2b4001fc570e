package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/agent"
	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
	"github.com/loupe-project/loupe/api/endpoint/v1/endpointgrpc"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

func TestValidate(t *testing.T) {
	good := func() Config {
		return Config{NodeName: "n", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}
	}
	c := good()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.StateDir != DefaultStateDir || c.BPFRoot != DefaultBPFRoot || c.Socket != DefaultSocket ||
		c.XDPMode != DefaultXDPMode || c.FlowBufferSize != DefaultFlowBufferSize {
		t.Fatalf("defaults not filled: %+v", c)
	}
	for name, mut := range map[string]func(*Config){
		"--node-name": func(c *Config) { c.NodeName = "" },
		"--pod-cidr":  func(c *Config) { c.PodCIDRs = nil },
		"--xdp-mode":  func(c *Config) { c.XDPMode = "fast" },
		"at most one": func(c *Config) {
			c.PodCIDRs = append(c.PodCIDRs, netip.MustParsePrefix("10.1.0.0/24"))
		},
	} {
		c := good()
		mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func TestHealthEndpoints(t *testing.T) {
	var ready atomic.Pointer[agent.Agent]
	var metrics atomic.Pointer[metricsSet]
	srv := httptest.NewServer(healthMux(&ready, &metrics))
	defer srv.Close()
	get := func(path string) int {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if get("/healthz") != 200 || get("/readyz") != 503 || get("/metrics") != 503 {
		t.Fatal("before the datapath loads: want healthz 200, readyz 503, metrics 503")
	}
	a, err := agent.New(agent.Config{NodeName: "n", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")},
		StateDir: t.TempDir(), Datapath: emptyDatapath{}})
	if err != nil {
		t.Fatal(err)
	}
	ready.Store(a)
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "m 1") })
	metrics.Store(&metricsSet{all: h})
	if get("/readyz") != 200 || get("/metrics") != 200 || get("/metrics/datapath") != 404 {
		t.Fatal("after: want readyz 200, metrics 200, metrics/datapath 404")
	}
}

// emptyDatapath is a datapath with nothing in its maps, for the health test.
type emptyDatapath struct{}

func (emptyDatapath) UpsertEndpoint(uint32, agent.EndpointInfo) error { return nil }
func (emptyDatapath) DeleteEndpoint(uint32) error                     { return nil }
func (emptyDatapath) Endpoints() (map[uint32]agent.EndpointInfo, error) {
	return nil, nil
}
func (emptyDatapath) UpsertIPCache(netip.Prefix, uint32) error       { return nil }
func (emptyDatapath) DeleteIPCache(netip.Prefix) error               { return nil }
func (emptyDatapath) IPCache() (map[netip.Prefix]uint32, error)      { return nil, nil }
func (emptyDatapath) ReadEvents(context.Context, func([]byte)) error { return nil }
func (emptyDatapath) Close() error                                   { return nil }

// eventSink is the observer of the privileged test: it counts events.
type eventSink struct{ events atomic.Int64 }

func (s *eventSink) HandleEvent(raw []byte) { s.events.Add(1) }
func (s *eventSink) Serve(ctx context.Context, _, _ string) error {
	<-ctx.Done()
	return nil
}
func (s *eventSink) MetricsHandler() http.Handler    { return http.NotFoundHandler() }
func (s *eventSink) AddLostEvents(uint64)            {}
func (s *eventSink) AddRateLimitedDropEvents(uint64) {}

// runningAgent is one in-process agent run.
type runningAgent struct {
	cancel context.CancelFunc
	done   chan error
	client endpointgrpc.EndpointsClient
	conn   *grpc.ClientConn
}

func startAgent(t *testing.T, cfg Config) *runningAgent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan struct{})
	cfg.Ready = func(*agent.Agent) { close(readyc) }
	r := &runningAgent{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- Run(ctx, cfg) }()
	select {
	case <-readyc:
	case err := <-r.done:
		cancel()
		t.Fatalf("agent exited before ready: %v", err)
	}
	conn, err := grpc.NewClient("unix://"+cfg.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.conn, r.client = conn, endpointgrpc.NewEndpointsClient(conn)
	return r
}

func (r *runningAgent) stop(t *testing.T) {
	t.Helper()
	r.conn.Close()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("agent run: %v", err)
	}
}

// privilegedNode skips without root, else makes a node netns and a bpffs
// pin folder that are removed when the test ends.
func privilegedNode(t *testing.T) (ns.NetNS, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	t.Cleanup(func() {
		netns.Close()
		_ = testutils.UnmountNS(netns)
	})
	bpfRoot := t.TempDir()
	t.Cleanup(func() {
		if err := datapath.Cleanup(bpfRoot); err != nil {
			t.Errorf("cleanup pins: %v", err)
		}
	})
	return netns, bpfRoot
}

func TestPrivilegedAgentRegistersRealVeth(t *testing.T) {
	netns, bpfRoot := privilegedNode(t)
	dir := t.TempDir()
	sink := &eventSink{}
	cfg := Config{
		NodeName: "node-priv", StateDir: filepath.Join(dir, "state"), BPFRoot: bpfRoot,
		Socket: filepath.Join(dir, "run", "agent.sock"), Listen: "", XDPMode: "generic",
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.77.3.0/24"), netip.MustParsePrefix("fd77:3::/64")},
		NetNS:    netns, NewObserver: func(ObserverParams) (Observer, error) { return sink, nil },
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	r := startAgent(t, cfg)

	// The gateway link, forwarding and lo (a fresh netns has it down),
	// inside the agent's netns.
	err := netns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("lo is down in the agent's netns")
		}
		l, err := netlink.LinkByName(agent.GatewayLink)
		if err != nil {
			return err
		}
		if l.Attrs().OperState != netlink.OperUp {
			return fmt.Errorf("%s is %s", agent.GatewayLink, l.Attrs().OperState)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		want := map[string]bool{"10.77.3.1/32": false, "fd77:3::1/128": false}
		for _, a := range addrs {
			if _, ok := want[a.IPNet.String()]; ok {
				want[a.IPNet.String()] = true
			}
		}
		for a, ok := range want {
			if !ok {
				return fmt.Errorf("%s lacks %s: %v", agent.GatewayLink, a, addrs)
			}
		}
		for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(b)) != "1" {
				return fmt.Errorf("%s = %s", p, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}

	// A real host veth in the netns, as loupe-cni would create.
	hostIf := fmt.Sprintf("lxcagt%04x", rand.IntN(0x10000))
	var hostIndex int
	err = netns.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf}, PeerName: hostIf + "p"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName(hostIf)
		if err != nil {
			return err
		}
		hostIndex = l.Attrs().Index
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatalf("veth: %v", err)
	}

	ctx := context.Background()
	al, err := r.client.Allocate(ctx, &endpointv1.AllocateRequest{ContainerId: "priv-ctr", Ifname: "eth0", PodNamespace: "x", PodName: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if al.GatewayIpv4 != "10.77.3.1" || al.BpfRoot != bpfRoot || al.XdpMode != "generic" {
		t.Fatalf("allocate: %+v", al)
	}
	reg, err := r.client.Register(ctx, &endpointv1.RegisterRequest{Endpoint: &endpointv1.Endpoint{
		ContainerId: "priv-ctr", Ifname: "eth0", PodNamespace: "x", PodName: "a",
		HostIfname: hostIf, HostIfindex: uint32(hostIndex), Ipv4: al.Ipv4, Ipv6: al.Ipv6}})
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(func(ns.NetNS) error { return datapath.Attach(bpfRoot, hostIf, datapath.XDPGeneric) }); err != nil {
		t.Fatalf("attach: %v", err)
	}
	// No manifests: the policy engine does not know the pod's labels yet.
	wantEP := agent.EndpointInfo{ID: reg.Endpoint.Id, Identity: contract.IdentityInit,
		IPv4: netip.MustParseAddr(al.Ipv4), IPv6: netip.MustParseAddr(al.Ipv6)}
	r.stop(t)

	// The pinned endpoint map holds the endpoint while no agent runs.
	checkPinned := func(when string) {
		t.Helper()
		m, err := ebpf.LoadPinnedMap(filepath.Join(bpfRoot, "maps", datapath.MapEndpoints), nil)
		if err != nil {
			t.Fatalf("%s: open pinned endpoints map: %v", when, err)
		}
		defer m.Close()
		if n := countKeys(t, m); n != 1 {
			t.Fatalf("%s: %d endpoints pinned, want 1", when, n)
		}
		var raw []byte
		if err := m.Lookup(uint32(hostIndex), &raw); err != nil {
			t.Fatalf("%s: no endpoint for ifindex %d: %v", when, hostIndex, err)
		}
	}
	checkPinned("agent stopped")
	if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
		t.Fatalf("socket left after shutdown: %v", err)
	}

	// Restart: the endpoint is restored, with its id, and the datapath
	// (its map contents and its attachment) is unchanged.
	r = startAgent(t, cfg)
	list, err := r.client.List(ctx, &endpointv1.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Endpoints) != 1 || list.Endpoints[0].Id != reg.Endpoint.Id || list.Endpoints[0].HostIfindex != uint32(hostIndex) {
		t.Fatalf("after restart: %v", list.Endpoints)
	}
	st, err := r.client.Status(ctx, &endpointv1.StatusRequest{})
	if err != nil || !st.Ready || st.PodCidr != "10.77.3.0/24,fd77:3::/64" || st.BpfRoot != bpfRoot {
		t.Fatalf("status %+v %v", st, err)
	}
	if err := netns.Do(func(ns.NetNS) error { return datapath.CheckAttached(bpfRoot, hostIf, datapath.XDPGeneric) }); err != nil {
		t.Fatalf("attachment after restart: %v", err)
	}

	// Traffic through the attached programs reaches the event sink: the
	// peer end sends from the pod address to the gateway.
	sendFromPod(t, netns, hostIf, hostIf+"p", al.Ipv4, al.GatewayIpv4)
	deadline := time.Now().Add(10 * time.Second)
	for sink.events.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no datapath event reached the observer")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.stop(t)
	checkPinned("agent stopped again")
	d, err := datapath.Load(datapath.Config{BPFRoot: bpfRoot})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	eps, err := d.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	// The pod's packets were counted under its endpoint id, both ways.
	counters, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[uint8]uint64{}
	for _, c := range counters {
		if c.EndpointID == reg.Endpoint.Id && c.Reason == contract.VerdictForwarded {
			dirs[c.Direction] += c.Packets
		}
	}
	if dirs[contract.DirectionEgress] == 0 || dirs[contract.DirectionIngress] == 0 {
		t.Fatalf("forwarded packets of endpoint %d by direction: %v (counters %+v)", reg.Endpoint.Id, dirs, counters)
	}
	if got := eps[uint32(hostIndex)]; got != wantEP {
		t.Fatalf("endpoint map entry %+v, want %+v", got, wantEP)
	}
}

func countKeys(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	var (
		k   uint32
		raw []byte
		n   int
	)
	it := m.Iterate()
	for it.Next(&k, &raw) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// sendFromPod moves the peer end of the veth into a new pod netns, plumbs
// it as loupe-cni does (the pod's /32, a default route via the gateway
// onlink, the node's /32 route back) and connects from the pod to the
// gateway over TCP. The gateway holds no listener, so the connection is
// refused: an answer that proves the host veth resolves the gateway (ARP
// via loupe_host) and that the traffic crossed the host veth's programs.
func sendFromPod(t *testing.T, nodeNS ns.NetNS, hostIf, peer, podIP, gw string) {
	t.Helper()
	podNS, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("pod netns: %v", err)
	}
	t.Cleanup(func() {
		podNS.Close()
		_ = testutils.UnmountNS(podNS)
	})
	gwIP := net.ParseIP(gw)
	err = nodeNS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(peer)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(l, int(podNS.Fd())); err != nil {
			return err
		}
		h, err := netlink.LinkByName(hostIf)
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: h.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: net.ParseIP(podIP), Mask: net.CIDRMask(32, 32)}})
	})
	if err != nil {
		t.Fatalf("node side: %v", err)
	}
	err = podNS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(peer)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(podIP), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gwIP, Flags: int(netlink.FLAG_ONLINK),
			Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}); err != nil {
			return fmt.Errorf("default route: %w", err)
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(gw, "9"), 5*time.Second)
		if err == nil {
			c.Close()
			return errors.New("connected to the gateway's port 9: want refused")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dial gateway: %w (want connection refused)", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pod: %v", err)
	}
}

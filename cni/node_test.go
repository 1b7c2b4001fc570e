package cni_test

// Test scaffolding for the privileged tests: a node netns running a real
// loupe-agent, pod netns, the built loupe-cni driven through libcni, and
// traffic between pods.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
	"github.com/loupe-project/loupe/api/endpoint/v1/endpointgrpc"
	"github.com/loupe-project/loupe/cni"
	"github.com/loupe-project/loupe/cni/cniclient"
	"github.com/loupe-project/loupe/datapath"
)

var (
	buildMu sync.Mutex
	binDir  string
	built   = map[string]error{}
)

// buildBinary builds cmd/<name> once per test binary into a shared temp dir
// and returns that dir (the plugin bin dir).
func buildBinary(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if binDir == "" {
		d, err := os.MkdirTemp("", "loupe-cni-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		binDir = d
	}
	err, done := built[name]
	if !done {
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, serr := os.Stat(goBin); serr != nil {
			goBin = "go"
		}
		cmd := exec.Command(goBin, "build", "-o", filepath.Join(binDir, name), "github.com/loupe-project/loupe/cmd/"+name)
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("build %s: %w\n%s", name, berr, out)
		}
		built[name] = err
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	return binDir
}

// prebuiltEnv names a directory holding already built loupe-cni and
// loupe-agent (make build's bin/), used instead of building them here.
const prebuiltEnv = "LOUPE_TEST_BIN_DIR"

// binaries builds the plugin and the agent.
func binaries(t testing.TB) string {
	if d := os.Getenv(prebuiltEnv); d != "" {
		return d
	}
	buildBinary(t, "loupe-agent")
	return buildBinary(t, "loupe-cni")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func randSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// addNetns makes a named netns (/run/netns/NAME) with lo up; removed in
// cleanup.
func addNetns(t testing.TB, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%s", prefix, randSuffix())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	path := filepath.Join("/run/netns", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	err := inNS(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatalf("netns %s: lo up: %v", name, err)
	}
	return path
}

func inNS(path string, f func() error) error { return cniclient.InNetns(path, f) }

// node is one node netns with its agent and a CNI client for it.
type node struct {
	t        testing.TB
	name     string
	netns    string
	dir      string
	bpfRoot  string
	socket   string
	podCIDR  string
	xdp      string
	agentCmd *exec.Cmd
	agentLog string
	done     chan struct{}
	client   *cniclient.Client
	conflist []byte
	stderr   *lockedBuffer
}

type nodeOpts struct {
	podCIDR string // default 10.244.7.0/24
	xdp     string // netconf xdp; "" = the agent's default
	version string // conflist cniVersion; default 1.1.0
}

func newNode(t testing.TB, o nodeOpts) *node {
	t.Helper()
	requireRoot(t)
	bin := binaries(t)
	if o.podCIDR == "" {
		o.podCIDR = "10.244.7.0/24"
	}
	if o.version == "" {
		o.version = "1.1.0"
	}
	dir := t.TempDir()
	n := &node{t: t, dir: dir, bpfRoot: filepath.Join(dir, "bpf"), socket: filepath.Join(dir, "agent.sock"),
		podCIDR: o.podCIDR, xdp: o.xdp, stderr: &lockedBuffer{}}
	n.netns = addNetns(t, "lcni-node")
	n.name = filepath.Base(n.netns)
	// Runs before TempDir's removal: pins live in a bpffs mounted below it.
	t.Cleanup(func() {
		if err := datapath.Cleanup(n.bpfRoot); err != nil {
			t.Errorf("datapath cleanup: %v", err)
		}
	})
	n.startAgent()
	t.Cleanup(n.stopAgent)

	xdp := ""
	if o.xdp != "" {
		xdp = fmt.Sprintf(`,"xdp":%q`, o.xdp)
	}
	// ADD waits at most 1 s for a missing agent here; TestPrivilegedAddWaitsForAgent waits longer.
	n.conflist = []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"loupe","plugins":[{"type":"loupe-cni","agentSocket":%q,"mtu":1500,"logLevel":"debug","agentWaitSeconds":1%s}]}`,
		o.version, n.socket, xdp))
	c, err := cniclient.New(n.netns, []string{bin}, n.conflist, cniclient.Options{CacheDir: filepath.Join(dir, "cni-cache"), Stderr: n.stderr})
	if err != nil {
		t.Fatal(err)
	}
	n.client = c
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("plugin stderr:\n%s", n.stderr.String())
		}
	})
	return n
}

func (n *node) startAgent() {
	t := n.t
	t.Helper()
	n.agentLog = filepath.Join(n.dir, fmt.Sprintf("agent-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(n.agentLog)
	if err != nil {
		t.Fatal(err)
	}
	// nsenter --net keeps the mount namespace, so the agent's bpffs under
	// bpfRoot is the one the plugin (a child of this test) sees.
	cmd := exec.Command("nsenter", "--net="+n.netns, filepath.Join(binaries(t), "loupe-agent"),
		"--node-name", n.name, "--pod-cidr", n.podCIDR, "--state-dir", filepath.Join(n.dir, "state"),
		"--bpf-root", n.bpfRoot, "--socket", n.socket, "--insecure-listen", "127.0.0.1:4244")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	logf.Close()
	n.agentCmd = cmd
	n.done = make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(n.done)
	if err := n.waitReady(30 * time.Second); err != nil {
		n.stopAgent()
		t.Fatalf("agent not ready: %v\n%s", err, n.agentLogTail())
	}
}

func (n *node) agentLogTail() string {
	b, _ := os.ReadFile(n.agentLog)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (n *node) stopAgent() {
	if n.agentCmd == nil {
		return
	}
	_ = n.agentCmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		_ = n.agentCmd.Process.Kill()
		<-n.done
		n.t.Errorf("agent ignored SIGTERM for 15s")
	}
	if n.t.Failed() {
		n.t.Logf("agent log %s:\n%s", n.agentLog, n.agentLogTail())
	}
	n.agentCmd = nil
}

func (n *node) agentAPI() (endpointgrpc.EndpointsClient, func()) {
	conn, err := grpc.NewClient("unix://"+n.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		n.t.Fatal(err)
	}
	return endpointgrpc.NewEndpointsClient(conn), func() { conn.Close() }
}

func (n *node) waitReady(timeout time.Duration) error {
	api, closeConn := n.agentAPI()
	defer closeConn()
	return poll(timeout, func() error {
		select {
		case <-n.done:
			return errStop{errors.New("agent exited")}
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := api.Status(ctx, &endpointv1.StatusRequest{})
		if err != nil {
			return err
		}
		if !st.GetReady() {
			return errors.New("not ready: " + st.GetMessage())
		}
		return nil
	})
}

func (n *node) list() *endpointv1.ListResponse {
	n.t.Helper()
	api, closeConn := n.agentAPI()
	defer closeConn()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := api.List(ctx, &endpointv1.ListRequest{})
	if err != nil {
		n.t.Fatalf("agent list: %v", err)
	}
	return l
}

// pod is one pod netns attached to a node.
type pod struct {
	att cniclient.Attachment
	res *current.Result
	ip  netip.Addr
	ip6 netip.Addr
}

func (n *node) newPodNetns() string { return addNetns(n.t, "lcni-pod") }

func (n *node) attachment(podNetns, name string) cniclient.Attachment {
	return cniclient.Attachment{ContainerID: "c-" + name + "-" + randSuffix(), Netns: podNetns, IfName: "eth0",
		PodNamespace: "default", PodName: name}
}

// addPod creates a pod netns and ADDs it; DEL runs in cleanup.
func (n *node) addPod(name string) *pod {
	n.t.Helper()
	att := n.attachment(n.newPodNetns(), name)
	p, err := n.add(att)
	if err != nil {
		n.t.Fatalf("ADD %s: %v", name, err)
	}
	n.t.Cleanup(func() {
		if err := n.del(att); err != nil {
			n.t.Errorf("cleanup DEL %s: %v", name, err)
		}
	})
	return p
}

func (n *node) add(att cniclient.Attachment) (*pod, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := n.client.Add(ctx, att)
	if err != nil {
		return nil, err
	}
	p := &pod{att: att, res: res}
	for _, ipc := range res.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		if a.Unmap().Is4() {
			p.ip = a.Unmap()
		} else {
			p.ip6 = a
		}
	}
	return p, nil
}

func (n *node) del(att cniclient.Attachment) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return n.client.Del(ctx, att)
}

func (n *node) check(att cniclient.Attachment) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return n.client.Check(ctx, att)
}

// openDatapath loads the datapath from the node's pins to read its maps.
// Load on existing pins is the agent-restart path: it reuses the maps and
// moves the pinned links to identical programs.
func (n *node) openDatapath() *datapath.Datapath {
	n.t.Helper()
	dp, err := datapath.Load(datapath.Config{BPFRoot: n.bpfRoot})
	if err != nil {
		n.t.Fatalf("load datapath: %v", err)
	}
	n.t.Cleanup(func() { dp.Close() })
	return dp
}

// assertGone checks that nothing of an attachment is left on the node.
func (n *node) assertGone(t testing.TB, att cniclient.Attachment, ip netip.Addr) {
	t.Helper()
	hostIf := hostIfname(att)
	err := inNS(n.netns, func() error {
		if _, err := netlink.LinkByName(hostIf); err == nil {
			return fmt.Errorf("host veth %s still exists", hostIf)
		}
		if ip.IsValid() {
			routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}}, netlink.RT_FILTER_DST)
			if err != nil {
				return err
			}
			if len(routes) > 0 {
				return fmt.Errorf("route to %s still exists: %v", ip, routes)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(n.bpfRoot, "links", hostIf)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("link pins of %s still exist (%v)", hostIf, err)
	}
	l := n.list()
	for _, e := range l.GetEndpoints() {
		if e.GetContainerId() == att.ContainerID {
			t.Errorf("agent still has endpoint %v", e)
		}
	}
	for _, a := range l.GetAllocations() {
		if a.GetContainerId() == att.ContainerID {
			t.Errorf("agent still has allocation %v", a)
		}
	}
}

func hostIfname(att cniclient.Attachment) string {
	return cni.HostIfname(att.ContainerID, att.IfName)
}

// poll retries f until it succeeds, returns errStop, or timeout passes.
func poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		var stop errStop
		if errors.As(err, &stop) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type errStop struct{ error }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ping sends ICMP echo requests from podNetns to dst until one is answered.
func ping(podNetns string, dst netip.Addr, timeout time.Duration) error {
	var c net.PacketConn
	err := inNS(podNetns, func() error {
		var err error
		c, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	defer c.Close()
	id := uint16(os.Getpid()) ^ uint16(time.Now().UnixNano())
	deadline := time.Now().Add(timeout)
	for seq := uint16(1); time.Now().Before(deadline); seq++ {
		msg := icmpEcho(8, id, seq, []byte("loupe-cni-test"))
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return fmt.Errorf("ping %s: %w", dst, err)
		}
		wait := time.Now().Add(500 * time.Millisecond)
		for {
			_ = c.SetReadDeadline(wait)
			buf := make([]byte, 1500)
			nr, from, err := c.ReadFrom(buf)
			if err != nil {
				break // timeout: send the next one
			}
			b := buf[:nr]
			if len(b) >= 8 && b[0] == 0 && binary.BigEndian.Uint16(b[4:]) == id &&
				from.(*net.IPAddr).IP.Equal(dst.AsSlice()) {
				return nil
			}
		}
	}
	return fmt.Errorf("ping %s from %s: no reply in %s", dst, podNetns, timeout)
}

func icmpEcho(typ uint8, id, seq uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], payload)
	binary.BigEndian.PutUint16(b[2:], inetChecksum(b))
	return b
}

func inetChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// listenTCP listens on ip:port inside podNetns.
func listenTCP(podNetns string, ip netip.Addr, port uint16) (net.Listener, error) {
	var ln net.Listener
	err := inNS(podNetns, func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(ip, port).String())
		return err
	})
	return ln, err
}

// dialTCP connects from inside podNetns.
func dialTCP(podNetns string, dst netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := inNS(podNetns, func() error {
		var err error
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err = d.Dial("tcp", dst.String())
		return err
	})
	return c, err
}

// sendForgedUDP sends one UDP datagram from podNetns whose IPv4 source is
// src, an address the pod does not own.
func sendForgedUDP(podNetns string, src, dst netip.Addr, sport, dport uint16) error {
	return inNS(podNetns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		payload := []byte("forged")
		pkt := make([]byte, 20+8+len(payload))
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		pkt[8] = 64
		pkt[9] = unix.IPPROTO_UDP
		s4, d4 := src.As4(), dst.As4()
		copy(pkt[12:16], s4[:])
		copy(pkt[16:20], d4[:])
		binary.BigEndian.PutUint16(pkt[10:], inetChecksum(pkt[:20]))
		binary.BigEndian.PutUint16(pkt[20:], sport)
		binary.BigEndian.PutUint16(pkt[22:], dport)
		binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload)))
		copy(pkt[28:], payload)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d4})
	})
}

// countLinks counts host veths loupe-cni named in the node netns.
func (n *node) hostVeths() []string {
	n.t.Helper()
	var names []string
	err := inNS(n.netns, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "lxc") {
				names = append(names, l.Attrs().Name)
			}
		}
		return nil
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return names
}

// linkPins lists the per-interface pin directories.
func (n *node) linkPins() []string {
	ents, err := os.ReadDir(filepath.Join(n.bpfRoot, "links"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		n.t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// hostRoutes lists the node's routes that point at lxc* veths.
func (n *node) podRoutes() []string {
	n.t.Helper()
	var out []string
	err := inNS(n.netns, func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.LinkIndex == 0 {
				continue
			}
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err == nil && strings.HasPrefix(l.Attrs().Name, "lxc") {
				out = append(out, r.String())
			}
		}
		return nil
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

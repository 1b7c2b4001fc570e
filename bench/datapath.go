package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/agent/daemon"
	"github.com/loupe-project/loupe/cni/cniclient"
	"github.com/loupe-project/loupe/datapath"
)

const (
	iperfPort = 5201
	rrPort    = 7001
)

// endpoint is one side of a datapath test.
type endpoint struct {
	netns string // path
	ip    string
}

// dpVariant is one configuration measured between a client and a server.
type dpVariant struct {
	key    string
	client endpoint
	server endpoint
	// setup configures the datapath and returns how to undo it.
	setup func() (undo func() error, err error)
}

// dpSample is one round of one variant.
type dpSample struct {
	gbps float64
	rr   rrResult
}

// DefaultMode is the XDP mode loupe pods get when nothing says otherwise:
// the agent's --xdp-mode default.
var DefaultMode = datapath.XDPMode(daemon.DefaultXDPMode)

// setMode attaches loupe's programs to the pods' host veths in mode, or
// takes every program off them for mode "nobpf".
func setMode(pods []labPod, mode string) error {
	for _, p := range pods {
		err := inNetns(p.Node.NetNSPath(), func() error {
			if mode == "nobpf" {
				return datapath.Detach(p.BPFRoot, p.HostIf)
			}
			return datapath.Attach(p.BPFRoot, p.HostIf, datapath.XDPMode(mode))
		})
		if err != nil {
			return fmt.Errorf("set %s on %s: %w", mode, p.Name, err)
		}
	}
	return nil
}

// setKernelDrops attaches (on) or detaches every lab agent's kernel-drop
// tracepoint.
func setKernelDrops(bl *benchLab, on bool) error {
	var errs []error
	for _, n := range bl.lab.Nodes {
		errs = append(errs, datapath.SetKernelDropsAttached(bl.lab.NodeBPFRoot(n.Name), on))
	}
	return errors.Join(errs...)
}

// setTracepoints attaches (on) or detaches every lab agent's kernel
// tracepoints: kernel drops and TCP retransmissions and resets.
func setTracepoints(bl *benchLab, on bool) error {
	errs := []error{setKernelDrops(bl, on)}
	for _, n := range bl.lab.Nodes {
		errs = append(errs, datapath.SetTCPEventsAttached(bl.lab.NodeBPFRoot(n.Name), on))
	}
	return errors.Join(errs...)
}

// emptyXDP loads an XDP program that only returns XDP_PASS: the least an XDP
// placement can do. frags marks it multi-buffer aware (SEC("xdp.frags")).
func emptyXDP(frags bool) (*ebpf.Program, error) {
	spec := &ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}, // XDP_PASS
	}
	if frags {
		spec.Flags = unix.BPF_F_XDP_HAS_FRAGS
	}
	p, err := ebpf.NewProgram(spec)
	if err != nil {
		return nil, fmt.Errorf("load empty xdp (frags=%v): %w", frags, err)
	}
	return p, nil
}

// attachXDP attaches prog in native mode to the pods' host veths; the links
// are not pinned, so they go with this process at the latest.
func attachXDP(pods []labPod, prog *ebpf.Program) (func() error, error) {
	var links []link.Link
	undo := func() error {
		var errs []error
		for _, l := range links {
			errs = append(errs, l.Close())
		}
		return errors.Join(errs...)
	}
	for _, p := range pods {
		err := inNetns(p.Node.NetNSPath(), func() error {
			ifc, err := net.InterfaceByName(p.HostIf)
			if err != nil {
				return err
			}
			l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
			if err != nil {
				return err
			}
			links = append(links, l)
			return nil
		})
		if err != nil {
			undo()
			return nil, fmt.Errorf("attach empty xdp to %s: %w", p.Name, err)
		}
	}
	return undo, nil
}

// setMTU sets the MTU of both ends of each pod's veth pair.
func setMTU(ctx context.Context, pods []labPod, mtu int) error {
	for _, p := range pods {
		// Shrink the side that limits the other last, grow it first: the
		// pod end first when growing.
		if _, err := run(ctx, "ip", "-n", filepath.Base(p.Netns), "link", "set", "dev", "eth0", "mtu", strconv.Itoa(mtu)); err != nil {
			return err
		}
		if _, err := run(ctx, "ip", "-n", p.Node.Name, "link", "set", "dev", p.HostIf, "mtu", strconv.Itoa(mtu)); err != nil {
			return err
		}
	}
	return nil
}

// ptpPods creates two pods on node 1 with the reference ptp + host-local
// plugins, through libcni as a runtime would. cleanup removes them.
func ptpPods(ctx context.Context, cfg *Config, bl *benchLab) (a, b endpoint, cleanup func(), err error) {
	n := bl.pods["c1"].Node
	conf := ptpConflist("lbptp", fmt.Sprintf("10.97.%d.0/24", bl.lab.Index), filepath.Join(cfg.OutDir, "ptp-ipam"))
	c, err := cniclient.New(n.NetNSPath(), []string{cfg.PlugDir}, conf, cniclient.Options{CacheDir: filepath.Join(cfg.OutDir, "cni-cache")})
	if err != nil {
		return a, b, func() {}, err
	}
	var made []cniclient.Attachment
	cleanup = func() {
		for _, at := range made {
			_ = c.Del(context.Background(), at)
			delNetns(filepath.Base(at.Netns))
		}
	}
	var eps []endpoint
	for _, s := range []string{"ptpa", "ptpb"} {
		name := cfg.LabName + "-" + s
		delNetns(name)
		if err := addNetns(ctx, name); err != nil {
			return a, b, cleanup, err
		}
		at := cniclient.Attachment{ContainerID: cfg.LabName + s, Netns: netnsPath(name), IfName: "eth0"}
		made = append(made, at)
		res, err := c.Add(ctx, at)
		if err != nil {
			return a, b, cleanup, fmt.Errorf("ptp add %s: %w", name, err)
		}
		if len(res.IPs) == 0 {
			return a, b, cleanup, fmt.Errorf("ptp add %s: no address", name)
		}
		eps = append(eps, endpoint{netns: at.Netns, ip: res.IPs[0].Address.IP.String()})
	}
	return eps[0], eps[1], cleanup, nil
}

func ptpConflist(name, subnet, dataDir string) []byte {
	b, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": name,
		"plugins": []any{map[string]any{
			"type": "ptp", "mtu": 1500, "ipMasq": false,
			"ipam": map[string]any{
				"type": "host-local", "dataDir": dataDir,
				"ranges": [][]map[string]string{{{"subnet": subnet}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
			},
		}},
	})
	return b
}

// runDatapath measures every variant, round-robin, so that the machine's
// drift hits them alike, and returns the rows.
func runDatapath(ctx context.Context, cfg *Config, bl *benchLab) (rows []Row, err error) {
	c1, s1, s2, s3 := bl.pods["c1"], bl.pods["s1"], bl.pods["s2"], bl.pods["s3"]
	same, cross, guarded := []labPod{c1, s1}, []labPod{c1, s2}, []labPod{c1, s3}
	restore := func() error { return setMode([]labPod{c1, s1, s2, s3}, string(DefaultMode)) }
	defer func() {
		if rerr := restore(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore the default datapath: %w", rerr))
		}
	}()

	pa, pb, ptpCleanup, err := ptpPods(ctx, cfg, bl)
	defer ptpCleanup()
	if err != nil {
		return nil, err
	}

	epC1 := endpoint{c1.Netns, c1.IP}
	epS1 := endpoint{s1.Netns, s1.IP}
	epS2 := endpoint{s2.Netns, s2.IP}
	epS3 := endpoint{s3.Netns, s3.IP}
	mode := func(pods []labPod, m string) func() (func() error, error) {
		return func() (func() error, error) { return func() error { return nil }, setMode(pods, m) }
	}
	// An XDP option: loupe's TCX programs, plus xdp (an empty program, or
	// loupe's own in native mode when prog is nil), at mtu.
	option := func(frags, empty bool, mtu int) func() (func() error, error) {
		return func() (func() error, error) {
			undoMTU := func() error { return setMTU(context.Background(), same, 1500) }
			if empty {
				if err := setMode(same, string(datapath.XDPOff)); err != nil {
					return nil, err
				}
			} else if err := setMode(same, "nobpf"); err != nil {
				return nil, err
			}
			if err := setMTU(ctx, same, mtu); err != nil {
				return undoMTU, err
			}
			if !empty {
				return undoMTU, setMode(same, string(datapath.XDPNative))
			}
			prog, err := emptyXDP(frags)
			if err != nil {
				return undoMTU, err
			}
			detach, err := attachXDP(same, prog)
			if err != nil {
				prog.Close()
				return undoMTU, err
			}
			return func() error {
				err := detach()
				prog.Close()
				return errors.Join(err, undoMTU())
			}, nil
		}
	}
	// The default datapath with every agent's kernel tracepoints (kernel
	// drops, TCP retransmissions and resets) detached: the baseline of
	// what the tracepoints cost.
	noTracepoints := func() (func() error, error) {
		if err := setMode(same, string(DefaultMode)); err != nil {
			return nil, err
		}
		return func() error { return setTracepoints(bl, true) }, setTracepoints(bl, false)
	}
	// The default datapath without per-connection bytes and handshake
	// timing: the baseline of what they cost.
	noConnStats := func() (func() error, error) {
		if err := setMode(same, string(DefaultMode)); err != nil {
			return nil, err
		}
		return func() error { return setConnStats(same, true) }, setConnStats(same, false)
	}
	// The default datapath with node 1's agent restarted with --l7=off,
	// which loads the programs without the L7 hook: the baseline of what
	// L7 capture costs packets that are not DNS or HTTP.
	agentBin := filepath.Join(cfg.BinDir, "loupe-agent")
	l7Off := func() (func() error, error) {
		restore := func() error { return bl.lab.RestartAgent(context.WithoutCancel(ctx), agentBin, c1.Node.Name) }
		if err := bl.lab.RestartAgent(ctx, agentBin, c1.Node.Name, "--l7=off"); err != nil {
			return restore, err
		}
		return restore, setMode(same, string(DefaultMode))
	}
	variants := []dpVariant{
		{"nobpf", epC1, epS1, mode(same, "nobpf")},
		{"no_tracepoints", epC1, epS1, noTracepoints},
		{"l7_off", epC1, epS1, l7Off},
		{"xdp_off", epC1, epS1, mode(same, string(datapath.XDPOff))},
		// Right after the default, so that drift between them is small.
		{"no_conn_stats", epC1, epS1, noConnStats},
		// s1 through its Service's ClusterIP, translated in the from-pod
		// program, against the default two steps before it.
		{"service", epC1, endpoint{s1.Netns, bl.serviceIP}, mode(same, string(DefaultMode))},
		{"xdp_generic", epC1, epS1, mode(same, string(datapath.XDPGeneric))},
		{"xdp_native", epC1, epS1, mode(same, string(datapath.XDPNative))},
		{"ptp", pa, pb, mode(same, string(DefaultMode))},
		{"cross_nobpf", epC1, epS2, mode(cross, "nobpf")},
		{"cross_default", epC1, epS2, mode(cross, string(DefaultMode))},
		{"policy", epC1, epS3, mode(guarded, string(DefaultMode))},
		{"opt_native_empty", epC1, epS1, option(false, true, 1500)},
		{"opt_native_empty_frags", epC1, epS1, option(true, true, 1500)},
		{"opt_native_frags_mtu9000", epC1, epS1, option(true, true, 9000)},
		{"opt_native_mtu3500", epC1, epS1, option(false, false, 3500)},
	}

	// Servers: iperf3 and the request/response echo in each server pod.
	servers := map[string]endpoint{}
	for _, v := range variants {
		servers[v.server.netns] = v.server
	}
	for _, s := range servers {
		is, err := startIperfServer(ctx, s.netns, iperfPort)
		if err != nil {
			return nil, err
		}
		defer is.stop()
		rs, err := startRRServer(s.netns, rrPort)
		if err != nil {
			return nil, err
		}
		defer rs.stop()
	}

	secs, omit := pick(cfg, 4, 1, 1), pick(cfg, 1, 0, 0)
	rrDur := pick(cfg, 3*time.Second, time.Second, 300*time.Millisecond)
	samples := map[string][]dpSample{}
	for r := range cfg.rounds() {
		for _, v := range variants {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			undo, err := v.setup()
			if err != nil {
				if undo != nil {
					undo()
				}
				return nil, fmt.Errorf("datapath %s: %w", v.key, err)
			}
			s, err := measure(ctx, v, secs, omit, rrDur)
			if uerr := undo(); uerr != nil && err == nil {
				err = fmt.Errorf("undo: %w", uerr)
			}
			if err != nil {
				return nil, fmt.Errorf("datapath %s round %d: %w", v.key, r+1, err)
			}
			cfg.Log.Info("datapath", "variant", v.key, "round", r+1, "gbps", fmt.Sprintf("%.2f", s.gbps),
				"tps", fmt.Sprintf("%.0f", s.rr.TPS), "p50us", s.rr.P50, "p99us", s.rr.P99)
			samples[v.key] = append(samples[v.key], s)
		}
	}
	return datapathRows(samples)
}

func measure(ctx context.Context, v dpVariant, secs, omit int, rrDur time.Duration) (dpSample, error) {
	g, err := iperfRun(ctx, v.client.netns, v.server.ip, iperfPort, secs, omit)
	if err != nil {
		return dpSample{}, err
	}
	rr, err := rrRun(ctx, v.client.netns, v.server.ip, rrPort, rrDur)
	if err != nil {
		return dpSample{}, err
	}
	return dpSample{gbps: g, rr: rr}, nil
}

func datapathRows(s map[string][]dpSample) ([]Row, error) {
	get := func(key string, f func(dpSample) float64) []float64 {
		var out []float64
		for _, x := range s[key] {
			out = append(out, f(x))
		}
		return out
	}
	gbps := func(x dpSample) float64 { return x.gbps }
	tps := func(x dpSample) float64 { return x.rr.TPS }
	p50 := func(x dpSample) float64 { return x.rr.P50 }
	p99 := func(x dpSample) float64 { return x.rr.P99 }
	def := "xdp_" + string(DefaultMode)
	const tgt = 0.95
	latTgt := 1 / tgt
	type spec struct {
		name, unit, value, base string
		f                       func(dpSample) float64
		target                  float64
		better                  Better
		note                    string
	}
	specs := []spec{
		{"datapath_throughput", "Gbit/s", def, "nobpf", gbps, tgt, Higher, "default datapath (xdp " + string(DefaultMode) + "), same node, 1 TCP stream, vs the same veths without BPF"},
		{"datapath_rr", "tx/s", def, "nobpf", tps, tgt, Higher, "1-byte TCP request/response, same node"},
		{"datapath_rr_p50", "µs", def, "nobpf", p50, latTgt, Lower, ""},
		{"datapath_rr_p99", "µs", def, "nobpf", p99, 1.10, Lower, "tail latency of the same request/response, target at most 1.10×"},
		{"datapath_throughput_xdp_native", "Gbit/s", "xdp_native", "nobpf", gbps, tgt, Higher, "TCX + loupe XDP in driver mode"},
		{"datapath_throughput_xdp_generic", "Gbit/s", "xdp_generic", "nobpf", gbps, tgt, Higher, "TCX + loupe XDP in generic (skb) mode"},
		{"datapath_throughput_xdp_off", "Gbit/s", "xdp_off", "nobpf", gbps, tgt, Higher, "TCX only"},
		{"datapath_rr_xdp_native", "tx/s", "xdp_native", "nobpf", tps, tgt, Higher, ""},
		{"datapath_rr_xdp_generic", "tx/s", "xdp_generic", "nobpf", tps, tgt, Higher, ""},
		{"datapath_rr_xdp_off", "tx/s", "xdp_off", "nobpf", tps, tgt, Higher, ""},
		{"datapath_throughput_cross_node", "Gbit/s", "cross_default", "cross_nobpf", gbps, tgt, Higher, "default datapath, pods on two nodes (native routing over the lab bridge)"},
		{"datapath_rr_cross_node", "tx/s", "cross_default", "cross_nobpf", tps, tgt, Higher, ""},
		{"datapath_throughput_policy1000", "Gbit/s", "policy", def, gbps, tgt, Higher, "default datapath to a pod with 1,000 ingress NetworkPolicy rules vs a pod with none"},
		{"datapath_rr_policy1000", "tx/s", "policy", def, tps, tgt, Higher, ""},
		{"datapath_throughput_vs_ptp", "Gbit/s", def, "ptp", gbps, tgt, Higher, "default datapath vs reference ptp plugin pods on the same node"},
		{"datapath_rr_vs_ptp", "tx/s", def, "ptp", tps, tgt, Higher, ""},
		{"ptp_throughput", "Gbit/s", "ptp", "nobpf", gbps, tgt, Higher, "the reference ptp plugin itself vs loupe's veths without BPF"},
		{"xdp_option_native_empty_throughput", "Gbit/s", "opt_native_empty", "nobpf", gbps, tgt, Higher, "TCX + an empty XDP_PASS program, driver mode, MTU 1500"},
		{"xdp_option_native_empty_frags_throughput", "Gbit/s", "opt_native_empty_frags", "nobpf", gbps, tgt, Higher, "TCX + an empty xdp.frags program, driver mode, MTU 1500"},
		{"xdp_option_native_frags_mtu9000_throughput", "Gbit/s", "opt_native_frags_mtu9000", "nobpf", gbps, tgt, Higher, "TCX + an empty xdp.frags program, driver mode, veth MTU 9000"},
		{"xdp_option_native_mtu3500_throughput", "Gbit/s", "opt_native_mtu3500", "nobpf", gbps, tgt, Higher, "TCX + loupe XDP driver mode, veth MTU 3500 (the most a non-frags program allows)"},
		{"xdp_option_native_empty_rr", "tx/s", "opt_native_empty", "nobpf", tps, tgt, Higher, ""},
		{"connection_stats_throughput", "Gbit/s", def, "no_conn_stats", gbps, tgt, Higher, "default datapath with per-connection bytes and TCP handshake timing (--connection-stats) vs the same datapath without them, same node"},
		{"connection_stats_rr", "tx/s", def, "no_conn_stats", tps, tgt, Higher, "1-byte TCP request/response, same node, connection stats on vs off"},
		{"connection_stats_rr_p50", "µs", def, "no_conn_stats", p50, latTgt, Lower, "the steadiest figure on a busy machine"},
		{"kernel_tracepoints_throughput", "Gbit/s", def, "no_tracepoints", gbps, tgt, Higher, "default datapath with every agent's skb:kfree_skb and tcp:tcp_retransmit_skb/tcp_send_reset/tcp_receive_reset tracepoints attached vs detached, same node"},
		{"kernel_tracepoints_rr", "tx/s", def, "no_tracepoints", tps, tgt, Higher, ""},
		{"datapath_throughput_l7", "Gbit/s", def, "l7_off", gbps, tgt, Higher, "default datapath (--l7=dns,http) vs the same with node 1's agent restarted with --l7=off, same node, 1 TCP stream"},
		{"datapath_rr_l7", "tx/s", def, "l7_off", tps, tgt, Higher, "1-byte TCP request/response, --l7=dns,http vs --l7=off"},
		{"service_throughput", "Gbit/s", "service", def, gbps, tgt, Higher, "1 TCP stream to s1 through its ClusterIP (translated before policy) vs to s1's pod IP, same node (issue #19)"},
		{"service_rr", "tx/s", "service", def, tps, tgt, Higher, "1-byte TCP request/response through the ClusterIP vs to the pod IP"},
		{"service_rr_p50", "µs", "service", def, p50, latTgt, Lower, ""},
	}
	var rows []Row
	var errs []error
	for _, sp := range specs {
		r, err := NewRow(sp.name, sp.unit, get(sp.value, sp.f), get(sp.base, sp.f), sp.base, sp.target, sp.better, sp.note)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rows = append(rows, r)
	}
	return rows, errors.Join(errs...)
}

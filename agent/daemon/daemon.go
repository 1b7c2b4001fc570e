// Package daemon runs a complete loupe-agent: it loads the real datapath,
// sets up the node's gateway, restores the endpoints, reads the metadata
// source, feeds datapath events to the flow observer and serves the
// endpoint API, the Observer API and the health endpoints until its
// context ends. cmd/loupe-agent only parses flags into a Config.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/loupe-project/loupe/agent"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/internal/httpserve"
	"github.com/loupe-project/loupe/internal/pprofhttp"
	"github.com/loupe-project/loupe/internal/version"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/otlp"
	"github.com/loupe-project/loupe/policy"
	"github.com/loupe-project/loupe/resources"
)

// DefaultListen is the Observer API's TCP address: Hubble's port on every
// interface.
var DefaultListen = ":" + strconv.Itoa(contract.ObserverPort)

// Defaults of the agent's settings.
const (
	DefaultStateDir       = "/var/run/loupe/state"
	DefaultBPFRoot        = "/sys/fs/bpf/loupe"
	DefaultSocket         = "/run/loupe/agent.sock"
	DefaultXDPMode        = "off"
	DefaultFlowBufferSize = 65535
	// ObserverSocketName is the Observer API's unix socket, created next to
	// the endpoint API socket (as Hubble serves on hubble.sock locally).
	ObserverSocketName = "observer.sock"
)

// deadEndpointSweep is how often the agent releases endpoints whose host
// veth is gone (agent/sweep.go): pods whose DEL did not reach the agent.
const deadEndpointSweep = 30 * time.Second

// Config is the agent's settings; see cmd/loupe-agent for their flags.
type Config struct {
	NodeName            string
	PodCIDRs            []netip.Prefix
	StateDir            string
	BPFRoot             string
	Socket              string // endpoint API (unix, 0600)
	Listen              string // Observer gRPC (TCP); "" = unix socket only
	MetricsListen       string // /metrics, /healthz, /readyz (HTTP); "" = off
	PprofListen         string // Go's /debug/pprof (HTTP); "" = off
	XDPMode             string
	ManifestsDir        string // metadata folder; "" = no metadata
	FlowBufferSize      int
	DropEventsPerSecond uint32
	// EventsRingBytes sizes the datapath's events ring buffer (0: the
	// datapath's default, 16 MiB).
	EventsRingBytes uint32
	Log             *slog.Logger
	// ReportInterval is how often a long connection gets a periodic flow
	// with its counters (0: the datapath's default, 5 s); NoConnStats
	// turns per-connection bytes and handshake timing off.
	ReportInterval time.Duration
	NoConnStats    bool
	// NoServiceTranslation turns ClusterIP translation off
	// (--service-translation=off): Services are then left to kube-proxy.
	NoServiceTranslation bool
	// NoLocalRedirect routes pod-to-pod packets on this node through the
	// host (--local-redirect=off) instead of bpf_redirect_peer.
	NoLocalRedirect bool

	// Kernel drops (the skb:kfree_skb tracepoint): off, the reasons not
	// reported (nil: DefaultKernelDropDeny; "none": none) and the node's
	// event rate limit (0: the datapath's default).
	NoKernelDrops             bool
	KernelDropDeny            []string
	KernelDropEventsPerSecond uint32
	// TCP retransmissions and resets (tcp tracepoints): off, and the
	// node's event rate limit (0: the datapath's default).
	NoTCPEvents        bool
	TCPEventsPerSecond uint32

	// L7 capture (--l7 "dns,http", "dns", "http" or "off"; "" = DefaultL7),
	// its DNS ports (nil: the datapath's default), the node's L7 record rate
	// limit (0: the datapath's default) and how long a DNS query waits for
	// its answer (0: l7's default).
	L7                string
	L7DNSPorts        []uint16
	L7EventsPerSecond uint32
	L7DNSTimeout      time.Duration
	L7KeepQuery       bool // keep URL query strings in HTTP flows

	// OTLP, when its endpoint is set, exports flows and metrics to an
	// OpenTelemetry collector (otlp.go).
	OTLP otlp.Config

	// Runtime security events (secevents): the default rules off, a
	// folder of more rules, and the node's event rate limit (0: default).
	NoDefaultRules          bool
	RulesDir                string
	SecurityEventsPerSecond uint32

	// Metadata, when set, is the metadata source (e.g. the API server's,
	// package metadata/k8s); it takes the place of ManifestsDir.
	Metadata metadata.Source
	// NetNS, when set, is the network namespace where the node-side work
	// happens (gateway link, forwarding sysctls, host link checks), for
	// running an agent in-process next to others. nil: the process's own.
	// Listening sockets are always opened in the process's namespace.
	NetNS ns.NetNS
	// Ready, when set, is called once the endpoint API is being served.
	Ready func(*agent.Agent)
	// NewObserver builds the flow observer (cmd/loupe-agent passes
	// observer.New). nil runs no observer: events stay in the ring buffer
	// and the Observer API is not served.
	NewObserver func(ObserverParams) (Observer, error)
}

// Observer is the flow observer as the daemon drives it (package observer).
type Observer interface {
	// HandleEvent is called from the event reader; raw is valid only
	// during the call.
	HandleEvent(raw []byte)
	// AddLostEvents reports n events the datapath could not hand over
	// (its ring buffer was full).
	AddLostEvents(n uint64)
	// AddRateLimitedDropEvents reports n drop events the datapath held
	// back under its drop-event rate limit.
	AddRateLimitedDropEvents(n uint64)
	// Serve serves the Observer, Peer and Health gRPC services on a TCP
	// address and a unix socket until ctx is done.
	Serve(ctx context.Context, listenAddr, unixSocketPath string) error
	MetricsHandler() http.Handler
}

// ObserverParams is what the daemon gives NewObserver.
type ObserverParams struct {
	NodeName   string
	Metadata   metadata.Source
	BufferSize int
	Log        *slog.Logger
	// Datapath is the loaded datapath, for counters and conntrack.
	Datapath *datapath.Datapath
	// Endpoints lists the node's endpoints (for enrichment by ifindex/id).
	Endpoints func() []agent.Endpoint
	// Policy names the policies behind the datapath's rule ids.
	Policy *policy.RuleTable
	// KernelEvents places and names kernel drops; nil when they are off.
	KernelEvents observer.KernelEvents
	// ServiceByID names the Service of an event's ServiceID; nil when
	// service translation is off.
	ServiceByID func(id uint32) (namespace, name string, ok bool)
	// L7 configures L7 flows; L7On says the datapath captures them.
	L7   observer.L7Config
	L7On bool
	// Services are more gRPC services for the Observer's listeners (the
	// security events).
	Services []func(grpc.ServiceRegistrar)
}

// DefaultL7 is --l7's default: DNS and HTTP.
const DefaultL7 = "dns,http"

// l7Observer is an Observer that turns L7 records into flows.
type l7Observer interface {
	HandleL7(raw []byte)
	RunL7(ctx context.Context, losses observer.L7LossSource)
}

// flowFollower is an Observer that runs a flow sink off the event
// reader's path (observer.FollowSink).
type flowFollower interface {
	FollowSink(ctx context.Context, name string, s observer.FlowSink) error
}

// Validate checks the settings and fills defaults for empty ones.
func (c *Config) Validate() error {
	if c.NodeName == "" {
		return errors.New("--node-name is required")
	}
	if len(c.PodCIDRs) == 0 {
		return errors.New("--pod-cidr is required")
	}
	var v4, v6 int
	for _, p := range c.PodCIDRs {
		if p.Addr().Is4() {
			v4++
		} else {
			v6++
		}
	}
	if v4 > 1 || v6 > 1 {
		return errors.New("--pod-cidr: at most one IPv4 and one IPv6 CIDR")
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.BPFRoot == "" {
		c.BPFRoot = DefaultBPFRoot
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.L7 == "" {
		c.L7 = DefaultL7
	}
	if _, err := datapath.ParseL7Mode(c.L7); err != nil {
		return fmt.Errorf("--l7: %w", err)
	}
	if c.XDPMode == "" {
		c.XDPMode = DefaultXDPMode
	}
	if _, err := datapath.ParseXDPMode(c.XDPMode); err != nil {
		return fmt.Errorf("--xdp-mode: %w", err)
	}
	if c.FlowBufferSize <= 0 {
		c.FlowBufferSize = DefaultFlowBufferSize
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// inNetNS runs fn in cfg.NetNS, or directly when it is nil.
func (c *Config) inNetNS(fn func() error) error {
	if c.NetNS == nil {
		return fn()
	}
	return c.NetNS.Do(func(ns.NetNS) error { return fn() })
}

// Run runs the agent until ctx ends or a part of it fails. On the way out
// it stops serving and closes its file descriptors, but keeps the pins and
// the state dir, so pods keep their datapath while no agent runs.
func Run(ctx context.Context, cfg Config) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Log
	tuneGC(log)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	defer func() {
		cancel()
		if werr := g.Wait(); err == nil {
			err = werr
		}
	}()

	for _, d := range []string{cfg.StateDir, cfg.BPFRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	// The socket folder holds the Observer socket too, which is served
	// before the endpoint API's listener would create the folder.
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o750); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(cfg.Socket), err)
	}

	// A fresh node netns starts with lo down; the agent's own listeners on
	// 127.0.0.1 (and anything local in the node) need it up.
	if err := cfg.inNetNS(agent.LoopbackUp); err != nil {
		return err
	}

	// Health endpoints come first, so a probe sees "not ready" while the
	// datapath loads rather than nothing.
	var ready atomic.Pointer[agent.Agent]
	var metrics atomic.Pointer[metricsSet]
	if cfg.MetricsListen != "" {
		l, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", cfg.MetricsListen, err)
		}
		srv := &http.Server{Handler: healthMux(&ready, &metrics), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		g.Go(func() error { return httpserve.Serve(ctx, srv, l) })
		log.Info("metrics and health listening", "addr", l.Addr().String())
	}
	if cfg.PprofListen != "" {
		serve, err := pprofhttp.Listen(ctx, cfg.PprofListen, log)
		if err != nil {
			return err
		}
		g.Go(serve)
	}

	gw4, gw6, err := gateways(cfg.PodCIDRs)
	if err != nil {
		return err
	}
	if err := cfg.inNetNS(func() error {
		if err := agent.SetupGateway(nil, gw4, gw6); err != nil {
			return err
		}
		return agent.EnableForwarding(gw6.IsValid())
	}); err != nil {
		return err
	}
	log.Info("gateway ready", "link", agent.GatewayLink, "ipv4", gw4, "ipv6", gw6)

	l7Mode, _ := datapath.ParseL7Mode(cfg.L7) // checked by Validate
	dp, err := datapath.Load(datapath.Config{BPFRoot: cfg.BPFRoot, DropEventsPerSecond: cfg.DropEventsPerSecond,
		ReportInterval: cfg.ReportInterval, NoConnStats: cfg.NoConnStats, NoLocalRedirect: cfg.NoLocalRedirect,
		L7: l7Mode, DNSPorts: cfg.L7DNSPorts, L7EventsPerSecond: cfg.L7EventsPerSecond,
		EventsRingBytes: cfg.EventsRingBytes})
	if err != nil {
		return err
	}
	// Closing keeps the pins. It must wait for the event reader.
	defer func() {
		cancel()
		if werr := g.Wait(); err == nil {
			err = werr
		}
		if cerr := dp.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close datapath: %w", cerr)
		}
	}()
	log.Info("datapath loaded", "bpf_root", cfg.BPFRoot)

	ag, err := agent.New(agent.Config{
		NodeName: cfg.NodeName, PodCIDRs: cfg.PodCIDRs, StateDir: cfg.StateDir, BPFRoot: cfg.BPFRoot,
		XDPMode: cfg.XDPMode, Datapath: dp, Version: version.Version, Log: log,
		HostLinkAlive: func(ifindex uint32, name string) bool {
			alive := true
			err := cfg.inNetNS(func() error {
				l, err := netlink.LinkByIndex(int(ifindex))
				var nf netlink.LinkNotFoundError
				switch {
				case errors.As(err, &nf):
					alive = false
				case err == nil:
					// The kernel may have given the index to another link.
					alive = l.Attrs().Name == name
				}
				return nil
			})
			// When the lookup itself fails, keep the endpoint.
			return alive || err != nil
		},
		DetachHostLink: func(name string) error { return datapath.Detach(cfg.BPFRoot, name) },
		AttachHostLink: func(name, mode string) error {
			return cfg.inNetNS(func() error { return datapath.Attach(cfg.BPFRoot, name, datapath.XDPMode(mode)) })
		},
		CheckHostLink: func(name, mode string) error {
			return cfg.inNetNS(func() error { return datapath.CheckAttached(cfg.BPFRoot, name, datapath.XDPMode(mode)) })
		},
		HostLinkName: func(ifindex uint32) (string, bool) {
			var name string
			// A failed lookup counts as no link: the entry is not rebuilt.
			_ = cfg.inNetNS(func() error {
				if l, err := netlink.LinkByIndex(int(ifindex)); err == nil {
					name = l.Attrs().Name
				}
				return nil
			})
			return name, name != ""
		},
		HostLinkMAC: func(ifindex uint32) string {
			var mac string
			_ = cfg.inNetNS(func() error {
				if l, err := netlink.LinkByIndex(int(ifindex)); err == nil && len(l.Attrs().HardwareAddr) > 0 {
					mac = l.Attrs().HardwareAddr.String()
				}
				return nil
			})
			return mac
		},
	})
	if err != nil {
		return err
	}

	var src metadata.Source = metadata.Static{}
	if cfg.Metadata != nil {
		src = cfg.Metadata
	} else if cfg.ManifestsDir != "" {
		f, err := metadata.NewFolder(ctx, cfg.ManifestsDir, log)
		if err != nil {
			return err
		}
		src = f
	}
	g.Go(func() error {
		return repeat(ctx, deadEndpointSweep, func() {
			if _, err := ag.SweepDead(); err != nil {
				log.Warn("sweep of dead endpoints; retried next round", "err", err)
			}
		})
	})
	// A generation counts as applied once its policy is in the datapath.
	pol := newPolicyEngine(cfg.NodeName, dp, ag, log)
	g.Go(func() error { return pol.Run(ctx, src, ag.EndpointsChanged(), ag.SetAppliedGeneration) })

	svcNames, err := startServiceTranslation(ctx, g, &cfg, dp, src, log)
	if err != nil {
		return err
	}

	dpReg := prometheus.NewRegistry()
	dpReg.MustRegister(newDatapathCollector(dp, log), newInvalidPolicyCollector(pol), newStateRecoveryMetric(ag.StateRecoveries()), newPolicyMapCollector(dp, pol.Refused))
	kev, kdrops, err := startKernelDrops(&cfg, dp, ag, log)
	if err != nil {
		return err
	}
	var kernelEvents observer.KernelEvents
	if kdrops != nil {
		defer kdrops.Close()
		kernelEvents = kev
		dpReg.MustRegister(newKernelDropCollector(dp.EventStats))
	}
	kev, tcpEvents, err := startTCPEvents(&cfg, dp, ag, kev, log)
	if err != nil {
		return err
	}
	var tcpStats func() (datapath.TCPStats, error)
	if tcpEvents != nil {
		defer tcpEvents.Close()
		kernelEvents, tcpStats = kev, tcpEvents.Stats
		dpReg.MustRegister(newTCPEventCollector(tcpStats))
	}
	sec, err := startSecurityEvents(&cfg, ag.Endpoints, src, log)
	if err != nil {
		return err
	}
	var services []func(grpc.ServiceRegistrar)
	if sec != nil {
		defer sec.Close()
		g.Go(func() error { return sec.run(ctx) })
		services = append(services, sec.register)
		dpReg.MustRegister(sec.collectors()...)
	}
	res, err := startResources(&cfg, ag.Endpoints, src, log)
	if err != nil {
		return err
	}
	if res != nil {
		defer res.Close()
		if sec != nil {
			res.oom = sec.store.Add
		}
		g.Go(func() error { return res.run(ctx) })
		services = append(services, res.register)
		dpReg.MustRegister(resources.NewCollector(res.read), newResourceLossCollector(res.kernel.Counters))
	}
	var obs Observer
	if cfg.NewObserver != nil {
		obs, err = cfg.NewObserver(ObserverParams{NodeName: cfg.NodeName, Metadata: src,
			BufferSize: cfg.FlowBufferSize, Log: log, Datapath: dp, Endpoints: ag.Endpoints, Policy: pol.Rules(),
			KernelEvents: kernelEvents, ServiceByID: svcNames, L7: observer.L7Config{DNSTimeout: cfg.L7DNSTimeout, KeepQuery: cfg.L7KeepQuery}, L7On: l7Mode != 0,
			Services: services})
		if err != nil {
			return fmt.Errorf("observer: %w", err)
		}
		g.Go(func() error { return dp.ReadEvents(ctx, obs.HandleEvent) })
		if lo, ok := obs.(l7Observer); ok && l7Mode != 0 {
			g.Go(func() error { return dp.ReadL7(ctx, lo.HandleL7) })
			g.Go(func() error { lo.RunL7(ctx, dp.L7Stats); return nil })
		}
		g.Go(func() error {
			return forwardLostEvents(ctx, withTCPLosses(withKernelDropLosses(dp.EventStats), tcpStats), obs, filepath.Join(cfg.StateDir, lostEventsStateFile), lostEventsPoll, log)
		})
		// The unix socket is always served, for local tools; TCP only when
		// --listen is set.
		obsSock := filepath.Join(filepath.Dir(cfg.Socket), ObserverSocketName)
		g.Go(func() error { return obs.Serve(ctx, cfg.Listen, obsSock) })
		if sk, ok := obs.(flowFollower); ok && sec != nil {
			// The network rules over the flows, off the event reader's
			// path: they cost it half as much again as decoding.
			g.Go(func() error { return sk.FollowSink(ctx, "security", sec) })
		}
		if err := startOTLP(ctx, g, &cfg, obs, dpReg); err != nil {
			return err
		}
	} else {
		log.Warn("no flow observer: datapath events are not read")
	}
	all, dpOnly := metricsHandlers(dpReg, obs)
	metrics.Store(&metricsSet{all: all, datapathOnly: dpOnly})

	l, err := agent.ListenUnix(cfg.Socket)
	if err != nil {
		return err
	}
	g.Go(func() error { return ag.ServeListener(ctx, l, cfg.Socket) })
	ready.Store(ag)
	if cfg.Ready != nil {
		cfg.Ready(ag)
	}
	log.Info("agent ready", "node", cfg.NodeName, "pod_cidrs", ag.PodCIDRs(), "socket", cfg.Socket,
		"listen", cfg.Listen, "xdp_mode", cfg.XDPMode, "version", version.Version)
	<-ctx.Done()
	log.Info("agent stopping; pins and state are kept")
	return nil
}

// gateways returns the first address after the network address of each
// pod CIDR.
func gateways(cidrs []netip.Prefix) (v4, v6 netip.Addr, err error) {
	for _, c := range cidrs {
		if c != c.Masked() {
			return v4, v6, fmt.Errorf("--pod-cidr %s has host bits set", c)
		}
		if c.Addr().Is4() {
			v4 = c.Addr().Next()
		} else {
			v6 = c.Addr().Next()
		}
	}
	return v4, v6, nil
}

// metricsSet is what /metrics and /metrics/datapath serve once loaded.
type metricsSet struct {
	all, datapathOnly http.Handler
}

func healthMux(ready *atomic.Pointer[agent.Agent], metrics *atomic.Pointer[metricsSet]) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load().Ready() {
			http.Error(w, "not ready: datapath not loaded", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	serve := func(pick func(*metricsSet) http.Handler) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			m := metrics.Load()
			if m == nil {
				http.Error(w, "metrics not available yet", http.StatusServiceUnavailable)
				return
			}
			h := pick(m)
			if h == nil {
				http.NotFound(w, r)
				return
			}
			h.ServeHTTP(w, r)
		}
	}
	mux.HandleFunc("/metrics", serve(func(m *metricsSet) http.Handler { return m.all }))
	mux.HandleFunc("/metrics/datapath", serve(func(m *metricsSet) http.Handler { return m.datapathOnly }))
	return mux
}

// Cleanup removes everything an agent leaves on a node: datapath pins and
// attachments, the state dir, the sockets and the gateway link (in the
// calling thread's network namespace). For uninstall and lab down.
func Cleanup(bpfRoot, stateDir, socket string) error {
	var errs []error
	if bpfRoot != "" {
		errs = append(errs, datapath.Cleanup(bpfRoot))
	}
	if stateDir != "" {
		if err := os.RemoveAll(stateDir); err != nil {
			errs = append(errs, fmt.Errorf("remove state dir: %w", err))
		}
	}
	if socket != "" {
		for _, p := range []string{socket, filepath.Join(filepath.Dir(socket), ObserverSocketName)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove socket: %w", err))
			}
		}
	}
	if link, err := netlink.LinkByName(agent.GatewayLink); err == nil {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", agent.GatewayLink, err))
		}
	}
	return errors.Join(errs...)
}

// Command loupe-agent is loupe's per-node agent. Start it in the node's
// network namespace with `nsenter --net=` (never `ip netns exec`, which
// unshares the mount namespace and hides the bpffs pins from loupe-cni).
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/loupe-project/loupe/agent/daemon"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/internal/version"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/observer/hubblemetrics"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "loupe-agent:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var (
		cfg        daemon.Config
		cidrs      []string
		logLevel   string
		kubeconfig string
		tlsCfg     observer.TLSConfig
		insecure   string
		metrics    string
		kernDrops  bool
		connStats  bool
		tcpEvents  bool
		dnsPorts   []uint
		hist       historyFlags
		defRules   bool
	)
	cmd := &cobra.Command{
		Use:   "loupe-agent",
		Short: "loupe's node agent: datapath, pod IPs, endpoints and flows",
		Long: `loupe-agent loads and pins loupe's XDP and TCX datapath, allocates pod
addresses from the node's pod CIDR, serves the endpoint API that loupe-cni
calls, and turns datapath events into flows served on Hubble's Observer API.

Run it in the node's network namespace (nsenter --net=..., not ip netns exec).
On SIGTERM or SIGINT it stops serving but keeps the pinned datapath and its
state, so pods keep their connectivity until it starts again.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			if cfg.PodCIDRs, err = parseCIDRs(cidrs); err != nil {
				return err
			}
			if cfg.Listen, err = observerListen(cfg.Listen, insecure, tlsCfg); err != nil {
				return err
			}
			if insecure != "" {
				log.Warn("the Observer API's TCP listener is plain text with no client authentication: anyone who reaches it reads this node's flows", "insecure-listen", insecure)
			}
			specs, err := parseMetrics(metrics)
			if err != nil {
				return err
			}
			if err := cfg.OTLP.Check(); err != nil {
				return err
			}
			cfg.Log = log
			cfg.NoKernelDrops = !kernDrops
			cfg.NoConnStats = !connStats
			cfg.NoTCPEvents = !tcpEvents
			for _, p := range dnsPorts {
				if p == 0 || p > 65535 {
					return fmt.Errorf("--l7-dns-ports: %d is not a port", p)
				}
				cfg.L7DNSPorts = append(cfg.L7DNSPorts, uint16(p))
			}
			cfg.NoDefaultRules = !defRules
			cfg.NewObserver = observerFactory(tlsCfg, specs, &hist, &cfg.StateDir)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			kube, err := useKubernetes(kubeconfig, cfg.ManifestsDir)
			if err != nil {
				return err
			}
			if kube {
				if err := setupKubernetes(ctx, &cfg, kubeconfig, log); err != nil {
					return err
				}
			}
			return daemon.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", "", "name of this node (required)")
	f.StringSliceVar(&cidrs, "pod-cidr", nil, "the node's pod CIDR: one IPv4 and optionally one IPv6, repeated or comma-separated (required without Kubernetes, which gives the Node's spec.podCIDRs)")
	f.StringVar(&cfg.StateDir, "state-dir", daemon.DefaultStateDir, "directory for IP allocations and endpoints, kept across restarts")
	f.StringVar(&cfg.BPFRoot, "bpf-root", daemon.DefaultBPFRoot, "directory for the datapath's pins; bpffs is mounted there if it is not one")
	f.StringVar(&cfg.Socket, "socket", daemon.DefaultSocket, "unix socket of the endpoint API used by loupe-cni (mode 0600); the Observer API's unix socket "+daemon.ObserverSocketName+" goes next to it")
	f.StringVar(&cfg.Listen, "listen", "", `Observer gRPC address (host:port, e.g. `+daemon.DefaultListen+`) served with mTLS: needs --tls-cert-file, --tls-key-file and --tls-client-ca-file; without it the Observer API is served only on the unix socket next to --socket`)
	f.StringVar(&insecure, "insecure-listen", "", "Observer gRPC address (host:port) served in plain text, without client authentication (the lab's private bridge); excludes --listen")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "", `HTTP address for /metrics, /healthz and /readyz; "" turns it off`)
	f.StringVar(&metrics, "metrics", hubblemetrics.Default, `Hubble metric families served on --metrics-listen, in --hubble-metrics syntax: "flow:sourceContext=namespace;labelsContext=source_namespace drop tcp ..." (commas also separate families); "" turns them off`)
	f.StringVar(&cfg.XDPMode, "xdp-mode", daemon.DefaultXDPMode, "default XDP mode for pods whose netconf sets none: native, generic or off")
	f.StringVar(&cfg.ManifestsDir, "manifests-dir", "", "folder of Kubernetes manifests to read pods, namespaces, services and policies from (the lab's API server)")
	f.StringVar(&kubeconfig, "k8s-kubeconfig", "", "kubeconfig of the API server to read metadata from; in a pod without --manifests-dir the in-cluster config is used")
	f.IntVar(&cfg.FlowBufferSize, "flow-buffer-size", daemon.DefaultFlowBufferSize, "flows kept in memory for the Observer API (rounded to 2^n-1)")
	f.Uint32Var(&cfg.EventsRingBytes, "events-ring-bytes", datapath.DefaultEventsRingBytes, "size of the ring buffer that carries datapath events to the agent, a power of two of at least a page: a bigger ring rides out longer stalls of the agent before events are lost")
	f.Uint32Var(&cfg.DropEventsPerSecond, "drop-events-per-second", 0, "rate limit on drop events for the node; counters stay exact (0 = the datapath's default)")
	f.DurationVar(&cfg.ReportInterval, "report-interval", datapath.DefaultReportInterval, "how often a long-lived connection gets a periodic flow with its packet and byte counters")
	f.Var(onOff{&cfg.NoServiceTranslation}, "service-translation", "translate ClusterIP Services in the datapath before egress policy (on|off); with it on kube-proxy is optional")
	f.Var(onOff{&cfg.NoLocalRedirect}, "local-redirect", "deliver packets between two pods of this node straight into the destination pod from the source pod's program (bpf_redirect_peer), past the host's routing (on|off)")
	f.BoolVar(&connStats, "connection-stats", true, "count bytes per connection and time TCP handshakes in the datapath, for flows, metrics and the map (false: about one atomic add per packet less)")
	f.BoolVar(&kernDrops, "kernel-drops", true, "report packets the kernel drops (the skb:kfree_skb tracepoint) as DROPPED flows of the pods they hit")
	f.StringSliceVar(&cfg.KernelDropDeny, "kernel-drop-deny", daemon.DefaultKernelDropDeny, `kernel drop reasons not reported, as the kernel's BTF names them, with or without SKB_DROP_REASON_ ("none": report all)`)
	f.Uint32Var(&cfg.KernelDropEventsPerSecond, "kernel-drop-events-per-second", 0, "rate limit on kernel-drop events for the node, per-CPU buckets; what it holds back is sent as LostEvents (0 = the datapath's default, 1000)")
	f.BoolVar(&tcpEvents, "tcp-events", true, "report TCP retransmissions and resets (the tcp:tcp_retransmit_skb, tcp_send_reset and tcp_receive_reset tracepoints) as flows of the pods whose sockets they happen on")
	f.Uint32Var(&cfg.TCPEventsPerSecond, "tcp-events-per-second", 0, "rate limit on TCP retransmission and reset events for the node, per-CPU buckets; what it holds back is sent as LostEvents (0 = the datapath's default, 1000)")
	f.StringVar(&cfg.L7, "l7", daemon.DefaultL7, `L7 visibility without a proxy: "dns,http", "dns", "http" or "off"`)
	f.UintSliceVar(&dnsPorts, "l7-dns-ports", []uint{53, 5353}, "UDP and TCP ports whose payloads are DNS (at most 4)")
	f.Uint32Var(&cfg.L7EventsPerSecond, "l7-events-per-second", 0, "rate limit on L7 records for the node, per-CPU buckets; what it holds back is sent as LostEvents (0 = the datapath's default, 20000)")
	f.BoolVar(&cfg.L7KeepQuery, "l7-keep-query", false, "keep URL query strings in HTTP flows (dropped by default: they often carry tokens)")
	f.DurationVar(&cfg.L7DNSTimeout, "l7-dns-timeout", 0, "how long a DNS query waits for its answer before it is reported unanswered (0 = 5s)")
	f.BoolVar(&defRules, "default-rules", true, "load loupe's default runtime-security rules (docs/security-events.md)")
	f.StringVar(&cfg.RulesDir, "rules-dir", "", "folder of more runtime-security rules files in Falco's format (*.yaml, *.yml), reloaded when it changes (a ConfigMap volume on Kubernetes)")
	f.Uint32Var(&cfg.SecurityEventsPerSecond, "security-events-per-second", 0, "rate limit on runtime-security kernel events for the node, per-CPU buckets; what it holds back is sent as LostEvents (0 = the datapath's default, 4000)")
	f.StringVar(&tlsCfg.CertFile, "tls-cert-file", "", "certificate of the Observer API's TCP listener (TLS 1.3); for Hubble Relay, issue it for *.default.hubble-grpc.cilium.io (the node name, dots as hyphens, replaces the *)")
	f.StringVar(&tlsCfg.KeyFile, "tls-key-file", "", "key of --tls-cert-file")
	f.StringVar(&tlsCfg.ClientCAFile, "tls-client-ca-file", "", "CA whose certificates clients of the TCP listener must present (mTLS); the unix socket stays local and plain")
	hist.register(f)
	f.StringVar(&cfg.PprofListen, "pprof-listen", "", `HTTP address serving Go's /debug/pprof profiler, plain text and unauthenticated: loopback or a private network only; "" turns it off`)
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cfg.OTLP.Flags(f)
	_ = cmd.MarkFlagRequired("node-name")
	cmd.AddCommand(newCleanupCommand(), newInstallCNICommand())
	return cmd
}

func newCleanupCommand() *cobra.Command {
	var bpfRoot, stateDir, socket, conflist string
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "remove the datapath's pins and attachments, the state dir, the sockets and the gateway link",
		Long: `cleanup undoes what loupe-agent leaves on a node on purpose: it detaches and
unpins the datapath under --bpf-root, removes --state-dir and the sockets,
and deletes the loupe_host gateway link of the current network namespace.
It also removes the conflist install-cni wrote (--cni-conflist, only if its
plugins are loupe-cni calling this --socket). Pods of the node lose their datapath. Run it with
the agent stopped.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var errs []error
			if conflist != "" {
				errs = append(errs, removeConflist(conflist, socket))
			}
			errs = append(errs, daemon.Cleanup(bpfRoot, stateDir, socket))
			// The emptied --bpf-root folder is not a pin, but it is left on
			// the node's bpffs; remove it (this fails, harmlessly, while it
			// still holds anything or is a mount point).
			if bpfRoot != "" {
				_ = os.Remove(bpfRoot)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVar(&bpfRoot, "bpf-root", daemon.DefaultBPFRoot, "the agent's --bpf-root")
	cmd.Flags().StringVar(&stateDir, "state-dir", daemon.DefaultStateDir, "the agent's --state-dir")
	cmd.Flags().StringVar(&socket, "socket", daemon.DefaultSocket, "the agent's --socket")
	cmd.Flags().StringVar(&conflist, "cni-conflist", filepath.Join(DefaultCNIConfDir, DefaultConflistName), `conflist written by install-cni ("" keeps it)`)
	return cmd
}

func parseCIDRs(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--pod-cidr %q: %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

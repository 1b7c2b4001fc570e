// Command loupe-relay serves one cluster-wide Hubble Observer API, merged
// from every loupe agent (or any Hubble server).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"k8s.io/client-go/kubernetes"

	respb "github.com/loupe-project/loupe/api/resources/v1"
	secpb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/internal/pprofhttp"
	"github.com/loupe-project/loupe/internal/version"
	"github.com/loupe-project/loupe/metadata/k8s"
	"github.com/loupe-project/loupe/otlp"
	"github.com/loupe-project/loupe/relay"
	"github.com/loupe-project/loupe/ui"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "loupe-relay:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		cfg                                          relay.Config
		peers                                        []string
		peerService                                  string
		clientCert, clientKey, serverCert, serverKey string
		serverCAs, clientCAs                         []string
		logLevel                                     string
		uiListen                                     string
		uiOrigins, uiHosts                           []string
		uiCfg                                        ui.Config
		kubeconfig                                   string
		agentPort                                    string
		insecureListen                               string
		otlpCfg                                      otlp.Config
		pprofListen                                  string
	)
	cmd := &cobra.Command{
		Use:           "loupe-relay",
		Short:         "Merge every node's flows into one cluster-wide Hubble Observer API",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			cfg.Version = version.Version
			if v := os.Getenv("LOUPE_LAB"); v != "" && v != "0" {
				cfg.Lab = true
			}
			var err error
			if err := otlpCfg.Check(); err != nil {
				return err
			}
			if clientCert != "" || clientKey != "" || len(serverCAs) > 0 {
				if cfg.ClientTLS, err = relay.ClientTLSConfig(clientCert, clientKey, serverCAs); err != nil {
					return err
				}
			}
			if cfg.Listen, err = relayListen(cfg.Listen, insecureListen, serverCert, serverKey, clientCAs); err != nil {
				return err
			}
			if insecureListen == "" {
				if cfg.ServerTLS, err = relay.ServerTLSConfig(serverCert, serverKey, clientCAs); err != nil {
					return err
				}
			}
			var sources []relay.PeerSource
			if len(peers) > 0 {
				sources = append(sources, relay.StaticPeers(peers))
			}
			if peerService != "" {
				sources = append(sources, &relay.PeerService{Address: peerService, TLS: cfg.ClientTLS, Log: cfg.Log,
					RetryMax: cfg.ReconnectMaxDelay})
			}
			// The Node list: asked for with a kubeconfig, or the default in a pod.
			if kubeconfig != "" || (len(sources) == 0 && k8s.InCluster()) {
				client, err := k8s.NewClient(kubeconfig, "loupe-relay/"+version.Version)
				if err != nil {
					return err
				}
				sources = append(sources, nodePeers(client, agentPort, cfg.ClientTLS != nil, cfg.Log))
				cfg.Log.Info("peers from the Kubernetes Node list", "kubeconfig", kubeconfig, "agent_port", agentPort)
			}
			if len(sources) == 0 {
				return errors.New("no peers: give --peer host:port (repeatable), --peer-service host:port or --k8s-kubeconfig (in a pod, the Node list is the default)")
			}
			// The UI reads the relay in process, never over the network.
			local := bufconn.Listen(1 << 20)
			if uiListen != "" || otlpCfg.Enabled() {
				cfg.Local = local
			}
			srv, err := relay.New(cfg, sources...)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error { return srv.Run(gctx) })
			if pprofListen != "" {
				serve, err := pprofhttp.Listen(gctx, pprofListen, cfg.Log)
				if err != nil {
					return err
				}
				g.Go(serve)
			}
			var conn *grpc.ClientConn
			if cfg.Local != nil {
				conn, err = grpc.NewClient("passthrough:///relay", grpc.WithTransportCredentials(insecure.NewCredentials()),
					grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return local.DialContext(ctx) }))
				if err != nil {
					return fmt.Errorf("dial relay in process: %w", err)
				}
				defer conn.Close()
			}
			if otlpCfg.Enabled() {
				if err := startOTLP(gctx, g, otlpCfg, observerpb.NewObserverClient(conn), cfg.Log); err != nil {
					return err
				}
			}
			if uiListen != "" {
				u, err := ui.New(ui.Config{Listen: uiListen, Flows: ui.RelayFlows(observerpb.NewObserverClient(conn)),
					AllowedOrigins: uiOrigins, AllowedHosts: uiHosts, Log: cfg.Log.With("component", "ui"),
					SecurityEvents: secpb.NewSecurityEventsClient(conn), Resources: respb.NewResourcesClient(conn),
					SecurityWindow: uiCfg.SecurityWindow, ResourcesInterval: uiCfg.ResourcesInterval})
				if err != nil {
					return err
				}
				if !cfg.Lab {
					cfg.Log.Warn("the web UI has no authentication: anyone who reaches --ui-listen sees the cluster's flows; bind it to a private address or put it behind an authenticating proxy", "ui-listen", uiListen)
				}
				g.Go(func() error { return u.Run(gctx) })
			}
			return g.Wait()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "", "address of the relay's gRPC server (Hubble Observer API, e.g. "+relay.DefaultListen+") served with mTLS: needs --tls-server-cert-file, --tls-server-key-file and --tls-server-client-ca-files")
	f.StringVar(&insecureListen, "insecure-listen", "", "address of the relay's gRPC server in plain text, without client authentication (the lab's private bridge); excludes --listen")
	f.StringArrayVar(&peers, "peer", nil, "agent address host:port to relay from (repeatable)")
	f.StringVar(&peerService, "peer-service", "", "agent address host:port whose peer service (peer.Peer Notify) lists every node")
	f.StringVar(&kubeconfig, "k8s-kubeconfig", "", "kubeconfig of an API server whose Node list names the agents (in a pod without other peers, the in-cluster config is used)")
	f.StringVar(&agentPort, "k8s-agent-port", relay.DefaultAgentPort, "agents' Observer port on each Node's InternalIP (when the Node has no loupe.dev/observer-address annotation)")
	f.IntVar(&cfg.SortBufferLen, "sort-buffer-len", relay.DefaultSortBufferLen, "flows held to sort the nodes' streams by time")
	f.DurationVar(&cfg.SortBufferDrainTimeout, "sort-buffer-drain-timeout", relay.DefaultSortBufferDrainTimeout, "longest a flow waits in the sort buffer for older flows from other nodes")
	f.IntVar(&cfg.ClientQueueLen, "client-queue-len", relay.DefaultClientQueueLen, "responses queued per follow client; beyond, flows are dropped and reported as lost events")
	f.DurationVar(&cfg.PeerDialTimeout, "peer-dial-timeout", relay.DefaultPeerDialTimeout, "how long a request waits for a node that is still connecting")
	f.DurationVar(&cfg.PeerIdleTimeout, "peer-idle-timeout", relay.DefaultPeerIdleTimeout, "silence after which a node is dropped from a non-follow request")
	f.DurationVar(&cfg.ReconnectMaxDelay, "reconnect-max-delay", relay.DefaultReconnectMaxDelay, "cap of the exponential backoff between reconnection attempts")
	f.StringVar(&clientCert, "tls-client-cert-file", "", "client certificate presented to the agents (mTLS)")
	f.StringVar(&clientKey, "tls-client-key-file", "", "key of --tls-client-cert-file")
	f.StringSliceVar(&serverCAs, "tls-hubble-server-ca-files", nil, "CA certificates that sign the agents' server certificates")
	f.StringVar(&serverCert, "tls-server-cert-file", "", "certificate of the relay's own listener")
	f.StringVar(&serverKey, "tls-server-key-file", "", "key of --tls-server-cert-file")
	f.StringSliceVar(&clientCAs, "tls-server-client-ca-files", nil, "CA certificates that clients of the relay must present a certificate from")
	f.BoolVar(&cfg.Lab, "lab", false, "running in the lab: plain text without warnings (also LOUPE_LAB=1)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&uiListen, "ui-listen", "", "address of the web UI, plain HTTP without authentication (e.g. "+ui.DefaultListen+"); empty: no UI")
	f.StringSliceVar(&uiHosts, "ui-allowed-hosts", nil, "host names (no port) the web UI answers to besides IP addresses and localhost; other Host headers get 421 (DNS rebinding)")
	f.DurationVar(&uiCfg.SecurityWindow, "ui-security-window", ui.DefaultSecurityWindow, "how long a security event keeps its workload's badge on the map (at most 24h)")
	f.DurationVar(&uiCfg.ResourcesInterval, "ui-resources-interval", ui.DefaultResourcesInterval, "how often the map reads the pods' resources; run-queue and I/O p99 cover one interval")
	f.StringSliceVar(&uiOrigins, "ui-allowed-origins", nil, "browser origins (scheme://host:port) besides the UI's own allowed to open its websocket")
	f.StringVar(&pprofListen, "pprof-listen", "", `HTTP address serving Go's /debug/pprof profiler, plain text and unauthenticated: loopback or a private network only; "" turns it off`)
	otlpCfg.Flags(f)
	return cmd
}

// relayListen checks the listener flags and returns the address to serve
// on: --listen with mTLS, or --insecure-listen in plain text, asked for by
// name. The relay has no other way to be reached, so one is required.
func relayListen(listen, insecure, cert, key string, clientCAs []string) (string, error) {
	anyTLS := cert != "" || key != "" || len(clientCAs) > 0
	switch {
	case listen != "" && insecure != "":
		return "", errors.New("--listen (mTLS) and --insecure-listen (plain text) exclude each other")
	case insecure != "" && anyTLS:
		return "", errors.New("--insecure-listen serves plain text: the --tls-server-* flags go with --listen")
	case insecure != "":
		return insecure, nil
	case listen == "":
		return "", fmt.Errorf("no listener: give --listen ADDR (e.g. %s) with --tls-server-cert-file, --tls-server-key-file and --tls-server-client-ca-files, or --insecure-listen ADDR for plain text on a private network", relay.DefaultListen)
	case cert == "" || key == "" || len(clientCAs) == 0:
		return "", fmt.Errorf("--listen %s serves the relay over TCP with mTLS and needs --tls-server-cert-file, --tls-server-key-file and --tls-server-client-ca-files (loupe certs issues them); for plain text on a private network, use --insecure-listen %s instead", listen, listen)
	}
	return listen, nil
}

// nodePeers finds agents from the Node list. Their addresses are node IPs,
// so with TLS the agents' certificates are checked for Hubble's per-node
// name instead.
func nodePeers(client kubernetes.Interface, port string, tls bool, log *slog.Logger) *k8s.NodePeers {
	np := &k8s.NodePeers{Client: client, Port: port, Log: log}
	if tls {
		np.TLSServerName = contract.TLSServerName
	}
	return np
}

// Command loupe-dns is a small cluster DNS server: it watches the cluster's
// Services (list and watch, nothing else) and answers
// <svc>.<ns>.svc.<cluster domain> with their ClusterIPs over UDP and TCP,
// NXDOMAIN for every other name. It serves as kube-dns where no CoreDNS is
// at hand (install/kubernetes/dns/, docs/cluster-dns.md).
package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/loupe-project/loupe/clusterdns"
	"github.com/loupe-project/loupe/internal/version"
	"github.com/loupe-project/loupe/metadata/k8s"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "loupe-dns:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var listen, domain, kubeconfig string
	cmd := &cobra.Command{
		Use:           "loupe-dns",
		Short:         "a cluster DNS server for Services' ClusterIPs",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			client, err := k8s.NewClient(kubeconfig, "loupe-dns/"+version.Version)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			lister, err := clusterdns.WatchServices(ctx, client)
			if err != nil {
				return err
			}
			zone, err := clusterdns.NewServices(domain, lister)
			if err != nil {
				return err
			}
			// Listening only once the Services are listed: a readiness
			// probe on the port means the answers are complete.
			return clusterdns.ListenAndServe(ctx, zone, listen, func() {
				log.Info("serving", "listen", listen, "cluster_domain", domain)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", ":53", "UDP and TCP address to answer DNS on")
	f.StringVar(&domain, "cluster-domain", "cluster.local", "the cluster domain: names are <svc>.<ns>.svc.<cluster-domain>")
	f.StringVar(&kubeconfig, "k8s-kubeconfig", "", "kubeconfig of the API server (in a pod, the in-cluster config is used)")
	return cmd
}

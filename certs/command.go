package certs

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/loupe-project/loupe/internal/version"
	"github.com/loupe-project/loupe/metadata/k8s"
)

// NewCommand is `loupe certs`.
func NewCommand() *cobra.Command {
	var (
		o          Options
		outDir     string
		kubernetes bool
		kubeconfig string
		namespace  string
		force      bool
	)
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "issue a CA and the agent, relay and client certificates for mTLS",
		Long: `certs issues a new CA and, signed by it, with Hubble's names:
  agent         server certificate of every agent (` + AgentServerName + `)
  relay         server certificate of the relay (` + RelayServerName + ` and --relay-name)
  relay-client  the relay's client certificate towards the agents
  client        a client certificate for loupe observe or the hubble CLI

With --out-dir it writes <name>.crt and <name>.key there (keys mode 0600).
With --kubernetes it creates the Secrets ` + AgentSecret + `, ` + RelaySecret + `,
` + RelayClientSecret + `, ` + ClientSecret + ` and ` + CASecret + ` in --namespace, unless ` + CASecret + `
exists already (then it changes nothing); --force replaces them, and the
agents and the relay load the new files without a restart.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (outDir == "") == !kubernetes {
				return fmt.Errorf("give exactly one of --out-dir DIR and --kubernetes")
			}
			set, err := Generate(o)
			if err != nil {
				return err
			}
			if outDir != "" {
				if err := set.WriteFiles(outDir, force); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote ca, agent, relay, relay-client and client certificates to %s\n", outDir)
				return nil
			}
			client, err := k8s.NewClient(kubeconfig, "loupe-certs/"+version.Version)
			if err != nil {
				return err
			}
			wrote, err := set.WriteSecrets(cmd.Context(), client, namespace, force)
			if err != nil {
				return err
			}
			if !wrote {
				fmt.Fprintf(cmd.OutOrStdout(), "secret %s/%s exists: certificates kept (--force replaces them)\n", namespace, CASecret)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote secrets %s, %s, %s, %s and %s in %s\n", AgentSecret, RelaySecret, RelayClientSecret, ClientSecret, CASecret, namespace)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&outDir, "out-dir", "", "folder to write the certificates and keys to")
	f.BoolVar(&kubernetes, "kubernetes", false, "write them as Secrets through the API server (in a pod, the in-cluster config)")
	f.StringVar(&kubeconfig, "k8s-kubeconfig", "", "kubeconfig for --kubernetes (in a pod, the in-cluster config is used)")
	f.StringVar(&namespace, "namespace", "kube-system", "namespace of the Secrets")
	f.BoolVar(&force, "force", false, "replace existing certificates")
	f.DurationVar(&o.Validity, "validity", DefaultValidity, "lifetime of the leaf certificates (the CA's is three times longer)")
	f.StringSliceVar(&o.RelayNames, "relay-name", []string{"localhost", "127.0.0.1", "loupe-relay", "loupe-relay.kube-system", "loupe-relay.kube-system.svc"}, "extra DNS names and IPs of the relay's server certificate")
	f.StringVar(&o.ClientName, "client-name", DefaultCLIName, "common name of the client certificate")
	return cmd
}

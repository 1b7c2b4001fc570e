// Command loupe is loupe's command-line interface: observe flows, check the
// observer's status, and run the lab.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/loupe-project/loupe/certs"
	"github.com/loupe-project/loupe/cli"
	"github.com/loupe-project/loupe/internal/version"
	"github.com/loupe-project/loupe/lab"
)

func main() {
	root := &cobra.Command{
		Use:   "loupe",
		Short: "loupe: a Kubernetes CNI with an eBPF datapath and a Hubble-compatible flow observer",
		Long: `loupe is a Kubernetes CNI with an eBPF datapath and a flow observer.

observe, status and list talk only the Hubble API, so they work against
loupe-relay, a loupe-agent, or the Hubble Relay of a Cilium cluster.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		cli.NewObserveCommand(),
		cli.NewEventsCommand(),
		cli.NewTopCommand(),
		cli.NewStatusCommand(),
		cli.NewListCommand(),
		cli.NewPolicyCommand(),
		cli.NewVersionCommand(),
		lab.NewCommand(),
		certs.NewCommand(),
	)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

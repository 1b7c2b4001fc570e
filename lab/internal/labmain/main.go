// Command labmain is a minimal `loupe` with only the lab subcommand, so the
// lab's tests do not depend on the full CLI.
package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/loupe-project/loupe/lab"
)

func main() {
	root := &cobra.Command{Use: "loupe", SilenceUsage: true}
	root.AddCommand(lab.NewCommand())
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/loupe-project/loupe/internal/version"
)

// NewListCommand returns `loupe list nodes|namespaces`.
func NewListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the nodes or the namespaces the flow observer knows",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newListNodesCommand(), newListNamespacesCommand())
	return cmd
}

type listOptions struct {
	server serverOptions
	output string
}

func (o *listOptions) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "Output format: table, wide or json")
	o.server.addFlags(cmd.Flags())
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "wide", "json"}, cobra.ShellCompDirectiveNoFileComp
	})
}

func (o *listOptions) checkOutput() error {
	switch o.output {
	case "table", "wide", "json":
		return nil
	}
	return fmt.Errorf("unknown output format %q: want table, wide or json", o.output)
}

// call runs one unary request against the server with the request timeout.
func call[Req, Res any](ctx context.Context, o *serverOptions, fn func(observerpb.ObserverClient, context.Context, Req) (Res, error), req Req) (Res, error) {
	var zero Res
	conn, err := o.dial()
	if err != nil {
		return zero, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, o.requestTimeout)
	defer cancel()
	res, err := fn(observerpb.NewObserverClient(conn), ctx, req)
	if err != nil {
		return zero, o.explain(err, false)
	}
	return res, nil
}

// writeJSON prints v indented; Hubble messages keep their proto field names.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func newListNodesCommand() *cobra.Command {
	o := &listOptions{}
	cmd := &cobra.Command{
		Use:     "nodes",
		Aliases: []string{"node"},
		Short:   "List the nodes and whether the server reaches them",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			res, err := call(cmd.Context(), &o.server,
				func(c observerpb.ObserverClient, ctx context.Context, r *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
					return c.GetNodes(ctx, r)
				}, &observerpb.GetNodesRequest{})
			if err != nil {
				return err
			}
			nodes := res.GetNodes()
			slices.SortFunc(nodes, func(a, b *observerpb.Node) int { return strings.Compare(a.GetName(), b.GetName()) })
			if o.output == "json" {
				return writeJSON(cmd.OutOrStdout(), nodes)
			}
			return writeNodeTable(cmd.OutOrStdout(), nodes, o.output == "wide")
		},
	}
	o.addFlags(cmd)
	return cmd
}

func newListNamespacesCommand() *cobra.Command {
	o := &listOptions{}
	cmd := &cobra.Command{
		Use:     "namespaces",
		Aliases: []string{"namespace", "ns"},
		Short:   "List the namespaces that have recent flows",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			res, err := call(cmd.Context(), &o.server,
				func(c observerpb.ObserverClient, ctx context.Context, r *observerpb.GetNamespacesRequest) (*observerpb.GetNamespacesResponse, error) {
					return c.GetNamespaces(ctx, r)
				}, &observerpb.GetNamespacesRequest{})
			if err != nil {
				return err
			}
			nss := res.GetNamespaces()
			if o.output == "json" {
				return writeJSON(cmd.OutOrStdout(), nss)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 0, 3, ' ', 0)
			fmt.Fprint(tw, "NAMESPACE")
			if o.output == "wide" {
				fmt.Fprint(tw, "\tCLUSTER")
			}
			fmt.Fprintln(tw)
			for _, ns := range nss {
				fmt.Fprint(tw, clean(ns.GetNamespace()))
				if o.output == "wide" {
					fmt.Fprint(tw, "\t"+clean(ns.GetCluster()))
				}
				fmt.Fprintln(tw)
			}
			return tw.Flush()
		},
	}
	o.addFlags(cmd)
	return cmd
}

// NewVersionCommand returns `loupe version`.
func NewVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print loupe's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "loupe %s\n", version.Version)
			return err
		},
	}
}

package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/loupe-project/loupe/api/resources/v1"
	"github.com/loupe-project/loupe/resources"
)

// topOptions are loupe top's flags.
type topOptions struct {
	srv        serverOptions
	interval   time.Duration
	once       bool
	namespaces []string
	pods       []string
	sort       string
	output     string
}

// topSorts are --sort's keys: name ascending, the numbers descending.
var topSorts = map[string]func(a, b resources.Sample) int{
	"name": func(a, b resources.Sample) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod), cmp.Compare(a.Node, b.Node))
	},
	"cpu":    func(a, b resources.Sample) int { return cmp.Compare(b.CPUSeconds, a.CPUSeconds) },
	"runq":   func(a, b resources.Sample) int { return cmp.Compare(b.RunqP99Us, a.RunqP99Us) },
	"io":     func(a, b resources.Sample) int { return cmp.Compare(b.IOP99Us, a.IOP99Us) },
	"ioops":  func(a, b resources.Sample) int { return cmp.Compare(b.IOOps, a.IOOps) },
	"faults": func(a, b resources.Sample) int { return cmp.Compare(b.PageFaults, a.PageFaults) },
	"oom":    func(a, b resources.Sample) int { return cmp.Compare(b.OOMKills, a.OOMKills) },
}

// NewTopCommand is `loupe top`: a live per-pod table of what explains a
// slow pod, from an agent or, through loupe-relay, the cluster.
func NewTopCommand() *cobra.Command {
	o := &topOptions{}
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show per-pod CPU, run-queue latency, block I/O, page faults and OOM kills",
		Long: `top prints, for each pod, what its tasks got from the kernel over the last
interval: on-CPU seconds, run-queue latency (time from wake-up to running,
p50 and p99) and block I/O latency (p99); and since the pod appeared: block
operations and bytes, page faults and OOM kills. The node's own tasks are a
row with no pod (shown without -n and --pod).

  loupe top --once -o json
  loupe top -n shop --sort runq`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	o.srv.addFlags(cmd.Flags())
	f := cmd.Flags()
	f.DurationVar(&o.interval, "interval", 2*time.Second, "Length of one sample")
	f.BoolVar(&o.once, "once", false, "Print one sample of each pod (covering one --interval) and exit")
	f.StringSliceVarP(&o.namespaces, "namespace", "n", nil, "Only pods of this namespace (repeatable)")
	f.StringSliceVar(&o.pods, "pod", nil, "Only this pod: [namespace/]name (repeatable)")
	f.StringVar(&o.sort, "sort", "name", "Sort by: name, cpu, runq (p99), io (p99), ioops, faults or oom")
	f.StringVarP(&o.output, "output", "o", "table", "Output: table or json (one object per pod per sample)")
	return cmd
}

func (o *topOptions) check() error {
	if _, ok := topSorts[o.sort]; !ok {
		return fmt.Errorf("--sort %q: want name, cpu, runq, io, ioops, faults or oom", o.sort)
	}
	if o.output != "table" && o.output != "json" {
		return fmt.Errorf("-o %q: want table or json", o.output)
	}
	if o.interval <= 0 {
		return fmt.Errorf("--interval %v: want a positive duration", o.interval)
	}
	return nil
}

func (o *topOptions) run(cmd *cobra.Command) error {
	if err := o.check(); err != nil {
		return err
	}
	conn, err := o.srv.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := pb.NewResourcesClient(conn)
	req := &pb.GetResourcesRequest{Namespace: o.namespaces, Pod: o.pods}
	ctx := cmd.Context()
	silent := ""
	get := func() ([]*pb.PodResources, error) {
		rctx, cancel := context.WithTimeout(ctx, o.srv.requestTimeout)
		defer cancel()
		r, err := client.GetResources(rctx, req)
		if err != nil {
			return nil, o.srv.explain(err, false)
		}
		// Said when the set of silent nodes changes, not at every sample.
		if un := strings.Join(r.GetUnavailableNodes(), ", "); un != silent {
			if un != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "loupe top: no answer from node(s) %s: their pods are missing\n", un)
			}
			silent = un
		}
		return r.GetPods(), nil
	}
	prev, err := get()
	if err != nil {
		return err
	}
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for first := true; ; first = false {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur, err := get()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		samples := resources.Samples(prev, cur)
		slices.SortStableFunc(samples, topSorts[o.sort])
		if err := o.print(cmd.OutOrStdout(), samples, first); err != nil {
			return err
		}
		if o.once {
			return nil
		}
		prev = cur
	}
}

func (o *topOptions) print(w io.Writer, samples []resources.Sample, first bool) error {
	if o.output == "json" {
		enc := json.NewEncoder(w)
		for _, s := range samples {
			if err := enc.Encode(s); err != nil {
				return err
			}
		}
		return nil
	}
	if !first {
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tPOD\tNODE\tCPU(s)\tRUNQ P50\tRUNQ P99\tIO P99\tIO OPS\tIO BYTES\tFAULTS\tOOM")
	for _, s := range samples {
		pod := s.Pod
		if pod == "" {
			pod = "(node)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%d\t%s\t%d\t%d\n", s.Namespace, pod, s.Node, s.CPUSeconds,
			micros(s.RunqP50Us), micros(s.RunqP99Us), micros(s.IOP99Us), s.IOOps, bytesIEC(s.IOBytes), s.PageFaults, s.OOMKills)
	}
	return tw.Flush()
}

// micros prints a latency in µs with a unit a person reads at a glance.
func micros(us float64) string {
	switch {
	case us == 0:
		return "-"
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.1fms", us/1e3)
	}
	return fmt.Sprintf("%.2fs", us/1e6)
}

func bytesIEC(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

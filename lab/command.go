package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// exit ends the process with a code; a variable so tests can observe it.
var exit = os.Exit

// NewCommand returns `loupe lab`.
func NewCommand() *cobra.Command {
	var dir string
	root := &cobra.Command{
		Use:   "lab",
		Short: "Run a multi-node loupe cluster made of network namespaces on this machine",
		Long: `loupe lab builds a small cluster on one machine: an underlay bridge, one network
namespace per node with its own loupe-agent, and one per pod, created through the
real loupe-cni plugin. Objects come from Kubernetes YAML (Namespace, Pod, Service,
NetworkPolicy). State lives in the lab directory (` + DefaultDir + ` by default,
or --lab-dir / $LOUPE_LAB_DIR).`,
		SilenceUsage: true,
	}
	defDir := os.Getenv("LOUPE_LAB_DIR")
	if defDir == "" {
		defDir = DefaultDir
	}
	root.PersistentFlags().StringVar(&dir, "lab-dir", defDir, "lab state directory ($LOUPE_LAB_DIR)")
	labDir := func() string {
		d, err := filepath.Abs(dir)
		if err != nil {
			return filepath.Clean(dir)
		}
		return d
	}
	load := func() (*Lab, error) { return Load(labDir()) }
	ctx := func(cmd *cobra.Command) context.Context {
		c, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		cobra.OnFinalize(stop)
		return c
	}

	// up
	up := &cobra.Command{
		Use:   "up [--nodes N] [-f FILE ...]",
		Short: "Create the lab (or complete it), start one agent per node, apply manifests",
		Args:  cobra.NoArgs,
	}
	upOpts := UpOptions{Index: -1}
	up.Flags().IntVar(&upOpts.Nodes, "nodes", 0, "number of nodes (default 2 for a new lab)")
	up.Flags().StringArrayVarP(&upOpts.Files, "filename", "f", nil, "manifest file to apply (repeatable, - for stdin)")
	up.Flags().StringVar(&upOpts.Name, "name", os.Getenv("LOUPE_LAB_NAME"), "lab name, prefix of its netns and links, 1-8 of [a-z0-9] ($LOUPE_LAB_NAME)")
	up.Flags().StringVar(&upOpts.XDPMode, "xdp-mode", "", "XDP mode for agents and CNI: native, generic or off (default: the agent's)")
	up.Flags().IntVar(&upOpts.FlowBufferSize, "flow-buffer-size", 0, "flows each agent keeps in memory, 2^n-1 such as 4095 (default: the agent's, 65535); older flows come from the agents' on-disk history")
	up.Flags().StringVar(&upOpts.RulesDir, "rules-dir", "", "folder of runtime-security rules (Falco's format) passed to every agent as --rules-dir")
	up.Flags().IntVar(&upOpts.Index, "subnet-index", -1, "underlay 172.30.<i>.0/24 (default: 0 for the default lab, else the first free)")
	_ = up.Flags().MarkHidden("subnet-index")
	up.RunE = func(cmd *cobra.Command, _ []string) error {
		upOpts.Dir = labDir()
		l, err := Up(ctx(cmd), upOpts, cmd.InOrStdin(), cmd.ErrOrStderr())
		if err != nil {
			return fmt.Errorf("lab up: %w", err)
		}
		recs, _ := l.records()
		fmt.Fprintf(cmd.OutOrStdout(), "lab %s is up: %d nodes, %d pods (state in %s)\n", l.Name, len(l.Nodes), len(recs), l.Dir)
		return nil
	}

	// apply / delete
	manifestCmd := func(use, short string, run func(*Lab, context.Context, []Object, *cobra.Command) error) *cobra.Command {
		var files []string
		c := &cobra.Command{Use: use + " -f FILE", Short: short, Args: cobra.NoArgs}
		c.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file (repeatable, - for stdin)")
		_ = c.MarkFlagRequired("filename")
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			objs, err := readManifestFiles(files, cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("lab %s: %w", use, err)
			}
			l, err := load()
			if err != nil {
				return fmt.Errorf("lab %s: %w", use, err)
			}
			unlock, err := lockFile(filepath.Join(l.Dir, "lock"))
			if err != nil {
				return err
			}
			defer unlock()
			if err := run(l, ctx(cmd), objs, cmd); err != nil {
				return fmt.Errorf("lab %s: %w", use, err)
			}
			return nil
		}
		return c
	}
	apply := manifestCmd("apply", "Create or update objects; returns once every agent has applied them",
		func(l *Lab, ctx context.Context, objs []Object, cmd *cobra.Command) error {
			if err := l.Apply(ctx, objs, cmd.ErrOrStderr()); err != nil {
				return err
			}
			for _, o := range objs {
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%s applied\n", strings.ToLower(o.Kind), o.ID())
			}
			return nil
		})
	del := manifestCmd("delete", "Delete objects (a Namespace takes its contents); returns once every agent has applied it",
		func(l *Lab, ctx context.Context, objs []Object, cmd *cobra.Command) error {
			if err := l.Delete(ctx, objs, cmd.ErrOrStderr()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d objects deleted\n", len(objs))
			return nil
		})

	// status
	var statusOut string
	status := &cobra.Command{Use: "status [-o json]", Short: "Show nodes, pods and addresses", Args: cobra.NoArgs}
	status.Flags().StringVarP(&statusOut, "output", "o", "", "output format: json")
	status.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := load()
		if err != nil {
			return fmt.Errorf("lab status: %w", err)
		}
		st, err := l.Status(cmd.Context())
		if err != nil {
			return fmt.Errorf("lab status: %w", err)
		}
		switch statusOut {
		case "json":
			b, _ := json.Marshal(st)
			fmt.Fprintln(cmd.OutOrStdout(), string(b))
		case "":
			printStatus(cmd.OutOrStdout(), l, st)
		default:
			return fmt.Errorf("lab status: unknown output format %q", statusOut)
		}
		return nil
	}

	// exec
	execCmd := &cobra.Command{
		Use:   "exec NS/POD -- CMD [ARG...]",
		Short: "Run a command in a pod's network namespace (host filesystem)",
		Long:  "Run a command in a pod's network namespace (host filesystem). loupe lab exec exits with the\ncommand's exit code, or 128+N when signal N ended it (137 for SIGKILL), as a shell does.",
		Args:  cobra.MinimumNArgs(2),
	}
	execCmd.Flags().SetInterspersed(false)
	execCmd.RunE = func(cmd *cobra.Command, args []string) error {
		l, err := load()
		if err != nil {
			return fmt.Errorf("lab exec: %w", err)
		}
		rec, err := l.findPod(args[0])
		if err != nil {
			return fmt.Errorf("lab exec: %w", err)
		}
		argv := args[1:]
		if argv[0] == "--" {
			argv = argv[1:]
		}
		if len(argv) == 0 {
			return errors.New("lab exec: no command given")
		}
		c := exec.Command("nsenter", append([]string{"--net=" + rec.netnsPath(), "--"}, argv...)...)
		c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
		err = c.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			exit(exitStatus(ee.ProcessState))
			return nil
		}
		if err != nil {
			return fmt.Errorf("lab exec: %w", err)
		}
		return nil
	}

	// probe
	var pFrom, pTo, pProto, pOut string
	var pPort, pParallel int
	var pAll bool
	var pTimeout time.Duration
	probeCmd := &cobra.Command{
		Use:   "probe (--from NS/POD --to NS/POD --port P --protocol TCP|UDP | --all [-o json])",
		Short: "Check connectivity between pods: exit 0 if it connects, 1 if not",
		Args:  cobra.NoArgs,
	}
	probeCmd.Flags().StringVar(&pFrom, "from", "", "source pod NS/POD")
	probeCmd.Flags().StringVar(&pTo, "to", "", "destination pod NS/POD, an IP, or a Service svc/NS/NAME (then --port is the Service port, reached through its ClusterIP)")
	probeCmd.Flags().IntVar(&pPort, "port", 0, "destination port")
	probeCmd.Flags().StringVar(&pProto, "protocol", "TCP", "TCP or UDP")
	probeCmd.Flags().DurationVar(&pTimeout, "timeout", time.Second, "give up after this long")
	probeCmd.Flags().BoolVar(&pAll, "all", false, "probe every ordered pod pair on every declared port")
	probeCmd.Flags().StringVarP(&pOut, "output", "o", "", "with --all: json, or a truth table")
	probeCmd.Flags().IntVar(&pParallel, "parallel", 64, "with --all: probes at once")
	probeCmd.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := load()
		if err != nil {
			return fmt.Errorf("lab probe: %w", err)
		}
		if pAll {
			if pParallel < 1 {
				pParallel = 1
			}
			res, err := l.ProbeAll(ctx(cmd), pTimeout, pParallel)
			if err != nil {
				return fmt.Errorf("lab probe: %w", err)
			}
			switch pOut {
			case "json":
				if res == nil {
					res = []ProbeResult{}
				}
				b, _ := json.Marshal(res)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
			case "":
				printTruthTable(cmd.OutOrStdout(), res)
			default:
				return fmt.Errorf("lab probe: unknown output format %q", pOut)
			}
			return nil
		}
		if pFrom == "" || pTo == "" || pPort == 0 {
			return errors.New("lab probe: --from, --to and --port are required (or --all)")
		}
		ok, err := l.Probe(ctx(cmd), pFrom, pTo, pPort, pProto, pTimeout)
		if err != nil {
			return fmt.Errorf("lab probe: %w", err)
		}
		if !ok {
			fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s %d/%s: no connection\n", pFrom, pTo, pPort, strings.ToUpper(pProto))
			exit(1)
			return nil
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s %d/%s: connected\n", pFrom, pTo, pPort, strings.ToUpper(pProto))
		return nil
	}

	// down
	var downName string
	down := &cobra.Command{Use: "down", Short: "Remove everything the lab made (also after a crashed up)", Args: cobra.NoArgs}
	down.Flags().StringVar(&downName, "name", os.Getenv("LOUPE_LAB_NAME"), "lab name, when the lab dir holds no state")
	down.RunE = func(cmd *cobra.Command, _ []string) error {
		warn := func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), "warning:", s) }
		if err := Down(cmd.Context(), labDir(), downName, warn); err != nil {
			return fmt.Errorf("lab down: %w", err)
		}
		fmt.Fprintln(cmd.OutOrStdout(), "lab removed")
		return nil
	}

	// traffic
	var tRate float64
	var tDuration time.Duration
	traffic := &cobra.Command{Use: "traffic [--rate R] [--duration D]", Short: "Generate HTTP, DNS-like and failing traffic between the pods", Args: cobra.NoArgs}
	traffic.Flags().Float64Var(&tRate, "rate", 10, "requests per second")
	traffic.Flags().DurationVar(&tDuration, "duration", 0, "stop after this long (0: until interrupted)")
	traffic.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := load()
		if err != nil {
			return fmt.Errorf("lab traffic: %w", err)
		}
		if err := l.Traffic(ctx(cmd), tRate, tDuration, cmd.OutOrStdout()); err != nil {
			return fmt.Errorf("lab traffic: %w", err)
		}
		return nil
	}

	// serve (hidden): the pod server, started by the lab inside a pod netns.
	var sPod, sPorts, sID string
	var sReady int
	serveCmd := &cobra.Command{Use: "serve", Hidden: true, Args: cobra.NoArgs}
	serveCmd.Flags().StringVar(&sPod, "pod", "", "NS/POD")
	serveCmd.Flags().StringVar(&sPorts, "ports", "", "ports to serve: 80/TCP,81/UDP,9000/TCP/http-api (port/protocol/name; a TCP port numbered 80 or 8080 or named http* serves HTTP)")
	serveCmd.Flags().StringVar(&sID, "id", "", "the pod's netns name (identifies the process)")
	serveCmd.Flags().IntVar(&sReady, "ready-fd", 0, "write ok to this fd once listening")
	serveCmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return runServe(sPod, sPorts, labDir(), sReady)
	}

	root.AddCommand(up, apply, del, status, execCmd, probeCmd, down, traffic, serveCmd, newFaultCommand(load, ctx))
	return root
}

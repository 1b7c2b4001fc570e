package lab

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// newFaultCommand is `loupe lab fault`: one subcommand per fault.
func newFaultCommand(load func() (*Lab, error), ctx func(*cobra.Command) context.Context) *cobra.Command {
	fault := &cobra.Command{
		Use:   "fault",
		Short: "Cause a kind of packet loss on purpose: udp-closed, tcp-closed, netfilter-drop, loss",
		Long: `fault makes the kernel drop packets of a pod in a known way, to watch it
with loupe observe --kernel-drops:

  udp-closed      UDP to a port nothing listens on: NO_SOCKET at the receiver
  tcp-closed      TCP connect to such a port: NO_SOCKET, answered by a reset
  netfilter-drop  an iptables DROP rule in the pod: NETFILTER_DROP
  loss            the same rule for a random share of the pod's incoming
                  packets (iptables statistic; no netem needed): TCP
                  retransmits, NETFILTER_DROP

Rules live in the pod's network namespace: --remove takes one away, and they
go with the pod or the lab.`,
		Args: cobra.NoArgs,
	}

	var from, to string
	var port, count int
	udp := &cobra.Command{Use: "udp-closed --from NS/POD --to NS/POD [--port P] [--count N]", Short: "Send UDP to a closed port of a pod", Args: cobra.NoArgs}
	udp.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := load()
		if err != nil {
			return fmt.Errorf("lab fault udp-closed: %w", err)
		}
		sport, err := l.FaultUDPClosed(ctx(cmd), from, to, port, count)
		if err != nil {
			return fmt.Errorf("lab fault udp-closed: %w", err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "sent %d UDP datagrams %s:%d -> %s:%d\n", max(count, 1), from, sport, to, port)
		return nil
	}
	tcp := &cobra.Command{Use: "tcp-closed --from NS/POD --to NS/POD [--port P]", Short: "Connect over TCP to a closed port of a pod", Args: cobra.NoArgs}
	tcp.RunE = func(cmd *cobra.Command, _ []string) error {
		l, err := load()
		if err != nil {
			return fmt.Errorf("lab fault tcp-closed: %w", err)
		}
		sport, refused, err := l.FaultTCPClosed(ctx(cmd), from, to, port)
		if err != nil {
			return fmt.Errorf("lab fault tcp-closed: %w", err)
		}
		if !refused {
			return fmt.Errorf("lab fault tcp-closed: %s:%d accepted the connection: pick a closed --port", to, port)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "TCP %s:%d -> %s:%d refused (reset)\n", from, sport, to, port)
		return nil
	}
	for _, c := range []*cobra.Command{udp, tcp} {
		c.Flags().StringVar(&from, "from", "", "sending pod NS/POD")
		c.Flags().StringVar(&to, "to", "", "receiving pod NS/POD")
		c.Flags().IntVar(&port, "port", 9, "a port the receiving pod does not serve")
		_ = c.MarkFlagRequired("from")
		_ = c.MarkFlagRequired("to")
	}
	udp.Flags().IntVar(&count, "count", 1, "datagrams to send")

	var rule FaultRule
	var remove bool
	rules := func(name, use, short string, loss bool) *cobra.Command {
		c := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs}
		c.Flags().StringVar(&rule.Pod, "pod", "", "the pod NS/POD whose incoming packets are dropped")
		c.Flags().StringVar(&rule.Proto, "protocol", "", "only tcp or udp (needed with --port)")
		c.Flags().IntVar(&rule.Port, "port", 0, "only packets to this port")
		c.Flags().BoolVar(&remove, "remove", false, "remove the rule instead")
		if loss {
			c.Flags().Float64Var(&rule.Percent, "percent", 0, "share of the packets dropped at random, in percent (required)")
		}
		_ = c.MarkFlagRequired("pod")
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			if loss && (rule.Percent <= 0 || rule.Percent >= 100) {
				return errors.New("lab fault loss: --percent must be between 0 and 100, exclusive")
			}
			l, err := load()
			if err != nil {
				return fmt.Errorf("lab fault %s: %w", name, err)
			}
			if remove {
				if err := l.RemoveFaultRule(ctx(cmd), rule); err != nil {
					return fmt.Errorf("lab fault %s: %w", name, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed the %s rule of %s\n", name, rule.Pod)
				return nil
			}
			if err := l.AddFaultRule(ctx(cmd), rule); err != nil {
				return fmt.Errorf("lab fault %s: %w", name, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s now drops incoming packets (--remove to undo)\n", name, rule.Pod)
			return nil
		}
		return c
	}
	fault.AddCommand(udp, tcp,
		rules("netfilter-drop", "netfilter-drop --pod NS/POD [--protocol P --port N] [--remove]", "Drop a pod's incoming packets with an iptables rule", false),
		rules("loss", "loss --pod NS/POD --percent P [--protocol P --port N] [--remove]", "Drop a random share of a pod's incoming packets", true))
	return fault
}
